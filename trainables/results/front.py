"""The search's Pareto front, from its record: the trials that no other trial beats in every
objective, each at its point (``TrialRecord.point``: every objective's value at its best epoch
by the first, the epoch whose checkpoint is kept). summary.json, the kept checkpoints
(``pareto/``), MLflow's tags and the report all take the front from here.

Every trial with a whole point counts, stopped ones at the rung where they stopped (what they
reached there is what was measured); failed trials do not. With one objective the front is
the best trial (and any tied with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainables.objective import Objective
from trainables.pareto import nondominated_ranks, signed_point
from trainables.results.record import FAILED, SearchRecord, TrialRecord


def pareto_front(record: SearchRecord, objectives: Sequence[Objective]) -> list[TrialRecord]:
    """The front's trials, best first by the first objective (the quality)."""
    points = [(t, signed_point(t.point(objectives) or [], objectives)) for t in record.trials.values()
              if t.status != FAILED]
    points = [(t, p) for t, p in points if p is not None]
    ranks = nondominated_ranks([p for _, p in points])
    front = [t for (t, _), rank in zip(points, ranks) if rank == 0]
    return objectives[0].ranked(front, key=lambda t: t.best_value(objectives[0]))


def front_entries(record: SearchRecord, objectives: Sequence[Objective], live: bool = False) -> list[dict[str, Any]]:
    """The front as summary.json's ``pareto`` list states it."""
    return [{"trial_id": t.trial_id, "config": t.config,
             "values": dict(zip((o.metric for o in objectives), t.point(objectives))),
             "epoch": t.best_epoch(objectives[0]), "status": record.status(t, live)}
            for t in pareto_front(record, objectives)]
