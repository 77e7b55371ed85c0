"""All MLflow calls: a parent run per search, a child run per trial, written from the driver.

One writer (a listener of the search's record, in the driver process) rather than one per trial process:
MLflow's default SQLite store contends under many concurrent writers, and Ray's
``MLflowLoggerCallback`` makes no parent run and marks early-stopped trials FINISHED
with no word of why (ray issues 19978, 46569, 64179).

A tracking server that is down must not stop a search. Every write goes through
``RunWriter``: applied at once while the server answers; otherwise kept, in order, in a
journal in the output folder, retried every ``RETRY_SECONDS`` and by
``python launch.py sync <out>``. Runs are named by local keys ("search", or a trial id),
mapped to MLflow run ids once MLflow has created them.

Writes are applied by one writer thread, in submission order, so Tune's event loop never
waits on MLflow: a SQLite ``log_batch`` takes 10-20 ms and was the largest share of the
driver's time per result (bench/trial_overhead.py). MLflow's own ``synchronous=False``
covers ``log_batch`` only, not run creation, status or artifacts, and reports failures
after the fact, which would reorder the journal.
"""

from __future__ import annotations

import atexit
import filecmp
import json
import os
import queue
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from trainables.objective import is_number
from trainables.outputs import (
    FIGURES_DIR,
    MLFLOW_ARTIFACTS_DIR,
    MLFLOW_DB,
    MLFLOW_JOURNAL_FILE,
    MLFLOW_RUNS_FILE,
    checkpoint_name,
)
from trainables.results.record import (
    FAILED,
    INTERRUPTED,
    RecordListener,
    SearchRecord,
    TrialRecord,
)

SEARCH_KEY = "search"  # the parent run's key; children are keyed by trial id
BEST_ARTIFACTS = "best_checkpoint"  # the parent run's copy of best/, the registered model's source
TRIAL_ID_TAG = "hpsearch.trial_id"
END_TAG = "hpsearch.end"  # the record's status: finished | stopped early | failed | interrupted
REASON_TAG = "hpsearch.reason"
RETRIES_TAG = "hpsearch.retries"  # crashes of the trial that were retried
WARM_START_TAG = "hpsearch.warm_start"  # the parent run's: the earlier searches it started from, as JSON
PARETO_TAG = "hpsearch.pareto"  # "true" on the runs of a multi-objective search's Pareto front
JOURNAL_FILE = MLFLOW_JOURNAL_FILE  # writes not yet accepted by the server, in order
RETRY_SECONDS = 30.0
MAX_PARAM_LENGTH = 500  # MLflow's limit on a parameter value
MAX_BATCH_PARAMS = 100  # MLflow's limit on params per log_batch
REPORT_ARTIFACTS = "report"  # the parent run's folder for the search report


def local_tracking_uri(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / MLFLOW_DB).resolve()}"


def ui_command(tracking_uri: str, out_dir: Path) -> str:
    if tracking_uri.startswith("sqlite:"):
        return (f"mlflow ui --backend-store-uri {tracking_uri} "
                f"--default-artifact-root {(out_dir / MLFLOW_ARTIFACTS_DIR).resolve()} --host 127.0.0.1")
    return f"open {tracking_uri} in a browser"


class RunWriter:
    """The only object that writes to MLflow; one per output folder (see ``writer_for``)."""

    def __init__(self, tracking_uri: str, out_dir: Path, experiment: str) -> None:
        if tracking_uri.startswith(("http://", "https://")):
            # Fail fast and fall back to the journal instead of retrying for minutes.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.tracking_uri = tracking_uri
        self.out_dir = out_dir
        self.experiment = experiment
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
        self._last_attempt = 0.0
        self._offline = self._journal_length() > 0
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._write_in_order, name="mlflow-writer", daemon=True).start()
        atexit.register(self.flush)  # a driver that ends without finish() still sends its writes

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def flush(self) -> None:
        """Wait until every write submitted so far is applied (or journaled)."""
        self._queue.join()

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

    def log(self, key: str, metrics: list[tuple[str, float, int]] = (), params: dict[str, Any] | None = None,
            tags: dict[str, str] | None = None) -> None:
        self._submit({"op": "log", "key": key, "time": _now_ms(), "metrics": list(metrics),
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
        self._queue.put(op)

    def _write_in_order(self) -> None:
        while True:
            op = self._queue.get()
            try:
                self._write(op)
            finally:
                self._queue.task_done()

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
                print(f"MLflow at {self.tracking_uri} is unreachable ({str(exc).splitlines()[0][:200]}); "
                      f"the search goes on and keeps its tracking in {self._journal_path}; once the server "
                      f"is back, run: python launch.py sync {self.out_dir}", file=sys.stderr)
        with self._journal_path.open("a") as journal:
            journal.write(json.dumps(op) + "\n")
        self._save_state()

    def _apply(self, op: dict[str, Any]) -> None:
        kind, key = op["op"], op["key"]
        if self.experiment_id is None:
            self.experiment_id = self._experiment_id()
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
            metrics = [Metric(name, value, op["time"], step) for name, value, step in op["metrics"]]
            params = [Param(k, v) for k, v in op["params"].items()]
            tags = [RunTag(k, v) for k, v in op["tags"].items()]
            for start in range(0, max(len(params), 1), MAX_BATCH_PARAMS):
                self.client.log_batch(run_id, metrics=metrics if start == 0 else [],
                                      params=params[start:start + MAX_BATCH_PARAMS], tags=tags if start == 0 else [])
        elif kind == "status":
            run_id = self._runs[key]
            if op["status"] == "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.client.set_terminated(run_id, status=op["status"], end_time=op["time"])
        elif kind == "artifacts":
            path = Path(op["path"])
            if path.is_dir():
                self.client.log_artifacts(self._runs[key], str(path), artifact_path=op["artifact_path"])
            else:
                self.client.log_artifact(self._runs[key], str(path), artifact_path=op["artifact_path"])
        elif kind == "register":
            self._versions[op["name"]] = self._register(op["name"], self._runs[key], op["artifact_path"])
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
        state = {"tracking_uri": self.tracking_uri, "experiment": self.experiment,
                 "experiment_id": self.experiment_id, "runs": self._runs, "keys": sorted(self._keys),
                 "model_versions": self._versions}
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self._state_path)


_WRITERS: dict[str, RunWriter] = {}


def writer_for(tracking_uri: str, out_dir: Path, experiment: str) -> RunWriter:
    """The process's one writer for an output folder (every listener of the record in this process shares it)."""
    key = str(out_dir.resolve())
    if key not in _WRITERS:
        _WRITERS[key] = RunWriter(tracking_uri, out_dir.resolve(), experiment)
    return _WRITERS[key]


def sync_folder(out_dir: Path) -> dict[str, Any]:
    """``launch.py sync``: push a search's pending MLflow writes; returns the tracking info
    (``pending_writes`` is what is still waiting)."""
    writer = _folder_writer(out_dir)
    if writer is None:
        raise FileNotFoundError(f"{out_dir}: no {MLFLOW_RUNS_FILE}: not the output folder of a search")
    writer.sync()
    return _info(writer)


def log_report_folder(out_dir: Path, report_dir: Path) -> bool:
    """``launch.py report``: log a regenerated report to the search's parent run (journalled
    when the server is down); False when the folder has no parent run to log to."""
    writer = _folder_writer(out_dir)
    if writer is None or not writer.has_run(SEARCH_KEY):
        return False
    writer.log_artifacts(SEARCH_KEY, report_dir, artifact_path=REPORT_ARTIFACTS)
    writer.flush()
    return True


def _folder_writer(out_dir: Path) -> RunWriter | None:
    """The writer of a search's folder, from the tracking state it recorded; None if it has none."""
    state_path = out_dir / MLFLOW_RUNS_FILE
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    return writer_for(state["tracking_uri"], out_dir, state["experiment"])


def _info(writer: RunWriter) -> dict[str, Any]:
    writer.flush()  # experiment_id is set by the writer thread
    return {"tracking_uri": writer.tracking_uri, "experiment_id": writer.experiment_id,
            "parent_run_id": writer.run_id(SEARCH_KEY), "pending_writes": writer.pending,
            "model_versions": writer.model_versions}


class SearchTracker:
    """The search's parent run; hands out the record listener that writes the trials' child runs."""

    def __init__(self, tracking_uri: str, experiment: str, out_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.out_dir = out_dir
        self.experiment = experiment
        self.writer = writer_for(tracking_uri, out_dir, experiment)

    @property
    def parent_run_id(self) -> str | None:
        return self.writer.run_id(SEARCH_KEY)

    def start(self, run_name: str, spec: dict[str, Any], spec_file: Path) -> None:
        """Open the parent run, or reopen it when the search is continued."""
        if self.writer.has_run(SEARCH_KEY):
            self.writer.set_status(SEARCH_KEY, "RUNNING")
            return
        self.writer.create_run(SEARCH_KEY, run_name, {"hpsearch.role": "search"})
        self.writer.log(SEARCH_KEY, params=_flatten(spec))
        self.writer.log_artifacts(SEARCH_KEY, spec_file)

    def tag_warm_start(self, entries: list[dict[str, Any]]) -> None:
        """A warm-started search's parent run names the folders it started from (WarmStart.entry)."""
        self.writer.log(SEARCH_KEY, tags={WARM_START_TAG: json.dumps(entries)[:5000]})

    def tag_pareto(self, trial_ids: list[str]) -> None:
        """Tag the runs of the search's Pareto front (several objectives), to filter them by."""
        for trial_id in trial_ids:
            if self.writer.has_run(trial_id):
                self.writer.log(trial_id, tags={PARETO_TAG: "true"})

    def trial_runs(self, record: SearchRecord) -> "TrialRuns":
        return TrialRuns(self, record)

    def finish(self, best: dict[str, Any] | None, best_dir: Path | None, failed: bool = False,
               registered_model: str | None = None, test: dict[str, float] | None = None) -> None:
        """Close the parent run; with ``registered_model``, the best checkpoint (logged as the
        run's ``best_checkpoint`` artifact) becomes that model's next version."""
        if best is not None:
            self.writer.log(SEARCH_KEY, metrics=[("best_value", best["value"], 0),
                                                 *((k, v, 0) for k, v in (test or {}).items())],
                            tags={"hpsearch.best_trial_id": best["trial_id"], "hpsearch.best_epoch": str(best["epoch"])})
        if best_dir is not None:
            self.writer.log_artifacts(SEARCH_KEY, best_dir, artifact_path=BEST_ARTIFACTS)
            if registered_model:
                self.writer.register_model(SEARCH_KEY, registered_model, BEST_ARTIFACTS)
        self.writer.set_status(SEARCH_KEY, "FAILED" if failed else "FINISHED")

    def share_local_copy(self, best_dir: Path) -> None:
        """With the local store, MLflow's copy of best/ is a second copy of the best weights in
        the output folder: make its files hard links to best/'s (same bytes, no more disk)."""
        if not self.tracking_uri.startswith("sqlite:") or self.parent_run_id is None:
            return
        artifacts = Path(self.writer.client.get_run(self.parent_run_id).info.artifact_uri.removeprefix("file://"))
        for source in best_dir.rglob("*"):
            twin = artifacts / BEST_ARTIFACTS / source.relative_to(best_dir)
            if source.is_file() and twin.is_file() and not twin.samefile(source) and filecmp.cmp(source, twin, shallow=False):
                link = twin.with_name(f".{twin.name}.link")
                os.link(source, link)
                link.replace(twin)

    def interrupt(self) -> None:
        """The search stopped without finishing (Ctrl-C): its run says so until it continues."""
        self.writer.set_status(SEARCH_KEY, "KILLED")

    def log_report(self, report_dir: Path) -> None:
        """The search's report (charts, trials.csv, report.html) on the parent run."""
        self.writer.log_artifacts(SEARCH_KEY, report_dir, artifact_path=REPORT_ARTIFACTS)

    def info(self) -> dict[str, Any]:
        """What summary.json records about tracking."""
        return _info(self.writer)


class TrialRuns(RecordListener):
    """The record's projection into MLflow: one child run per trial, metrics every epoch,
    and how the trial ended (the record's status words) as its end tag."""

    def __init__(self, tracker: SearchTracker, record: SearchRecord) -> None:
        self.writer = tracker.writer
        self.out_dir = tracker.out_dir
        self.record = record

    def on_trial(self, trial: TrialRecord) -> None:
        if self.writer.has_run(trial.trial_id):  # a continued trial keeps its run
            self.writer.set_status(trial.trial_id, "RUNNING")
            return
        self.writer.create_run(trial.trial_id, trial.trial_id,
                               {TRIAL_ID_TAG: trial.trial_id, MLFLOW_RUN_NAME: trial.trial_id}, parent=SEARCH_KEY)
        self.writer.log(trial.trial_id, params=dict(trial.config))

    def on_epoch(self, trial: TrialRecord, epoch: int) -> None:
        metrics = [(k, float(v), epoch) for k, v in trial.epochs[epoch].items() if is_number(v) and k != "time"]
        self.writer.log(trial.trial_id, metrics=metrics)
        checkpoint = trial.checkpoints.get(epoch)
        if checkpoint:
            self._log_figures(trial.trial_id, self.out_dir / checkpoint, epoch)

    def on_failure(self, trial: TrialRecord, error: str) -> None:
        self.writer.log(trial.trial_id, tags={RETRIES_TAG: str(len(trial.failures)),
                                              "hpsearch.last_failure": error[:5000]})

    def on_end(self, trial: TrialRecord) -> None:
        self.writer.log(trial.trial_id, tags={END_TAG: trial.status, REASON_TAG: trial.why_ended[:5000]})
        self.writer.set_status(trial.trial_id, "FAILED" if trial.status == FAILED else "FINISHED")

    def interrupted(self) -> None:
        """The search stopped without finishing: unfinished trials' runs say so (KILLED,
        MLflow's word for a run cut short) until the same command continues them."""
        for trial in self.record.unfinished():
            if self.writer.has_run(trial.trial_id):
                self.writer.log(trial.trial_id, tags={END_TAG: INTERRUPTED, REASON_TAG: "the search was interrupted"})
                self.writer.set_status(trial.trial_id, "KILLED")

    def _log_figures(self, trial_id: str, checkpoint: Path, epoch: int) -> None:
        """Copy the checkpoint's figures out of it (the checkpoint may be deleted before a
        journalled write is sent) and log them to the trial's run, one folder per epoch."""
        source = checkpoint / FIGURES_DIR
        if not source.is_dir():
            return
        name = checkpoint_name(epoch)
        target = self.out_dir / FIGURES_DIR / trial_id / name
        shutil.copytree(source, target, dirs_exist_ok=True)
        self.writer.log_artifacts(trial_id, target, artifact_path=f"{FIGURES_DIR}/{name}")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "search":
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _now_ms() -> int:
    return int(time.time() * 1000)
