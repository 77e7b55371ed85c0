"""Run one search end to end: connect to Ray, track in MLflow, tune, summarise, export.

Everything a search writes lands under its output folder: the resolved spec, Tune's
experiment folder (``tune/``), the MLflow store (unless a server is named), ``best/`` and
``summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.preflight import SPEC_FILE, TUNE_DIR
from trainables.spec import SearchSpec



@dataclass
class SearchOptions:
    out_dir: Path
    mlflow_uri: str | None = None  # None: a local SQLite store in the output folder
    address: str | None = None  # None: an embedded local Ray (or RAY_ADDRESS when set)
    resumed: bool = False
    verbose: int = 1  # Tune's console output: 0 silent, 1 live table, 2 every result
    # More Tune callbacks (a notebook's own, or the benchmarks' timing), after the service's.
    callbacks: list[Any] = field(default_factory=list)


def run_search(spec: SearchSpec, options: SearchOptions, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the search and return the summary written to ``summary.json``."""
    out_dir = options.out_dir.resolve()

    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from trainables.checkpoints import write_model_report
    from trainables.figures import write_best_figures
    from trainables.cluster import autoscaler_max_resources, connect
    from trainables.console import print_trials, progress_reporter, ray_banner
    from trainables.driver import make_trial_driver
    from trainables.metrics import SearchMetrics
    from trainables.resources import placement_for, plan_concurrency
    from trainables.retention import keep_only_best_checkpoints
    from trainables.searcher import build_scheduler, build_searcher, param_space, study_storage_url
    from trainables.snapshots import SnapshotBackup, repair
    from trainables.summary import (TRIAL_DIR_PREFIX, export_best, pick_best, summarize_trials,
                                    write_experiment_summary, write_summary)
    from trainables.tracking import SEARCH_KEY, SearchTracker, local_tracking_uri, ui_command

    dashboard_url, started_here = connect(options.address)
    try:
        cluster = ray.cluster_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        plan = plan_concurrency(spec, cluster, nodes, existing=not started_here,
                                grows_to=None if started_here else autoscaler_max_resources())
        gpus, concurrency = plan.gpus, plan.concurrency
        echo(f"{ray_banner(dashboard_url, cluster, concurrency, gpus)}\n  ({plan.note})")

        tracking_uri = options.mlflow_uri or local_tracking_uri(out_dir)
        tracker = SearchTracker(tracking_uri, spec.experiment, out_dir)
        tracker.start(f"{spec.experiment} {time.strftime('%Y-%m-%d %H:%M:%S')}", spec.model_dump(mode="json"),
                      out_dir / SPEC_FILE)
        parent = tracker.writer.run_id_if_created(SEARCH_KEY) or "being created"
        echo(f"MLflow: tracking URI {tracking_uri} (parent run {parent})\n"
             f"  open its UI with: {ui_command(tracking_uri, out_dir)}")

        if spec.searcher.type == "optuna" and not spec.experiments:
            echo(f"Optuna study {spec.experiment!r}: {study_storage_url(spec, out_dir)}\n"
                 f"  watch it live with: optuna-dashboard {study_storage_url(spec, out_dir)}  "
                 f"(pip install optuna-dashboard)")
        trainable = tune.with_resources(make_trial_driver(spec, gpus, str(out_dir / "ddp")), placement_for(spec, gpus))
        experiment_dir = out_dir / TUNE_DIR
        if options.resumed and tune.Tuner.can_restore(str(experiment_dir)):
            echo(f"Resuming the search in {out_dir}: finished trials are kept, unfinished ones continue.")
            for name in repair(experiment_dir):
                echo(f"  {name} was cut short when the search was killed; using its last complete copy.")
            tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(spec),
                tune_config=tune.TuneConfig(
                    metric=spec.metric,
                    mode=spec.mode,
                    search_alg=build_searcher(spec, out_dir, concurrency),
                    scheduler=build_scheduler(spec),
                    num_samples=spec.budget.trials,
                    max_concurrent_trials=concurrency,
                    time_budget_s=spec.budget.time_limit_minutes * 60 if spec.budget.time_limit_minutes else None,
                    # A one-worker trial runs in the trial actor; reusing it saves 1.5-3 s per trial.
                    reuse_actors=True,
                    trial_name_creator=lambda trial: trial.trial_id,
                    trial_dirname_creator=lambda trial: f"{TRIAL_DIR_PREFIX}{trial.trial_id}",
                ),
                run_config=tune.RunConfig(
                    name=TUNE_DIR,
                    storage_path=str(out_dir),
                    # Tune's result files (read back into its results); no TensorBoard files:
                    # see _without_tensorboard_logger.
                    callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), tracker.trial_callback(),
                               SnapshotBackup(experiment_dir),
                               SearchMetrics(spec.experiment, spec.metric, spec.mode), *options.callbacks],
                    # Tune keeps each trial's best checkpoint and its latest. It then snapshots the
                    # whole search after every checkpoint, so that a resume after kill -9 always
                    # continues from the last epoch: see bench/RESULTS.md for what that costs.
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=1, checkpoint_score_attribute=spec.metric, checkpoint_score_order=spec.mode
                    ),
                    failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
                    verbose=options.verbose,
                    progress_reporter=progress_reporter(spec),
                ),
            )
        started = time.monotonic()
        with _without_tensorboard_logger():
            results = tuner.fit()

        trials = summarize_trials(results, spec.metric, spec.mode)
        keep_only_best_checkpoints(trials, experiment_dir)
        best = pick_best(trials, spec.mode)
        if spec.experiments:
            echo(f"Experiment matrix: {write_experiment_summary(out_dir, trials, spec)}")
        best_dir = export_best(best, out_dir) if best else None
        report_path = write_model_report(best_dir) if best_dir else None
        if report_path:
            echo(f"Best model's report on its validation split: {report_path}")
        if best_dir:
            write_best_figures(best_dir)  # before tracker.finish logs best/ to the parent run
        tracker.finish(None if best is None else {"trial_id": best.trial_id, "value": best.best_value,
                                                  "epoch": best.best_epoch}, best_dir, failed=best is None,
                       registered_model=spec.registered_model)
        summary_path = write_summary(out_dir, trials, best, best_dir, tracker.info(), spec.model_dump(mode="json"))
        echo(print_trials(trials, best, spec, time.monotonic() - started, summary_path, best_dir))
        echo(_write_report(out_dir, tracker))
        if tracker.writer.pending:
            echo(f"MLflow: {tracker.writer.pending} writes are waiting for {tracking_uri}; "
                 f"once it is reachable, run: python launch.py sync {out_dir}")
        return json.loads(summary_path.read_text())
    finally:
        if started_here:
            ray.shutdown()


@contextmanager
def _without_tensorboard_logger() -> Iterator[None]:
    """Keep Tune from adding its TensorBoard logger (it adds CSV, JSON and TensorBoard loggers
    unless told not to add any; ``run_search`` passes the first two itself). TensorBoard files
    cost about 4 ms of Tune's event loop per report, where a trial waits for its next report,
    and MLflow already has every metric."""
    previous = os.environ.get(_NO_AUTO_LOGGERS)
    os.environ[_NO_AUTO_LOGGERS] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_NO_AUTO_LOGGERS, None)
        else:
            os.environ[_NO_AUTO_LOGGERS] = previous


_NO_AUTO_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


def _write_report(out_dir: Path, tracker: Any) -> str:
    """Write the search report and log it to the parent run. Drawing it cannot cost the search
    its results (summary and best checkpoint are written by now): a failure is reported, and
    ``launch.py report`` draws it again."""
    from trainables.report import HTML_FILE, write_report

    try:
        folder = write_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - any plotting or reading problem
        return f"Report: not written ({type(exc).__name__}: {exc}); retry with: python launch.py report {out_dir}"
    tracker.log_report(folder)
    return f"Report: {folder / HTML_FILE}"
