"""The Tune callback that writes the search's record as Tune runs (on the driver).

A full disk (a trial that could not write its checkpoint, or the record itself) is never
written as a trial's failure or end: it goes to the search's ``DiskFault``, which ends the
search as interrupted (trainables/disk_space.py), and the trial stays unfinished.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from trainables.disk_space import DISK_FULL_KEY, DiskFault, DiskFullError, in_error_text
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

    def __init__(self, record: SearchRecord, scheduler: PolicyScheduler, disk: DiskFault) -> None:
        self.record = record
        self.scheduler = scheduler
        self.disk = disk

    def __getstate__(self) -> dict[str, Any]:
        return {}  # see searcher._DriverOnly: pickled into tuner.pkl, never read back

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if DISK_FULL_KEY in result:
            self.disk.report(in_error_text(str(result[DISK_FULL_KEY])) or DiskFullError(
                self.record.out_dir, f"trial {trial.trial_id}'s checkpoint"))
            return
        if "epoch" not in result:
            return
        epoch = int(result["epoch"])
        metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS}
        checkpoint = checkpoint_relpath(trial.trial_id, epoch) if result.get("checkpointed") else None
        with self._disk_full_noted():
            self.record.add_epoch(trial.trial_id, epoch, metrics, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if DISK_FULL_KEY in last:  # unfinished: continued from its last checkpoint by the next launch
            return
        policy = self.scheduler.policy
        with self._disk_full_noted():
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
        if not self._disk_full_in(trial):
            with self._disk_full_noted():
                self.record.add_failure(trial.trial_id, error_line(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._disk_full_in(trial):
            return
        error = error_line(trial)
        with self._disk_full_noted():
            self.record.add_failure(trial.trial_id, error)
            self.record.end_trial(trial.trial_id, FAILED, error)

    def _disk_full_in(self, trial: Any) -> bool:
        """A trial that raised a DiskFullError (outside its checkpoint) is the disk's fault, not its own."""
        found = in_error_text(error_text(trial))
        if found is not None:
            self.disk.report(found)
        return found is not None

    @contextmanager
    def _disk_full_noted(self) -> Iterator[None]:
        """The record refused a write (a full disk): the search ends; Tune's loop goes on to stop it."""
        try:
            yield
        except DiskFullError as exc:
            self.disk.report(exc)


def error_text(trial: Any) -> str:
    """The trial's errors, as Tune wrote them ("" when it wrote none, or could not)."""
    path = getattr(trial, "error_file", None) or ""
    try:
        return Path(path).read_text() if path else ""
    except OSError:
        return ""


def error_line(trial: Any) -> str:
    """The last line of the trial's latest error, as Tune wrote it."""
    lines = [line for line in error_text(trial).strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "the trial raised an error"
