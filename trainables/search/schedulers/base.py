"""What every scheduler kind is: a policy that decides at rungs, free of Ray, and the one Tune
scheduler that asks it.

A policy sees each trial's results as (time, value) pairs in the scheduler's count
(``time_attr``: epochs or training seconds) and answers CONTINUE, STOP or PAUSE. A paused
trial keeps its checkpoint and frees its slot; the searcher asks for promotion ``candidates`` before it
samples a new configuration, and issues a promoted trial again under its own id (as a
resumed search does), so the trial continues from its latest checkpoint. The live search
(Tune, through ``PolicyScheduler``) and bench/replay.py (a simulated clock) drive the same
policy objects, so what the replay measures is what the service does.

A policy is rebuilt from the record before the first trial (Tune restores no scheduler
state; ray issue 30838): ``restore`` feeds it every recorded result in issue order.
"""

from __future__ import annotations

from typing import Any, Protocol

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from trainables.objective import Objective
from trainables.results.record import STOPPED, TIME_ATTRS, SearchRecord, TrialRecord

CONTINUE, STOP, PAUSE = TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.PAUSE


class RungPolicy(Protocol):
    """The decisions of one scheduler kind (see the module docstring)."""

    time_key: str  # the key of a recorded epoch that counts the scheduler's time
    max_t: float
    metric: str  # the primary objective's metric

    def value_of(self, metrics: dict[str, Any]) -> Any:
        """What the policy ranks a result (a reported epoch's metrics) by: the primary
        objective's value, or (``pareto``) the tuple of every objective's."""

    def rungs(self) -> list[float]:
        """Where trials are compared, in the scheduler's count, ascending (the report draws them)."""

    def on_result(self, trial_id: str, t: float, value: Any) -> str:
        """A trial's result at time ``t`` (``value_of`` its metrics): CONTINUE, STOP or PAUSE."""

    def on_end(self, trial_id: str) -> None:
        """The trial ended on its own terms (budget, patience, failure): it is never promoted."""

    def candidates(self, new_trials_left: bool) -> list[str]:
        """Paused trials that may continue now, the first to take first. With new trials left
        the rule is strict; without, the best paused trials go on rather than idle slots."""

    def promote(self, trial_id: str) -> None:
        """The searcher issued ``trial_id`` again: it is no longer paused."""

    def rung_of(self, trial_id: str) -> float | None:
        """The rung at which the trial was stopped or paused, or None."""

    def paused(self) -> dict[str, float]:
        """Paused trial id -> its rung."""

    def trusted(self, k: int) -> bool:
        """Whether rung k's ranking is trusted (what the sampler may learn from)."""

    def know(self, key: str, results: list[tuple[float, Any]], ended: bool) -> None:
        """An earlier search's trial of the same problem (warm_start.EarlierTrial), told before
        ``restore``: its ``results`` count at the rungs as any trial's; it is never paused, and
        ``ended`` says it ended on its own terms."""

    def restore(self, record: SearchRecord, objective: Objective) -> "RungPolicy":
        """Rebuilt from the record before the first trial; returns itself."""


class NoPromotions:
    """Mixin for the stopping kinds: nothing is ever paused, and the record's results replayed
    rebuild the state."""

    metric: str

    def value_of(self, metrics: dict[str, Any]) -> Any:
        return metrics.get(self.metric)

    def restore(self, record: SearchRecord, objective: Objective) -> "NoPromotions":
        return replay_results(self, record, objective)

    def know(self, key: str, results: list[tuple[float, Any]], ended: bool) -> None:
        for t, value in results:  # as replay_results feeds a recorded trial
            self.on_result(key, t, value)
        if ended:
            self.on_end(key)

    def candidates(self, new_trials_left: bool) -> list[str]:
        return []

    def promote(self, trial_id: str) -> None:
        raise ValueError(f"{trial_id}: a stopping scheduler pauses no trial")

    def paused(self) -> dict[str, float]:
        return {}

    def trusted(self, k: int) -> bool:
        return True


def replay_results(policy: RungPolicy, record: SearchRecord, objective: Objective) -> RungPolicy:
    """Feed the record's results to a fresh stopping policy, trial by trial in issue order, as
    they were fed live (a stopping kind's decisions depend only on the values at each rung)."""
    for trial in sorted(record.trials.values(), key=lambda t: t.number):
        for t, value in recorded_results(trial, policy.time_key, objective.metric):
            policy.on_result(trial.trial_id, t, value)
        if trial.ended and trial.status != STOPPED:
            policy.on_end(trial.trial_id)
    return policy


def recorded_results(trial: TrialRecord, time_key: str, metric: str) -> list[tuple[float, float | None]]:
    """A trial's (time, value) results in the scheduler's count, in order."""
    return [(m[time_key], trial.value_at(epoch, metric)) for epoch, m in sorted(trial.epochs.items())
            if time_key in m]


def time_key_of(scheduler_spec: Any) -> str:
    return TIME_ATTRS[scheduler_spec.time_attr]


def rung_at(t: float, rungs: list[float] | tuple[float, ...]) -> int | None:
    """The index of the rung a result at ``t`` stands for: the highest rung at or below ``t``
    (None below the first). A result that skipped a rung (a time rung passed within one long
    epoch) is not entered there: at that rung it would be compared, with more training,
    against trials measured at the rung, which is not equal training."""
    below = [k for k, rung in enumerate(rungs) if t >= rung]
    return below[-1] if below else None


def clean_rung(t: float) -> float | int:
    """A rung as it is written (60, not 60.0)."""
    return int(t) if float(t).is_integer() else t


class PolicyScheduler(FIFOScheduler):
    """Tune's scheduler for every kind: each reported epoch goes to the policy, whose answer
    Tune carries out. A PAUSE is a STOP to Tune (the searcher issues the trial again when the
    policy promotes it), so Tune never holds a paused trial, a Tune checkpoint or its slot."""

    def __init__(self, policy: RungPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.pauses: dict[str, float] = {}  # trial id -> rung, for the record keeper

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its config into tuner.pkl, which this service never restores from

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        key = self.policy.time_key
        if key not in result:
            return CONTINUE
        decision = self.policy.on_result(trial.trial_id, result[key], self.policy.value_of(result))
        if result.get("finished") or result.get("failed"):  # the loop ends it; its value still enters the rungs
            return CONTINUE
        if decision == PAUSE:
            self.pauses[trial.trial_id] = self.policy.rung_of(trial.trial_id)
            return STOP
        return decision
