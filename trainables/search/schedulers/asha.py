"""``asha``: Ray's stopping-type ASHA (one bracket). Its first arrival at a rung always goes
on (``_Bracket.cutoff`` is None for an empty rung), so with few slots the first trials run to
``max_t``; ``promotion`` pauses instead. Kept for comparison and for users who know it."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from trainables.objective import Objective, is_number
from trainables.search.schedulers.base import CONTINUE, STOP, NoPromotions, clean_rung, time_key_of


class RayAshaPolicy(NoPromotions):
    """Ray's ``AsyncHyperBandScheduler`` as a policy: its brackets decide, this class only
    notes where each stop happened. The one place that reads Ray's private bracket state."""

    brackets = 1

    def __init__(self, scheduler_spec: Any, objective: Objective, max_t: float) -> None:
        self.time_key = time_key_of(scheduler_spec)
        self.max_t = max_t
        self.metric = objective.metric
        self._ray = ASHAScheduler(time_attr="t", metric="value", mode=objective.mode, max_t=max_t,
                                  grace_period=scheduler_spec.first_rung(max_t),
                                  reduction_factor=scheduler_spec.reduction_factor, brackets=self.brackets)
        self._sign = self._ray._metric_op
        self._bracket_of: dict[str, Any] = {}
        self._stops: dict[str, float] = {}

    def rungs(self) -> list[float]:
        # Ray lists max_t as a milestone too, but a trial there has its budget: it is no cut.
        return sorted({m for bracket in self._ray._brackets for m, _ in bracket._rungs if m < self.max_t})

    def on_result(self, trial_id: str, t: float, value: float | None) -> str:
        if not is_number(value):
            return CONTINUE
        if t >= self.max_t:
            return STOP
        bracket = self._bracket(trial_id)
        decision = bracket.on_result(_StandIn(trial_id), t, self._sign * value)
        if decision == STOP:
            self._stops[trial_id] = clean_rung(max((m for m, _ in bracket._rungs if m <= t), default=t))
        return decision

    def on_end(self, trial_id: str) -> None:
        self._stops.pop(trial_id, None)

    def rung_of(self, trial_id: str) -> float | None:
        return self._stops.get(trial_id)

    def _bracket(self, trial_id: str) -> Any:
        """Bracket b for the n-th trial seen: deterministic (Ray draws it at random), so a
        continued search puts every trial in the bracket it had; weighted as Ray weights them."""
        if trial_id not in self._bracket_of:
            brackets = self._ray._brackets
            sizes = [len(b._rungs) for b in brackets]
            weights = [math.e ** (size - max(sizes)) for size in sizes]
            position = (len(self._bracket_of) * 0.6180339887) % 1.0 * sum(weights)  # golden-ratio sequence
            index = 0
            while index < len(weights) - 1 and position >= weights[index]:
                position -= weights[index]
                index += 1
            self._bracket_of[trial_id] = brackets[index]
        return self._bracket_of[trial_id]


class _StandIn:
    """What a bracket needs of a trial: its id."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
