"""Scheduler kinds: one module each, a registry like models' and data kinds'.

A kind is a ``RungPolicy`` (base.py): it decides at rungs, is rebuilt from the record, says
at which rung a trial stopped or paused, and names the rungs the report draws. The spec's
``scheduler:`` section (trainables/spec/schedulers.py) picks the kind by its ``type``; adding
a kind is a section class there and a policy module here, registered below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from trainables.results.record import SearchRecord
from trainables.search.schedulers.asha import RayAshaPolicy
from trainables.search.schedulers.base import CONTINUE, PAUSE, STOP, PolicyScheduler, RungPolicy
from trainables.search.schedulers.hyperband import HyperbandPolicy
from trainables.search.schedulers.none import NoPolicy
from trainables.search.schedulers.pareto import ParetoPolicy
from trainables.search.schedulers.promotion import PromotionPolicy
from trainables.spec.schedulers import PARETO
from trainables.spec.schema import SearchSpec

if TYPE_CHECKING:  # warm_start.py imports this package
    from trainables.search.warm_start import EarlierTrial

POLICIES: dict[str, type] = {
    "promotion": PromotionPolicy,
    PARETO: ParetoPolicy,
    "asha": RayAshaPolicy,
    "hyperband": HyperbandPolicy,
    "none": NoPolicy,
}

__all__ = ["CONTINUE", "PAUSE", "STOP", "POLICIES", "PolicyScheduler", "RungPolicy", "build_scheduler",
           "new_policy", "scheduler_rungs"]


def new_policy(spec: SearchSpec) -> RungPolicy:
    """The spec's scheduler kind, with no history. ``pareto`` ranks by every objective; the
    other kinds by the primary one (with several objectives too)."""
    kind = spec.scheduler.type
    return POLICIES[kind](spec.scheduler, spec.objectives if kind == PARETO else spec.objective, spec.max_t)


def build_scheduler(spec: SearchSpec, record: SearchRecord, earlier: Iterable["EarlierTrial"] = ()) -> PolicyScheduler:
    """Tune's scheduler for the spec, its policy rebuilt from the record, after the trials of
    earlier searches of the same problem that a warm start names (warm_start.py)."""
    policy = new_policy(spec)
    for trial in earlier:
        policy.know(trial.key, trial.results, trial.ended)
    return PolicyScheduler(policy.restore(record, spec.objective))


def scheduler_rungs(spec: SearchSpec) -> list[float]:
    """The rungs where the spec's scheduler compares trials (the report's dotted lines)."""
    return new_policy(spec).rungs()
