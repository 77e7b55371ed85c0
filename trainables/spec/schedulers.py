"""The ``scheduler:`` section: one typed section per kind, told apart by ``type``.

What each kind does lives in ``trainables/search/schedulers/<kind>.py``; this module only
says what a spec may write (no Ray here). Every kind counts training the same way
(``time_attr``): epochs, or the seconds a trial has trained over all its attempts.

- ``promotion``: promotion-type ASHA (Li et al. 2020). A trial pauses at each rung and
  continues only when it is in the top 1/reduction_factor of at least reduction_factor
  entries there; a rung whose ranking does not predict the later ones stops pausing.
- ``pareto``: the same pause-and-promote, for several objectives (MOASHA, Schmucker et al.
  2021): a rung's entries are ranked by non-dominated sorting, ties within a front broken by
  crowding distance. The default when a spec names several ``objectives``.
- ``asha``: Ray's stopping-type ASHA (its first arrival at a rung always goes on).
- ``hyperband``: Ray's asynchronous Hyperband, ASHA over several brackets.
- ``none``: every trial trains its full budget.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, PositiveInt

from trainables.spec.section import Section

TimeAttr = Literal["training_iteration", "time_total_s"]


class NoScheduler(Section):
    type: Literal["none"]
    # What the report's curves are drawn against: epochs or training seconds.
    time_attr: TimeAttr = "training_iteration"


# Where the first rung lies when a spec does not say, as a fraction of max_t. Chosen by
# `python bench/replay.py --choose-defaults`: on the MNIST-1D curves and MF-Hartmann, first
# rungs near a quarter of the budget beat early ones (grace 1 was among the worst settings),
# because early rankings mislead on all three corpora.
DEFAULT_GRACE_FRACTION = 0.25


class _Rungs(Section):
    time_attr: TimeAttr = "training_iteration"  # epochs, or the trial's training seconds
    # The first rung: no trial is judged before this much time_attr (a quarter of max_t if unset).
    grace_period: PositiveInt | None = None
    reduction_factor: float = Field(default=3.0, gt=1.0)  # 1/reduction_factor go on at each rung
    max_t: PositiveInt | None = None  # where a trial ends, in time_attr; training.epochs by default

    def first_rung(self, max_t: float) -> int:
        """The grace period this spec means for a budget of ``max_t``."""
        return self.grace_period or max(1, round(max_t * DEFAULT_GRACE_FRACTION))


class AshaScheduler(_Rungs):
    type: Literal["asha"]


class HyperbandScheduler(_Rungs):
    type: Literal["hyperband"]
    brackets: PositiveInt = 3  # bracket b has its first rung at grace_period * reduction_factor**b


class PromotionScheduler(_Rungs):
    type: Literal["promotion"]
    # A rung is trusted while the Spearman correlation of its values with those of the
    # highest later rung, over the trials that reached both, is at least this; once
    # `trust_pairs` trials allow the check and it fails, trials no longer pause there.
    trust_correlation: float = Field(default=0.3, ge=-1.0, le=1.0)
    trust_pairs: PositiveInt = 10  # 10 ranked above 5 in bench/replay.py --choose-defaults


PARETO = "pareto"


class ParetoScheduler(PromotionScheduler):
    # The rungs and the trust check as promotion's; the check correlates the first objective.
    type: Literal["pareto"]


SchedulerSpec = Annotated[Union[PromotionScheduler, ParetoScheduler, AshaScheduler, HyperbandScheduler, NoScheduler],
                          Field(discriminator="type")]
SCHEDULER_SECTIONS = {"promotion": PromotionScheduler, PARETO: ParetoScheduler, "asha": AshaScheduler,
                      "hyperband": HyperbandScheduler, "none": NoScheduler}
SCHEDULER_TYPES = tuple(SCHEDULER_SECTIONS)


def default_scheduler() -> PromotionScheduler:
    """A spec without ``scheduler:`` pauses and promotes (chosen by bench/replay.py)."""
    return PromotionScheduler(type="promotion")
