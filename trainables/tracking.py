"""All MLflow calls: a parent run per search, a child run per trial, written from the driver.

One writer (a Tune callback in the driver process) rather than one per trial process:
MLflow's default SQLite store contends under many concurrent writers, and Ray's
``MLflowLoggerCallback`` makes no parent run and marks early-stopped trials FINISHED
with no word of why (ray issues 19978, 46569, 64179).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray.tune import Callback

TRIAL_ID_TAG = "hpsearch.trial_id"
END_TAG = "hpsearch.end"  # finished | stopped early | failed
REASON_TAG = "hpsearch.reason"
RETRIES_TAG = "hpsearch.retries"  # crashes of the trial that were retried
MAX_PARAM_LENGTH = 500  # MLflow's limit on a parameter value


def local_tracking_uri(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"


def ui_command(tracking_uri: str, out_dir: Path) -> str:
    if tracking_uri.startswith("sqlite:"):
        return (f"mlflow ui --backend-store-uri {tracking_uri} "
                f"--default-artifact-root {(out_dir / 'mlflow-artifacts').resolve()} --host 127.0.0.1")
    return f"open {tracking_uri} in a browser"


class SearchTracker:
    """The search's parent run; hands out the callback that writes the trials' child runs."""

    def __init__(self, tracking_uri: str, experiment: str, out_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            # With a local store, artifacts live in the search's folder, not in ./mlruns.
            location = (out_dir / "mlflow-artifacts").resolve().as_uri() if tracking_uri.startswith("sqlite:") else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        self.parent_run_id: str | None = None

    def start(self, run_name: str, spec: dict[str, Any], spec_file: Path) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={"hpsearch.role": "search"})
        self.parent_run_id = run.info.run_id
        params = [Param(k, _param_text(v)) for k, v in _flatten(spec).items()]
        for start in range(0, len(params), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.parent_run_id, params=params[start:start + 100])
        self.client.log_artifact(self.parent_run_id, str(spec_file))
        return self.parent_run_id

    def trial_callback(self) -> "TrialRunsCallback":
        assert self.parent_run_id is not None, "start() the parent run first"
        return TrialRunsCallback(self.tracking_uri, self.experiment_id, self.parent_run_id)

    def finish(self, best: dict[str, Any] | None, best_dir: Path | None, failed: bool = False) -> None:
        assert self.parent_run_id is not None
        if best is not None:
            self.client.log_batch(
                self.parent_run_id,
                metrics=[Metric("best_value", best["value"], _now_ms(), 0)],
                tags=[RunTag("hpsearch.best_trial_id", best["trial_id"]), RunTag("hpsearch.best_epoch", str(best["epoch"]))],
            )
        if best_dir is not None:
            self.client.log_artifacts(self.parent_run_id, str(best_dir), artifact_path="best_checkpoint")
        status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
        self.client.set_terminated(self.parent_run_id, status=status)

    def child_run_ids(self) -> dict[str, str]:
        """trial id -> child run id, read back from MLflow."""
        return _child_runs(self.client, self.experiment_id, self.parent_run_id)


class TrialRunsCallback(Callback):
    """Tune callback (runs in the driver): one child run per trial, metrics every epoch."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._runs: dict[str, str] = {}
        self._client: MlflowClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment state; a live client does not pickle.
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def setup(self, **info: Any) -> None:
        # A resumed search finds its trials' runs again instead of opening second ones.
        self._runs.update(_child_runs(self.client, self.experiment_id, self.parent_run_id))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self._runs:  # a retried or resumed trial keeps its run
            self.client.update_run(self._runs[trial.trial_id], status="RUNNING")
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial.trial_id,
            tags={MLFLOW_PARENT_RUN_ID: self.parent_run_id, TRIAL_ID_TAG: trial.trial_id, MLFLOW_RUN_NAME: trial.trial_id},
        )
        self._runs[trial.trial_id] = run.info.run_id
        params = [Param(k, _param_text(v)) for k, v in trial.config.items()]
        if params:
            self.client.log_batch(run.info.run_id, params=params)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            return
        step = int(result.get("training_iteration", 0))
        now = _now_ms()
        metrics = [
            Metric(k, float(v), now, step)
            for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k not in _TUNE_BOOKKEEPING
        ]
        self.client.log_batch(run_id, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get("failed"):
            self._end(trial, "failed", last.get("stop_reason") or "failed", RunStatus.FAILED)
            return
        if last.get("finished"):
            end, reason = "finished", last.get("stop_reason") or "budget"
        else:
            end, reason = "stopped early", "stopped by the scheduler (ASHA) or the search time limit"
        self._end(trial, end, reason, RunStatus.FINISHED)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            return
        self.client.log_batch(run_id, tags=[RunTag(RETRIES_TAG, str(trial.num_failures)),
                                            RunTag("hpsearch.last_failure", _error_line(trial)[:5000])])

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "failed", _error_line(trial), RunStatus.FAILED)

    def _end(self, trial: Any, end: str, reason: str, status: int) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            return
        self.client.log_batch(run_id, tags=[RunTag(END_TAG, end), RunTag(REASON_TAG, reason[:5000])])
        self.client.set_terminated(run_id, status=RunStatus.to_string(status))


_TUNE_BOOKKEEPING = {"timestamp", "pid", "time_this_iter_s", "time_since_restore", "iterations_since_restore"}


def _child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'", max_results=50000
    )
    return {r.data.tags[TRIAL_ID_TAG]: r.info.run_id for r in runs if TRIAL_ID_TAG in r.data.tags}


def _error_line(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        text = Path(path).read_text().strip().splitlines() if path else []
    except OSError:
        text = []
    return text[-1] if text else "the trial raised an error"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "search":
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_text(value: Any) -> str:
    return str(value)[:MAX_PARAM_LENGTH]


def _now_ms() -> int:
    return int(time.time() * 1000)
