"""MLflow's writer for one output folder: every write in order, on a thread of its own, with an
offline journal for a tracking server that is down.

A tracking server that is down must not stop a search. Every write goes through
``RunWriter``: applied at once while the server answers; otherwise kept, in order, in a
journal in the output folder, retried every ``RETRY_SECONDS`` and by
``python launch.py sync <out>``. Runs are named by local keys ("search", or a trial id),
mapped to MLflow run ids once MLflow has created them.

Writes are applied by one writer thread (trainables/background.py), in submission order, so
Tune's event loop never waits on MLflow: a SQLite ``log_batch`` takes 10-20 ms and was the
largest share of the driver's time per result (bench/trial_overhead.py). The thread lets a
second's logs gather and sends each run's as one ``log_batch`` (``merge_logs``): the cost is
per call, and MLflow's writes were still a third of the driver's CPU (bench/RESULTS.md,
"Where the driver's CPU goes"). MLflow's own
``synchronous=False`` covers ``log_batch`` only, not run creation, status or artifacts, and
reports failures after the fact, which would reorder the journal. Every wait on the thread
is bounded: a store that hangs is reported in one line and the search goes on. A journal
that cannot be written (a full disk) is the search's disk fault (trainables/disk_space.py).

What the writes say (the record's projection into MLflow) is trainables/tracking/runs.py.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from trainables.background import BackgroundWriter
from trainables.disk_space import DiskFault, append_whole, as_disk_full
from trainables.outputs import MLFLOW_ARTIFACTS_DIR, MLFLOW_DB, MLFLOW_JOURNAL_FILE, MLFLOW_RUNS_FILE

JOURNAL_FILE = MLFLOW_JOURNAL_FILE  # writes not yet accepted by the server, in order
RETRY_SECONDS = 30.0
MAX_PARAM_LENGTH = 500  # MLflow's limit on a parameter value
# How long logs gather before they are sent: a second's delay in MLflow's UI, for a quarter
# of the cost (trainables/background.py).
LINGER_SECONDS = 1.0


def local_tracking_uri(out_dir: Path) -> str:
    """The output folder's own MLflow store (a search given no ``--mlflow-uri``)."""
    return f"sqlite:///{(out_dir / MLFLOW_DB).resolve()}"


class RunWriter:
    """The only object that writes to MLflow; one per output folder (see ``writer_for``)."""

    def __init__(self, tracking_uri: str, out_dir: Path, experiment: str) -> None:
        if tracking_uri.startswith(("http://", "https://")):
            # Fail fast and fall back to the journal instead of retrying for minutes.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # MLflow logs every store error with its traceback before raising it; this writer
        # reports a failed write itself, in one line.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.tracking_uri = tracking_uri
        self.out_dir = out_dir
        self.experiment = experiment
        # Where a full disk is reported (the search's, once it runs): the search then ends as interrupted.
        self.disk = DiskFault()
        # Made by the writer thread on its first write: opening a new SQLite store (MLflow
        # runs its schema migrations) takes about 2 s that the search need not wait for.
        self._client: MlflowClient | None = None
        self._state_path = out_dir / MLFLOW_RUNS_FILE
        self._journal_path = out_dir / JOURNAL_FILE
        state = json.loads(self._state_path.read_text()) if self._state_path.exists() else {}
        self.experiment_id: str | None = state.get("experiment_id")
        self._runs: dict[str, str] = state.get("runs", {})
        self._keys: set[str] = set(state.get("keys", []))
        self._versions: dict[str, str] = state.get("model_versions", {})
        # What MLflow has accepted, for the next launch to send what it has not (TrialRuns.catch_up):
        # each run's highest metric step, and the runs it has closed (FINISHED or FAILED).
        self._logged: dict[str, int] = state.get("logged_steps", {})
        self._closed: set[str] = set(state.get("closed", []))
        # A folder written before these were kept cannot say what MLflow took: nothing is sent again.
        self.knows_accepted = not state or "logged_steps" in state
        self._last_attempt = 0.0
        self._offline = self._journal_length() > 0
        self.lost = 0  # writes neither applied nor journaled (the disk was full)
        self._told: set[str] = set()  # the one-line reports already made
        self._artifact_root: str | None = None  # where the store puts this experiment's artifacts
        self._thread = BackgroundWriter("mlflow-writer", self._write, self._failed, combine=merge_logs,
                                        linger_s=LINGER_SECONDS)
        atexit.register(self.flush)  # a driver that ends without finish() still sends its writes (bounded)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def flush(self) -> bool:
        """Wait until every write submitted so far is applied (or journaled); False, said in
        one line, when the writer is stuck (trainables/background.py) and the caller goes on."""
        if self._thread.flush():
            return True
        self._say_once("stuck", f"MLflow at {self.tracking_uri}: its writer has written nothing for "
                                f"{self._thread.stall_s:.0f} s; the search goes on without waiting for it "
                                f"(runs may miss what was not written).")
        return False

    @property
    def pending(self) -> int:
        self.flush()
        return self._journal_length()

    def _journal_length(self) -> int:
        if not self._journal_path.exists():
            return 0
        return sum(1 for line in self._journal_path.read_text().splitlines() if line.strip())

    def run_id(self, key: str) -> str | None:
        self.flush()
        return self._runs.get(key)

    def run_id_if_created(self, key: str) -> str | None:
        """The run's id if the writer thread has created it already; never waits."""
        return self._runs.get(key)

    def has_run(self, key: str) -> bool:
        return key in self._keys

    def create_run(self, key: str, name: str, tags: dict[str, str], parent: str | None = None) -> None:
        self._keys.add(key)
        self._submit({"op": "create_run", "key": key, "name": name, "tags": tags, "parent": parent})

    def logged_step(self, key: str) -> int:
        """The highest metric step of the run that MLflow has accepted (0: none)."""
        return self._logged.get(key, 0)

    def closed(self, key: str) -> bool:
        """Whether MLflow has accepted the run's end (FINISHED or FAILED)."""
        return key in self._closed

    def log(self, key: str, metrics: list[tuple[str, float, int]] = (), params: dict[str, Any] | None = None,
            tags: dict[str, str] | None = None, time_ms: int | None = None) -> None:
        """``time_ms``: the metrics' timestamp (default now). A write sent again with the same
        timestamp stays one row: MLflow keeps a metric (key, step, time, value) once."""
        self._submit({"op": "log", "key": key, "time": _now_ms() if time_ms is None else time_ms,
                      "metrics": list(metrics),
                      "params": {k: str(v)[:MAX_PARAM_LENGTH] for k, v in (params or {}).items()},
                      "tags": tags or {}})

    def set_status(self, key: str, status: str) -> None:
        """RUNNING, FINISHED, FAILED or KILLED."""
        self._submit({"op": "status", "key": key, "status": status, "time": _now_ms()})

    def log_artifacts(self, key: str, local_path: Path, artifact_path: str | None = None) -> None:
        self._submit({"op": "artifacts", "key": key, "path": str(local_path), "artifact_path": artifact_path})

    def register_model(self, key: str, name: str, artifact_path: str) -> None:
        """A new version of the registered model ``name``, from an artifact folder of the run."""
        self._submit({"op": "register", "key": key, "name": name, "artifact_path": artifact_path})

    @property
    def model_versions(self) -> dict[str, str]:
        """Registered model name -> the version this folder's search registered."""
        self.flush()
        return dict(self._versions)

    def sync(self) -> int:
        """Send the journal's writes in order; returns how many are still pending."""
        self.flush()
        return self._send_journal()

    def _send_journal(self) -> int:
        self._last_attempt = time.monotonic()
        lines = [line for line in self._journal_path.read_text().splitlines() if line.strip()] \
            if self._journal_path.exists() else []
        for index, line in enumerate(lines):
            try:
                self._apply(json.loads(line))
            except Exception:  # noqa: BLE001 - any failure means "still unreachable"
                self._journal_path.write_text("".join(f"{rest}\n" for rest in lines[index:]))
                return len(lines) - index
        self._journal_path.unlink(missing_ok=True)
        if self._offline:
            self._offline = False
            print(f"MLflow at {self.tracking_uri} is reachable again: {len(lines)} pending writes sent.",
                  file=sys.stderr)
        return 0

    def _submit(self, op: dict[str, Any]) -> None:
        self._thread.submit(op)

    def _write(self, op: dict[str, Any]) -> None:
        if self._offline and time.monotonic() - self._last_attempt > RETRY_SECONDS:
            self._send_journal()
        if not self._offline:
            try:
                self._apply(op)
                return
            except Exception as exc:  # noqa: BLE001 - the server, the network, or the store
                self._offline = True
                self._last_attempt = time.monotonic()
                full = as_disk_full(exc, self.out_dir, f"MLflow's store {self.tracking_uri}") \
                    if self.tracking_uri.startswith("sqlite:") else None  # a server's own disk is an outage
                if full is not None:  # the search ends; the write waits in the journal if it fits
                    self.disk.report(full)
                else:
                    print(f"MLflow at {self.tracking_uri} is unreachable ({_first_line(exc)}); "
                          f"the search goes on and keeps its tracking in {self._journal_path}; once the server "
                          f"is back, run: python launch.py sync {self.out_dir}", file=sys.stderr)
        try:
            with self._journal_path.open("ab", buffering=0) as journal:  # a line whole or not at all
                append_whole(journal, (json.dumps(op) + "\n").encode())
        except Exception:
            self.lost += op.get("writes", 1)  # a merged log counts every write it holds
            raise
        self._save_state()

    def _failed(self, exc: Exception) -> None:
        """A write that could be neither applied nor journaled: lost to MLflow (the record
        still holds what it said). A full disk ends the search; anything else is said once."""
        full = as_disk_full(exc, self.out_dir, f"MLflow's pending writes {JOURNAL_FILE}")
        if full is not None:
            self.disk.report(full)
            self._say_once("full", f"MLflow: {full.strerror}; the search ends as interrupted.")
        else:
            self._say_once("failed", f"MLflow at {self.tracking_uri}: a write could not be kept "
                                     f"({type(exc).__name__}: {_first_line(exc)}); later failures are not shown.")

    def _say_once(self, kind: str, line: str) -> None:
        if kind not in self._told:
            self._told.add(kind)
            print(line, file=sys.stderr, flush=True)

    def artifacts_elsewhere(self) -> str | None:
        """Where the folder's own store keeps its artifacts when that is outside the folder: the
        folder was moved or copied, and MLflow's SQLite store holds the absolute paths of where
        it was made. Artifacts are then not logged, for they would land in that other folder
        (the report and best/ stay in this one); metrics, tags and statuses still are, into
        this folder's store. None for any other store (a tracking server, or a SQLite store
        that several searches share, whose artifacts live where its first search put them)."""
        if self.tracking_uri != local_tracking_uri(self.out_dir) or self.experiment_id is None:
            return None  # (no experiment yet: nothing was logged where the folder was made)
        if self._artifact_root is None:
            self._artifact_root = self.client.get_experiment(self.experiment_id).artifact_location
        root = Path(local_file_uri_to_path(self._artifact_root))
        return None if root.resolve() == (self.out_dir / MLFLOW_ARTIFACTS_DIR).resolve() else str(root)

    def _apply(self, op: dict[str, Any]) -> None:
        kind, key = op["op"], op["key"]
        # Saved for the next launch only when what it reads changed: a run created, a step or
        # an end accepted, a model registered (not at every tag or artifact).
        changed = self.experiment_id is None or kind in ("create_run", "status", "register")
        if self.experiment_id is None:
            self.experiment_id = self._experiment_id()
        if kind in ("artifacts", "register") and (elsewhere := self.artifacts_elsewhere()) is not None:
            self._say_once("moved", f"MLflow: this folder's store keeps its artifacts in {elsewhere}, where the "
                                    f"folder was made; artifacts are not logged from {self.out_dir}, which holds them.")
            return
        if kind == "create_run":
            if key in self._runs:  # already created by an earlier, partly applied sync
                return
            tags = dict(op["tags"])
            if op["parent"] is not None:
                tags[MLFLOW_PARENT_RUN_ID] = self._runs[op["parent"]]
            run = self.client.create_run(self.experiment_id, run_name=op["name"], tags=tags)
            self._runs[key] = run.info.run_id
        elif kind == "log":
            run_id = self._runs[key]
            metrics = [Metric(name, value, stamp[0] if stamp else op["time"], step)
                       for name, value, step, *stamp in op["metrics"]]
            params = [Param(k, v) for k, v in op["params"].items()]
            tags = [RunTag(k, v) for k, v in op["tags"].items()]
            # MlflowClient.log_batch splits what exceeds MLflow's per-call limits itself.
            self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            if metrics:
                self._logged[key] = max(self._logged.get(key, 0), *(m.step for m in metrics))
                changed = True
        elif kind == "status":
            run_id = self._runs[key]
            if op["status"] == "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.client.set_terminated(run_id, status=op["status"], end_time=op["time"])
            if op["status"] in ("FINISHED", "FAILED"):
                self._closed.add(key)
            else:
                self._closed.discard(key)
        elif kind == "artifacts":
            path = Path(op["path"])
            if path.is_dir():
                self.client.log_artifacts(self._runs[key], str(path), artifact_path=op["artifact_path"])
            else:
                self.client.log_artifact(self._runs[key], str(path), artifact_path=op["artifact_path"])
        elif kind == "register":
            self._versions[op["name"]] = self._register(op["name"], self._runs[key], op["artifact_path"])
        if changed:
            self._save_state()

    def _register(self, name: str, run_id: str, artifact_path: str) -> str:
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # the usual case: a later search
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        return str(self.client.create_model_version(name, source, run_id=run_id).version)

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        # With a local store, artifacts live in the search's folder, not in ./mlruns.
        location = ((self.out_dir / MLFLOW_ARTIFACTS_DIR).resolve().as_uri()
                    if self.tracking_uri.startswith("sqlite:") else None)
        return self.client.create_experiment(self.experiment, artifact_location=location)

    def _save_state(self) -> None:
        """The run ids MLflow gave, for the next launch. On a full disk the write MLflow
        accepted stays accepted (journaling it would apply it twice): the fault is reported,
        and the next save that finds space writes the whole state."""
        state = {"tracking_uri": self.tracking_uri, "experiment": self.experiment,
                 "experiment_id": self.experiment_id, "runs": self._runs, "keys": sorted(self._keys),
                 "logged_steps": self._logged, "closed": sorted(self._closed),
                 "model_versions": self._versions}
        tmp = self._state_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(state, indent=1))
            tmp.replace(self._state_path)
        except OSError as exc:
            full = as_disk_full(exc, self.out_dir, f"MLflow's run ids {MLFLOW_RUNS_FILE}")
            if full is None:
                raise
            tmp.unlink(missing_ok=True)
            self.disk.report(full)


_WRITERS: dict[str, RunWriter] = {}


def writer_for(tracking_uri: str, out_dir: Path, experiment: str) -> RunWriter:
    """The process's one writer for an output folder (every listener of the record in this process shares it)."""
    key = str(out_dir.resolve())
    if key not in _WRITERS:
        _WRITERS[key] = RunWriter(tracking_uri, out_dir.resolve(), experiment)
    return _WRITERS[key]


def folder_writer(out_dir: Path) -> RunWriter | None:
    """The writer of a search's folder, from the tracking state it recorded; None if it has none."""
    state_path = out_dir / MLFLOW_RUNS_FILE
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    recorded = state["tracking_uri"]
    # The folder's own store, wherever the folder is now: one moved or copied (from a cluster's
    # storage to a laptop, say) names the store of the folder it was copied from.
    own = recorded.startswith("sqlite:") and recorded.endswith(f"/{MLFLOW_DB}") and (out_dir / MLFLOW_DB).exists()
    return writer_for(local_tracking_uri(out_dir) if own else recorded, out_dir, state["experiment"])


def merge_logs(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The writes to apply for ``ops``, in order, with each run's logs between two other writes
    folded into one (its metrics keep their own times; a later tag or param wins, as it would
    applied in turn). Another kind of write (a run created, a status, artifacts) is applied
    where it stood, after every log before it."""
    merged: list[dict[str, Any]] = []
    open_logs: dict[str, dict[str, Any]] = {}
    for op in ops:
        if op["op"] != "log":
            merged.extend(open_logs.values())
            open_logs.clear()
            merged.append(op)
            continue
        metrics = [(name, value, step, op["time"]) for name, value, step, *_ in op["metrics"]]
        log = open_logs.get(op["key"])
        if log is None:
            open_logs[op["key"]] = {**op, "metrics": metrics, "writes": 1}
        else:
            log["metrics"] += metrics
            log["params"] = {**log["params"], **op["params"]}
            log["tags"] = {**log["tags"], **op["tags"]}
            log["writes"] += 1
    return merged + list(open_logs.values())


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _now_ms() -> int:
    return int(time.time() * 1000)
