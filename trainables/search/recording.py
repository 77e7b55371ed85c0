"""The Tune callback that writes the search's record as Tune runs (on the driver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from trainables.results.record import (
    BY_SCHEDULER,
    FAILED,
    FINISHED,
    STOPPED,
    SearchRecord,
    checkpoint_relpath,
)
from trainables.search.schedulers import PolicyScheduler

# What Tune adds to every result; the record keeps what the loop reported.
_TUNE_KEYS = {*AUTO_RESULT_KEYS, "trial_id", "experiment_tag", "done", "checkpoint_dir_name", "should_checkpoint",
              "checkpointed"}


class RecordKeeper(Callback):
    """Tune's events -> the record: each epoch as it is reported, each end with its cause."""

    def __init__(self, record: SearchRecord, scheduler: PolicyScheduler) -> None:
        self.record = record
        self.scheduler = scheduler

    def __getstate__(self) -> dict[str, Any]:
        return {}  # see searcher._DriverOnly: pickled into tuner.pkl, never read back

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if "epoch" not in result:
            return
        epoch = int(result["epoch"])
        metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS}
        checkpoint = checkpoint_relpath(trial.trial_id, epoch) if result.get("checkpointed") else None
        self.record.add_epoch(trial.trial_id, epoch, metrics, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        policy = self.scheduler.policy
        if last.get("failed"):  # a non-finite loss: the loop ended the trial
            policy.on_end(trial.trial_id)
            self.record.end_trial(trial.trial_id, FAILED, last.get("stop_reason") or "failed")
        elif last.get("finished") or last.get(policy.time_key, 0) >= policy.max_t:
            # Its epochs, or the scheduler's max_t in training seconds: the trial's full budget.
            policy.on_end(trial.trial_id)
            self.record.end_trial(trial.trial_id, FINISHED, last.get("stop_reason") or "budget")
        elif trial.trial_id in self.scheduler.pauses:
            self.record.pause_trial(trial.trial_id, self.scheduler.pauses.pop(trial.trial_id))
        else:
            self.record.end_trial(trial.trial_id, STOPPED, BY_SCHEDULER, rung=policy.rung_of(trial.trial_id))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.record.add_failure(trial.trial_id, error_line(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = error_line(trial)
        self.record.add_failure(trial.trial_id, error)
        self.record.end_trial(trial.trial_id, FAILED, error)


def error_line(trial: Any) -> str:
    """The last line of the trial's latest error, as Tune wrote it."""
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [line for line in Path(path).read_text().strip().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else "the trial raised an error"
