"""Keep each trial's best and latest checkpoint, and delete the others without Tune's cost.

Tune can do this itself (``CheckpointConfig(num_to_keep=1)``), but Ray 2.60 then writes a
full experiment snapshot after every trial checkpoint, so that a snapshot never names a
checkpoint it has deleted (``experiment_state.py``, "a non-performant workaround"). A
snapshot serialises every trial of the search, so with a checkpoint per epoch the search
slows quadratically with its number of trials: 60 short trials took 3.4x their ideal time
here instead of 1.6x (bench/RESULTS.md).

So Tune keeps every checkpoint (``num_to_keep=None``: snapshots on its own timer) and this
callback deletes a checkpoint once it is neither its trial's latest nor its best *and* the
newest restorable snapshot was taken after that happened: a resume after ``kill -9`` always
finds the checkpoints its snapshot names. When the search ends, a trial that will not train
again keeps only its best.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from trainables.snapshots import SnapshotBackup


@dataclass
class _Kept:
    latest: Any = None  # ray.tune.Checkpoint
    best: Any = None
    best_score: float | None = None


class CheckpointRetention(Callback):
    """Deletes superseded trial checkpoints once ``snapshots`` has a snapshot newer than them."""

    def __init__(self, metric: str, mode: str, snapshots: SnapshotBackup) -> None:
        self.metric, self.mode, self.snapshots = metric, mode, snapshots
        self._kept: dict[str, _Kept] = {}
        # (controller iteration at which it was superseded, checkpoint), oldest first.
        self._released: deque[tuple[int, Any]] = deque()

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # Tune has just processed the result this checkpoint came with: it is the last result.
        score = (trial.last_result or {}).get(self.metric)
        kept = self._kept.setdefault(trial.trial_id, _Kept())
        superseded = [kept.latest]
        kept.latest = checkpoint
        if self._better(score, kept.best_score):
            superseded.append(kept.best)
            kept.best, kept.best_score = checkpoint, float(score)
        for old in superseded:
            if old is not None and old is not kept.latest and old is not kept.best:
                self._released.append((iteration, old))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        while self._released and self._released[0][0] <= self.snapshots.iteration:
            _delete(self._released.popleft()[1])

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune wrote its final snapshot (and waited for it) just before this call.
        self.snapshots.check_now()
        self.on_step_end(iteration=-1, trials=trials)
        # A trial that ended (finished, stopped early, cut by the time limit) never trains
        # again, even when the search is resumed, so its latest checkpoint is only worth
        # keeping if it is also its best (a large model's is GiBs). A failed trial keeps it:
        # `--resume` retries it from there.
        for trial in trials:
            kept = self._kept.get(trial.trial_id)
            if trial.status == Trial.TERMINATED and kept and kept.latest is not kept.best and kept.best is not None:
                _delete(kept.latest)
                kept.latest = None

    def _better(self, score: Any, best: float | None) -> bool:
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            return False
        if best is None:
            return True
        return score < best if self.mode == "min" else score > best


def _delete(checkpoint: Any) -> None:
    try:
        checkpoint.filesystem.delete_dir(checkpoint.path)
    except FileNotFoundError:
        pass  # already gone (a trial folder removed by hand, say)
