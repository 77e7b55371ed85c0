"""The search's record: one owner for what happened to every trial.

An append-only JSON-lines file in the output folder (``record.jsonl``), written by the launch
that holds the folder's lock, one line per event, as it happens:

    {"e": "session", "t": ..., "host": ..., "pid": ...}          a launch began (or resumed) the search
    {"e": "trial", "id": ..., "number": n, "config": {...}}        a trial was issued
    {"e": "epoch", "id": ..., "epoch": k, "metrics": {...}, "checkpoint": "trials/<id>/epoch_00k"}
    {"e": "failure", "id": ..., "error": "last line"}             a crash that Tune retries (or that ends it)
    {"e": "pause", "id": ..., "rung": r}                           the scheduler paused it at a rung (slot freed)
    {"e": "promote", "id": ...}                                     a paused trial continues (issued again)
    {"e": "end", "id": ..., "status": ..., "reason": ..., "rung": k}
    {"e": "pruned", "ids": [...]}                                   checkpoints deleted when the search ended
    {"e": "session_end", "how": "finished" | "interrupted", "signal": "SIGTERM"}   (signal: what interrupted it)

Everything else reads it: summary.json, the report, MLflow, Optuna, the Ray metrics and the
console are projections, and a resumed search restores the scheduler's rungs and Optuna's history
from it. Appending a line costs the same for the 1st trial as for the 1,000th (Tune's own
snapshot rewrites every trial at every checkpoint). A line cut short by a kill is dropped
on the next open; a bad line before the last (a full disk, a crash on a network file system)
is named (DamagedRecordError), never guessed past. An epoch is recorded once: a trial that resumes from its checkpoint
reports that epoch again, and the repeat is ignored.

The statuses (one vocabulary for every reader): a trial is ``running`` (or ``paused`` at a
rung by the scheduler, its slot given up until it is promoted) until it ends as
``finished`` (its epoch budget or early-stopping patience), ``stopped early`` (by the scheduler, at
a rung, or by the search's time limit) or ``failed`` (an error, after its retries, or a
non-finite loss). A trial that has not ended when its search stops without finishing (Ctrl-C,
a killed launcher) is ``interrupted`` until the same command continues it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.disk_space import append_whole, as_disk_full
from trainables.objective import Objective, is_number
from trainables.outputs import RECORD_FILE, checkpoint_name, trial_dir

RUNNING, PAUSED, FINISHED, STOPPED, FAILED, INTERRUPTED = (
    "running", "paused", "finished", "stopped early", "failed", "interrupted")
ENDED = (FINISHED, STOPPED, FAILED)
# Why a trial was stopped early.
BY_SCHEDULER, BY_TIME_LIMIT = "scheduler", "time limit"
# Seconds a trial has trained and validated, over all its attempts (the loop reports it with
# each epoch): what the scheduler counts when its time_attr is time, since Tune's own time_total_s
# starts again at each attempt.
TRIAL_SECONDS = "trial_seconds"
# The spec's scheduler.time_attr -> the key of the record's epochs that counts it.
TIME_ATTRS = {"training_iteration": "epoch", "time_total_s": TRIAL_SECONDS}
# How a search (a session of it) ended.
SEARCH_FINISHED, SEARCH_INTERRUPTED = "finished", "interrupted"


class DamagedRecordError(ValueError):
    """A line of the record, before its last, is not a whole event: what follows cannot be trusted."""

    def __init__(self, path: Path, line: int) -> None:
        self.path, self.line = path, line
        super().__init__(f"{path}: line {line} is damaged (cut short or not JSON; a full disk or a crash can "
                         f"leave that). Nothing was changed. Move the folder aside to start afresh, or delete "
                         f"line {line} and every line after it to continue from what comes before "
                         f"(sed -i '{line},$d' {path})")


@dataclass
class TrialRecord:
    trial_id: str
    config: dict[str, Any]
    number: int  # the order trials were issued in (0, 1, ...)
    study_number: int | None = None  # its trial in the Optuna study
    status: str = RUNNING
    reason: str = ""  # budget | patience | scheduler | time limit | the error's last line
    rung: float | None = None  # the rung (in the scheduler's count) it was stopped or is paused at
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> reported metrics
    checkpoints: dict[int, str] = field(default_factory=dict)  # epoch -> folder, relative to the output folder
    failures: list[str] = field(default_factory=list)
    issued_at: float | None = None  # when it was first issued (wall clock)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def paused(self) -> bool:
        return self.status == PAUSED

    @property
    def why_ended(self) -> str:
        """The reason in words, with the rung of a scheduler's stop ("scheduler at rung 60")."""
        if self.paused:
            return f"paused at rung {self.rung}"
        return self.reason if self.rung is None else f"{self.reason} at rung {self.rung}"

    def best_epoch(self, objective: Objective) -> int | None:
        return objective.best(sorted(self.epochs), key=lambda e: self.epochs[e].get(objective.metric))

    def best_value(self, objective: Objective) -> float | None:
        epoch = self.best_epoch(objective)
        return None if epoch is None else float(self.epochs[epoch][objective.metric])

    def value_at(self, epoch: int, metric: str) -> float | None:
        value = self.epochs.get(epoch, {}).get(metric)
        return float(value) if is_number(value) else None

    def best_checkpoint(self, objective: Objective) -> str | None:
        return self.checkpoints.get(self.best_epoch(objective))

    def point(self, objectives: Sequence[Objective]) -> list[float | None] | None:
        """The trial as a point of a search with several objectives: each objective's value at
        its best epoch by the first (the epoch whose checkpoint is kept, so the point is what
        the kept model does); None before it has one."""
        epoch = self.best_epoch(objectives[0])
        return None if epoch is None else [self.value_at(epoch, o.metric) for o in objectives]


class RecordListener:
    """What a projection of the record implements (the record calls it after each event)."""

    def on_trial(self, trial: TrialRecord) -> None: ...

    def on_epoch(self, trial: TrialRecord, epoch: int) -> None: ...

    def on_failure(self, trial: TrialRecord, error: str) -> None: ...

    def on_pause(self, trial: TrialRecord) -> None: ...

    def on_end(self, trial: TrialRecord) -> None: ...


class SearchRecord:
    """The folded record of one output folder; ``open_for_writing`` makes it the writer.

    A damaged line raises DamagedRecordError; with ``up_to_damage`` (a reader that draws what
    it can) the record is folded up to that line instead, and ``damage`` names it."""

    def __init__(self, out_dir: Path, objective: Objective, up_to_damage: bool = False) -> None:
        self.out_dir = out_dir
        self.objective = objective
        self.trials: dict[str, TrialRecord] = {}
        self.sessions: list[dict[str, Any]] = []  # each launch: its start, its last event time, how it ended
        self._handle = None
        self._refused: OSError | None = None  # the failed write that stopped this writer
        self._listeners: list[RecordListener] = []
        self.path = out_dir / RECORD_FILE
        self.damage: DamagedRecordError | None = None
        if self.path.exists():
            try:
                for event in _read_events(self.path):
                    self._apply(event)
            except DamagedRecordError as exc:
                if not up_to_damage:
                    raise
                self.damage = exc

    # ----- reading -----
    @property
    def state(self) -> str:
        """finished | interrupted | running (the last launch has not ended: live, or killed)."""
        if not self.sessions:
            return SEARCH_INTERRUPTED
        return self.sessions[-1].get("how") or RUNNING

    @property
    def interrupted_by(self) -> str | None:
        """The signal that interrupted the last launch (SIGINT, SIGTERM), if one did."""
        return self.sessions[-1].get("signal") if self.sessions else None

    def status(self, trial: TrialRecord, live: bool = False) -> str:
        """The trial's status as a reader reports it: a trial not ended is running only while
        its search runs, and interrupted otherwise."""
        if trial.ended or live or trial.paused:
            return trial.status
        return INTERRUPTED

    def elapsed_s(self) -> float:
        """Wall time the search has run so far, over all its launches."""
        return sum(s["last"] - s["t"] for s in self.sessions)

    def unfinished(self) -> list[TrialRecord]:
        """Trials not ended, paused ones included."""
        return [t for t in self.trials.values() if not t.ended]

    def to_continue(self) -> list[TrialRecord]:
        """Trials a continued search issues again first: unfinished and not paused (a paused
        trial waits for its scheduler's promotion)."""
        return [t for t in self.trials.values() if not t.ended and not t.paused]

    def best_trial(self) -> TrialRecord | None:
        """The trial whose best epoch is best, among those with that epoch's checkpoint kept."""
        return self.objective.best((t for t in self.trials.values() if t.best_checkpoint(self.objective)),
                                   key=lambda t: t.best_value(self.objective))

    def ranked(self) -> list[TrialRecord]:
        return self.objective.ranked(self.trials.values(), key=lambda t: t.best_value(self.objective))

    # ----- writing -----
    def open_for_writing(self) -> "SearchRecord":
        """Start a session (the caller holds the folder's lock). A line cut short by a kill is
        removed first, so the next line starts on its own."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with self.path.open("r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
        # Unbuffered bytes: an event reaches the OS whole or, on a failed write, is cut back
        # (nothing is left in a buffer for close() to flush after a failure).
        self._handle = self.path.open("ab", buffering=0)
        self._refused = None
        self._write({"e": "session", "host": socket.gethostname(), "pid": os.getpid()})
        return self

    def add_listener(self, listener: RecordListener) -> None:
        self._listeners.append(listener)

    def add_trial(self, trial_id: str, config: dict[str, Any], study_number: int | None = None) -> TrialRecord:
        """Record a new trial, or note that an unfinished one is issued again (no line written)."""
        if trial_id in self.trials:
            self._notify("on_trial", self.trials[trial_id])
            return self.trials[trial_id]
        self._write({"e": "trial", "id": trial_id, "number": len(self.trials), "config": config,
                     "study": study_number})
        trial = self.trials[trial_id]
        self._notify("on_trial", trial)
        return trial

    def add_epoch(self, trial_id: str, epoch: int, metrics: dict[str, Any], checkpoint: str | None) -> bool:
        """Record one reported epoch; False (and nothing written) for an epoch already recorded."""
        trial = self.trials[trial_id]
        if epoch in trial.epochs:
            return False
        dropped = self._write({"e": "epoch", "id": trial_id, "epoch": epoch, "metrics": metrics,
                               "checkpoint": checkpoint})
        for folder in dropped:  # after the record names their successor
            shutil.rmtree(self.out_dir / folder, ignore_errors=True)
        self._notify("on_epoch", trial, epoch)
        return True

    def add_failure(self, trial_id: str, error: str) -> None:
        self._write({"e": "failure", "id": trial_id, "error": error})
        self._notify("on_failure", self.trials[trial_id], error)

    def pause_trial(self, trial_id: str, rung: float) -> None:
        self._write({"e": "pause", "id": trial_id, "rung": rung})
        self._notify("on_pause", self.trials[trial_id])

    def promote_trial(self, trial_id: str) -> None:
        self._write({"e": "promote", "id": trial_id})

    def end_trial(self, trial_id: str, status: str, reason: str, rung: float | None = None) -> None:
        trial = self.trials[trial_id]
        if trial.ended:
            return
        self._write({"e": "end", "id": trial_id, "status": status, "reason": reason, "rung": rung})
        self._notify("on_end", trial)

    def prune(self, keep: int, also: Iterable[str] = ()) -> list[str]:
        """When the search has ended: keep the best checkpoints of the ``keep`` best trials that
        ended (and of the trials ``also`` names: a Pareto front's), delete every other
        checkpoint of theirs; returns the trials pruned. Unfinished trials keep theirs (a later
        launch continues them)."""
        ended = [t for t in self.ranked() if t.ended]
        also = set(also)
        kept = {t.trial_id for i, t in enumerate(ended) if (i < keep or t.trial_id in also)
                and t.best_value(self.objective) is not None}
        pruned = [t.trial_id for t in ended if t.checkpoints and (t.trial_id not in kept or len(t.checkpoints) > 1)]
        if pruned:
            self._write({"e": "pruned", "ids": pruned, "keep": sorted(kept)})
            for trial_id in pruned:
                folder = trial_dir(self.out_dir, trial_id)
                for child in folder.glob("epoch_*") if folder.exists() else ():
                    if str(child.relative_to(self.out_dir)) not in self.trials[trial_id].checkpoints.values():
                        shutil.rmtree(child, ignore_errors=True)
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()
        return pruned

    def close_quietly(self) -> None:
        """Stop writing without ending the session (an error: the next launch continues)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self, how: str, signal_name: str | None = None) -> None:
        if self._handle is not None and self._refused is None:
            self._write({"e": "session_end", "how": how, **({"signal": signal_name} if signal_name else {})})
        self.close_quietly()

    # ----- folding -----
    def _write(self, event: dict[str, Any]) -> list[str]:
        event["t"] = time.time()
        self._append((json.dumps(event, default=str) + "\n").encode())
        return self._apply(event)

    def _append(self, line: bytes) -> None:
        """Append one whole line, or none: a write that fails (a full disk) is cut back to the
        last whole line and every later write is refused, so the record never holds a partial
        line followed by whole ones. The event is then not applied either."""
        if self._refused is not None:
            raise self._refused
        try:
            append_whole(self._handle, line)
        except OSError as exc:
            full = as_disk_full(exc, self.out_dir, f"the record {RECORD_FILE}")
            self._refused = full or exc
            if full is None:
                raise
            raise full from exc

    def _apply(self, event: dict[str, Any]) -> list[str]:
        """Fold one event into the state; returns checkpoint folders it made obsolete."""
        kind = event["e"]
        if self.sessions:
            self.sessions[-1]["last"] = event["t"]
        if kind == "session":
            self.sessions.append({"t": event["t"], "last": event["t"], "host": event.get("host"),
                                  "pid": event.get("pid"), "how": None})
        elif kind == "session_end":
            self.sessions[-1].update(how=event["how"], signal=event.get("signal"))
        elif kind == "trial":
            self.trials[event["id"]] = TrialRecord(event["id"], event["config"], event["number"], event.get("study"),
                                                   issued_at=event["t"])
        elif kind == "epoch":
            trial = self.trials[event["id"]]
            trial.epochs[event["epoch"]] = {**event["metrics"], "time": event["t"]}
            if event.get("checkpoint"):
                trial.checkpoints[event["epoch"]] = event["checkpoint"]
            return self._retain(trial)
        elif kind == "failure":
            self.trials[event["id"]].failures.append(event["error"])
        elif kind == "pause":
            trial = self.trials[event["id"]]
            trial.status, trial.rung = PAUSED, event["rung"]
        elif kind == "promote":
            self.trials[event["id"]].status = RUNNING
        elif kind == "end":
            trial = self.trials[event["id"]]
            trial.status, trial.reason, trial.rung = event["status"], event["reason"], event.get("rung")
        elif kind == "pruned":
            keep = set(event["keep"])
            for trial_id in event["ids"]:
                trial = self.trials[trial_id]
                best = trial.best_epoch(self.objective)
                trial.checkpoints = ({best: trial.checkpoints[best]}
                                     if trial_id in keep and best in trial.checkpoints else {})
        return []

    def _retain(self, trial: TrialRecord) -> list[str]:
        """While a trial runs it keeps its latest checkpoint (to continue from) and its best."""
        keep = {max(trial.checkpoints), trial.best_epoch(self.objective)} if trial.checkpoints else set()
        dropped = [trial.checkpoints.pop(e) for e in sorted(trial.checkpoints) if e not in keep]
        return dropped

    def _notify(self, hook: str, *args: Any) -> None:
        for listener in self._listeners:
            getattr(listener, hook)(*args)


def _read_events(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(errors="replace") as handle:  # garbage bytes are damage, named below, not a UnicodeError
        for number, line in enumerate(handle, 1):
            if not line.endswith("\n"):
                return  # cut short by a kill: dropped (and truncated by the next writer)
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                raise DamagedRecordError(path, number) from None
            if not isinstance(event, dict) or "e" not in event or "t" not in event:
                raise DamagedRecordError(path, number)
            yield event


def checkpoint_relpath(trial_id: str, epoch: int) -> str:
    """Where a trial writes its epoch's checkpoint, relative to the output folder."""
    return str(Path(trial_dir(Path("."), trial_id), checkpoint_name(epoch)))
