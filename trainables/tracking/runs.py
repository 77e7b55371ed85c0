"""The record's projection into MLflow: a parent run per search, a child run per trial,
written from the driver through the folder's one ``RunWriter`` (trainables/tracking/journal.py:
the writer thread and the offline journal for a server that is down).

One writer (a listener of the search's record, in the driver process) rather than one per trial process:
MLflow's default SQLite store contends under many concurrent writers, and Ray's
``MLflowLoggerCallback`` makes no parent run and marks early-stopped trials FINISHED
with no word of why (ray issues 19978, 46569, 64179).
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path
from typing import Any

from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from trainables.objective import is_number
from trainables.disk_space import DiskFault
from trainables.outputs import (
    FIGURES_DIR,
    MLFLOW_ARTIFACTS_DIR,
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
from trainables.tracking.journal import RunWriter, folder_writer, writer_for

SEARCH_KEY = "search"  # the parent run's key; children are keyed by trial id
BEST_ARTIFACTS = "best_checkpoint"  # the parent run's copy of best/, the registered model's source
TRIAL_ID_TAG = "hpsearch.trial_id"
END_TAG = "hpsearch.end"  # the record's status: finished | stopped early | failed | interrupted
REASON_TAG = "hpsearch.reason"
RETRIES_TAG = "hpsearch.retries"  # crashes of the trial that were retried
WARM_START_TAG = "hpsearch.warm_start"  # the parent run's: the earlier searches it started from, as JSON
PARETO_TAG = "hpsearch.pareto"  # "true" on the runs of a multi-objective search's Pareto front
REPORT_ARTIFACTS = "report"  # the parent run's folder for the search report


def ui_command(tracking_uri: str, out_dir: Path) -> str:
    if tracking_uri.startswith("sqlite:"):
        return (f"mlflow ui --backend-store-uri {tracking_uri} "
                f"--default-artifact-root {(out_dir / MLFLOW_ARTIFACTS_DIR).resolve()} --host 127.0.0.1")
    return f"open {tracking_uri} in a browser"


def sync_folder(out_dir: Path) -> dict[str, Any]:
    """``launch.py sync``: push a search's pending MLflow writes; returns the tracking info
    (``pending_writes`` is what is still waiting)."""
    writer = folder_writer(out_dir)
    if writer is None:
        raise FileNotFoundError(f"{out_dir}: no {MLFLOW_RUNS_FILE}: not the output folder of a search")
    writer.sync()
    return _info(writer)


def log_report_folder(out_dir: Path, report_dir: Path) -> str | None:
    """``launch.py report``: log a regenerated report to the search's parent run (journalled
    when the server is down); what was done, in a line, or None when the folder has no parent
    run to log to."""
    writer = folder_writer(out_dir)
    if writer is None or not writer.has_run(SEARCH_KEY):
        return None
    elsewhere = writer.artifacts_elsewhere()
    if elsewhere is not None:
        return (f"Not logged to MLflow: this folder's store keeps its artifacts in {elsewhere}, where the folder "
                f"was made (a folder moved or copied keeps MLflow's paths); the report is in {report_dir}.")
    writer.log_artifacts(SEARCH_KEY, report_dir, artifact_path=REPORT_ARTIFACTS)
    writer.flush()
    return f"Logged to the search's MLflow parent run (artifacts under {REPORT_ARTIFACTS}/)."


def _info(writer: RunWriter) -> dict[str, Any]:
    writer.flush()  # experiment_id is set by the writer thread
    return {"tracking_uri": writer.tracking_uri, "experiment_id": writer.experiment_id,
            "parent_run_id": writer.run_id(SEARCH_KEY), "pending_writes": writer.pending,
            "lost_writes": writer.lost, "model_versions": writer.model_versions}


class SearchTracker:
    """The search's parent run; hands out the record listener that writes the trials' child runs."""

    def __init__(self, tracking_uri: str, experiment: str, out_dir: Path, disk: DiskFault | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.out_dir = out_dir
        self.experiment = experiment
        self.writer = writer_for(tracking_uri, out_dir, experiment)
        if disk is not None:  # a journal or a local store on a full disk ends the search
            self.writer.disk = disk

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
        """The trials' runs, caught up with the record first (a continued search)."""
        runs = TrialRuns(self, record)
        runs.catch_up()
        return runs

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

    def catch_up(self) -> None:
        """Send what the record holds and MLflow never accepted: the writes of a launcher killed
        while they gathered or waited (trainables/tracking/journal.py). Each trial's run, its
        epochs past the last step MLflow took, and its end. An epoch carries the record's time,
        so one MLflow did take, sent again, stays one row. Figures are not sent again."""
        if not self.writer.knows_accepted:
            return
        for trial in self.record.trials.values():
            if not self.writer.has_run(trial.trial_id):
                self.on_trial(trial)
            logged = self.writer.logged_step(trial.trial_id)
            for epoch in sorted(e for e in trial.epochs if e > logged):
                self._log_epoch(trial, epoch)
            if trial.ended and not self.writer.closed(trial.trial_id):
                self.on_end(trial)

    def on_epoch(self, trial: TrialRecord, epoch: int) -> None:
        self._log_epoch(trial, epoch)
        checkpoint = trial.checkpoints.get(epoch)
        if checkpoint:
            self._log_figures(trial.trial_id, self.out_dir / checkpoint, epoch)

    def _log_epoch(self, trial: TrialRecord, epoch: int) -> None:
        row = trial.epochs[epoch]
        metrics = [(k, float(v), epoch) for k, v in row.items() if is_number(v) and k != "time"]
        self.writer.log(trial.trial_id, metrics=metrics, time_ms=int(row["time"] * 1000))

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

