"""``pareto``: pause-and-promote for several objectives, MOASHA's ranking (Schmucker et al.,
"Multi-objective Asynchronous Successive Halving", 2021; Syne Tune's MOASHA) on the
``promotion`` kind's rungs, pauses and promotions.

A rung's entries are the trials' values of every objective when they reached it. They are
ranked by non-dominated sorting (trainables/pareto.py): the Pareto front of the rung first,
then the next front, and within a front by crowding distance, the most isolated first (the
NSGA-II tie-break MOASHA uses; a hypervolume contribution would need a reference point that
a rung of a few trials does not give). A paused trial goes on when it lies in the top
``floor(n / eta)`` of that order, exactly as ``promotion`` does with one value. So a small
model with a fair loss and a large one with the best loss both go on, where one metric
would keep only the large.

The trust check (a rung stops pausing once its ranking does not predict the later one)
correlates the first objective, the quality: costs such as parameters do not change over
training, so they always correlate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainables.objective import Objective
from trainables.pareto import pareto_order, signed_point
from trainables.search.schedulers.promotion import PromotionPolicy


class ParetoPolicy(PromotionPolicy):
    def __init__(self, scheduler_spec: Any, objectives: Sequence[Objective], max_t: float) -> None:
        super().__init__(scheduler_spec, objectives[0], max_t)
        self.objectives = list(objectives)

    def value_of(self, metrics: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(metrics.get(o.metric) for o in self.objectives)

    def _signed(self, value: Any) -> tuple[float, ...] | None:
        return signed_point(value, self.objectives) if isinstance(value, (tuple, list)) else None

    def _order(self, entries: dict[str, Any]) -> list[str]:
        trials = list(entries)
        return [trials[i] for i in pareto_order([entries[t] for t in trials])]

    def _quality(self, signed: tuple[float, ...]) -> float:
        return signed[0]
