"""``promotion``: promotion-type ASHA (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020; Syne Tune's former ``PromotionRungSystem``).

A trial that reaches a rung pauses there: its checkpoint is kept and its slot goes to other
work. Whenever a slot is free, the searcher asks ``next_promotion`` first: from the highest
rung down, a paused trial continues when it lies in the top ``floor(n / eta)`` of the
rung's n entries (so never from a rung with fewer than eta entries, and never for arriving
first). Only when nothing is promotable does a new configuration take the slot. Once the
search has no new configurations left, the top ``ceil(n / eta)`` qualify, so the budget's
end goes to the best paused trials instead of idling.

A rung is trusted only while its ranking predicts the later one. Once ``trust_pairs``
trials have values both there and at a later rung (or their end), the Spearman correlation
of the two rankings is checked; below ``trust_correlation`` trials stop pausing at that rung
and those paused there are promoted (best first), which moves the first rung up. Low
fidelities that reorder configurations (late-peaking curves) thus cost one check, not the
search.
"""

from __future__ import annotations

import math
from typing import Any

from scipy.stats import spearmanr

from trainables.objective import Objective, is_number
from trainables.results.record import PAUSED, SearchRecord
from trainables.search.schedulers.base import (
    CONTINUE,
    PAUSE,
    STOP,
    clean_rung,
    rung_at,
    time_key_of,
)


def promotion_rungs(grace_period: float, reduction_factor: float, max_t: float) -> list[float]:
    """grace_period * eta**k below max_t (max_t itself is the end, not a rung)."""
    rungs, t = [], float(grace_period)
    while t < max_t:
        rungs.append(clean_rung(t))
        t *= reduction_factor
    return rungs


class PromotionPolicy:
    def __init__(self, scheduler_spec: Any, objective: Objective, max_t: float) -> None:
        self.time_key = time_key_of(scheduler_spec)
        self.max_t = max_t
        self.eta = scheduler_spec.reduction_factor
        self.trust_correlation = scheduler_spec.trust_correlation
        self.trust_pairs = scheduler_spec.trust_pairs
        self.metric = objective.metric
        self._sign = objective.sign  # sign * value: smaller is better
        self._rungs = promotion_rungs(scheduler_spec.first_rung(max_t), self.eta, max_t)
        self._entries: list[dict[str, float]] = [{} for _ in self._rungs]  # rung -> trial -> signed value
        self._finals: dict[str, float] = {}  # trials that reached max_t or ended: their last signed value
        self._promoted: list[set[str]] = [set() for _ in self._rungs]
        self._paused: dict[str, int] = {}  # trial -> index of the rung it waits at
        self._last_pause: dict[str, int] = {}
        self._ended: set[str] = set()

    # ----- the policy -----
    def rungs(self) -> list[float]:
        return list(self._rungs)

    def value_of(self, metrics: dict[str, Any]) -> Any:
        return metrics.get(self.metric)

    def on_result(self, trial_id: str, t: float, value: Any) -> str:
        signed = self._signed(value)
        if signed is None:
            return CONTINUE
        entered = self._enter(trial_id, t, signed)
        if t >= self.max_t:
            self._finals[trial_id] = signed
            return STOP
        if entered is None or trial_id in self._promoted[entered]:
            return CONTINUE
        if not self.trusted(entered):
            self._promoted[entered].add(trial_id)
            return CONTINUE
        self._paused[trial_id] = self._last_pause[trial_id] = entered
        # A worker that frees a slot takes the promotion Li et al.'s get_job would make now:
        # when that is this very trial, it goes on without a restart.
        if self.candidates(new_trials_left=True)[:1] == [trial_id]:
            self.promote(trial_id)
            return CONTINUE
        return PAUSE

    def on_end(self, trial_id: str) -> None:
        self._ended.add(trial_id)
        self._paused.pop(trial_id, None)
        values = [entries[trial_id] for entries in self._entries if trial_id in entries]
        if values and trial_id not in self._finals:
            self._finals[trial_id] = values[-1]

    def candidates(self, new_trials_left: bool) -> list[str]:
        """Paused trials that may continue now, the one to take first first: from the highest
        rung down, each rung's promotable trials best first."""
        found = []
        for k in reversed(range(len(self._rungs))):
            if k not in self._paused.values():
                continue
            ranking = self._order(self._entries[k])
            if self.trusted(k):
                quota = len(ranking) / self.eta
                ranking = ranking[:math.floor(quota + 1e-9) if new_trials_left else math.ceil(quota - 1e-9)]
            found += [t for t in ranking if self._paused.get(t) == k]
        return found

    def promote(self, trial_id: str) -> None:
        k = self._paused.pop(trial_id)
        self._promoted[k].add(trial_id)

    def rung_of(self, trial_id: str) -> float | None:
        index = self._last_pause.get(trial_id)
        return None if index is None else self._rungs[index]

    def paused(self) -> dict[str, float]:
        return {trial_id: self._rungs[k] for trial_id, k in self._paused.items()}

    def trusted(self, k: int) -> bool:
        """Whether rung k's ranking agrees with a later one well enough to pause on."""
        correlation = self.rung_correlation(k)
        return correlation is None or correlation >= self.trust_correlation

    def rung_correlation(self, k: int) -> float | None:
        """Spearman correlation of rung k's values with the highest later rung (or the trials'
        ends) that at least ``trust_pairs`` of its trials reached; None before that."""
        later = [*self._entries[k + 1:], self._finals]
        for entries in reversed(later):
            common = [t for t in self._entries[k] if t in entries]
            if len(common) >= self.trust_pairs:
                correlation = spearmanr([self._quality(self._entries[k][t]) for t in common],
                                        [self._quality(entries[t]) for t in common])[0]
                return None if math.isnan(correlation) else float(correlation)
        return None

    def know(self, key: str, results: list[tuple[float, Any]], ended: bool) -> None:
        """An earlier search's trial of the same problem (a warm start): its values enter the
        rungs, and the trust check, as entries; it is never paused or promoted."""
        for t, value in results:
            signed = self._signed(value)
            if signed is not None:
                self._enter(key, t, signed)
                if t >= self.max_t:
                    self._finals[key] = signed
        if ended:
            self.on_end(key)

    # ----- restore -----
    def restore(self, record: SearchRecord, objective: Objective) -> "PromotionPolicy":
        """Rungs, promotions and pauses as the record has them (decisions are not re-made: the
        record's order of trials is not the order results arrived in)."""
        for trial in sorted(record.trials.values(), key=lambda t: t.number):
            results = [(m[self.time_key], self.value_of(m)) for _, m in sorted(trial.epochs.items())
                       if self.time_key in m]
            for t, value in results:
                signed = self._signed(value)
                if signed is not None:
                    entered = self._enter(trial.trial_id, t, signed)
                    if t >= self.max_t:
                        self._finals[trial.trial_id] = signed
                    if entered is not None:
                        self._promoted[entered].add(trial.trial_id)  # undone below for a pause
            if trial.rung is not None and trial.rung in self._rungs:
                k = self._rungs.index(trial.rung)
                self._last_pause[trial.trial_id] = k
                if trial.status == PAUSED or trial.ended:  # paused there, or still there when the search ended
                    self._promoted[k].discard(trial.trial_id)
                if trial.status == PAUSED:
                    self._paused[trial.trial_id] = k
            if trial.ended:
                self.on_end(trial.trial_id)
        return self

    # ----- what a kind that ranks otherwise changes (pareto.py) -----
    def _signed(self, value: Any) -> Any:
        """A result's value as the rungs hold it, smaller better; None when it does not rank."""
        return self._sign * value if is_number(value) else None

    def _order(self, entries: dict[str, Any]) -> list[str]:
        """A rung's trials, best first."""
        return sorted(entries, key=entries.get)

    def _quality(self, signed: Any) -> float:
        """What the trust check correlates."""
        return signed

    # ----- inside -----
    def _enter(self, trial_id: str, t: float, signed: Any) -> int | None:
        """Enter the rung ``t`` stands for (``rung_at``) if the trial had not; its index."""
        k = rung_at(t, self._rungs)
        if k is None or trial_id in self._entries[k]:
            return None
        self._entries[k][trial_id] = signed
        return k
