"""Non-dominated sorting: the one ranking of points with several objectives, used by the
``pareto`` scheduler at each rung and by the search's Pareto front (summary.json, kept
checkpoints, the report).

A point is a sequence of signed values, smaller better in every coordinate
(``Objective.sign * value``; ``signed_point``). Ours rather than Optuna's: Optuna's
non-dominated sort (``optuna.study._multi_objective._fast_non_domination_rank``) and crowding
distance are private API, and its public ``Study.best_trials`` gives only the first front of
COMPLETE trials, not ranks of a rung's entries. The plain O(n^2)-per-front peeling below is
fast for the hundreds of entries a rung holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from trainables.objective import Objective, is_number

Point = Sequence[float]


def signed_point(values: Sequence[float | None], objectives: Sequence[Objective]) -> tuple[float, ...] | None:
    """``values`` of ``objectives`` made smaller-is-better; None when one is not a number."""
    if len(values) != len(objectives) or not all(is_number(v) for v in values):
        return None
    return tuple(o.sign * float(v) for o, v in zip(objectives, values))


def dominates(a: Point, b: Point) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """Each point's front: 0 for the non-dominated (the Pareto front), 1 for those only the
    front dominates, and so on."""
    ranks = [-1] * len(points)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        front = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)]
        for i in front:
            ranks[i] = rank
        remaining.difference_update(front)
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II's crowding distance of each point among ``points`` (one front): the extremes
    of every objective get infinity, the others the normalised side lengths of the box their
    neighbours span. Larger = more isolated = more of the front's extent it alone covers."""
    n = len(points)
    distances = [0.0] * n
    if n == 0:
        return distances
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        distances[order[0]] = distances[order[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(order, order[1:], order[2:]):
            distances[here] += (points[after][m] - points[before][m]) / (high - low)
    return distances


def pareto_order(points: Sequence[Point]) -> list[int]:
    """Indices of ``points`` best first: by front, and within a front by crowding distance
    (the most isolated first, so that what goes on spreads along the front; MOASHA's
    NSGA-II tie-break). Equal keys keep their order."""
    ranks = nondominated_ranks(points)
    crowding = [0.0] * len(points)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, distance in zip(members, crowding_distances([points[i] for i in members])):
            crowding[i] = distance
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowding[i]))
