"""The end of a search, from its record: interrupted, or finished (time limit included)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainables.results.record import (
    BY_SCHEDULER,
    BY_TIME_LIMIT,
    SEARCH_FINISHED,
    SEARCH_INTERRUPTED,
    STOPPED,
    SearchRecord,
)
from trainables.outputs import RECORD_FILE, SUMMARY_FILE
from trainables.results.front import pareto_front
from trainables.results.summary import (
    export_best,
    export_front,
    write_experiment_summary,
    write_summary,
)
from trainables.search.console import print_trials
from trainables.spec.schema import SearchSpec


def end_search(spec: SearchSpec, record: SearchRecord, tracker: Any, trial_runs: Any, interrupted: bool,
               seconds: float, echo: Callable[[str], None], signal_name: str | None = None,
               warm_start: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Write what the search leaves and return its summary.

    Interrupted: unfinished trials stay unfinished (their runs KILLED, their checkpoints
    kept), and summary.json says interrupted (and by which signal); nothing is exported. Finished: trials the time
    limit cut off end as stopped early, checkpoints are pruned to the best of the kept trials,
    the best is exported to best/ (with several objectives, the Pareto front's others to
    pareto/<trial>/, their checkpoints kept too), and MLflow, summary.json and the report are written.
    """
    if interrupted:
        trial_runs.interrupted()
        tracker.interrupt()
        record.close(SEARCH_INTERRUPTED, signal_name)
        path = write_summary(record, spec.experiment, None, tracker.info(), warm_start=warm_start,
                             objectives=spec.objectives)
        echo(print_trials(record, spec, seconds, path, None))
        _tell_lost(tracker, echo)
        echo(f"Interrupted: {len(record.unfinished())} unfinished trial(s) keep their last completed epoch "
             f"({sum(1 for t in record.trials.values() if t.paused)} of them paused at a rung). "
             f"Run the same command again to continue the search.")
        return json.loads(path.read_text())

    from trainables.trial.checkpoints import slim_checkpoint, write_model_evaluation
    from trainables.trial.figures import write_best_figures

    for trial in record.unfinished():
        if trial.paused:  # never promoted: stopped where the scheduler paused it
            record.end_trial(trial.trial_id, STOPPED, BY_SCHEDULER, rung=trial.rung)
        else:  # the search's time limit ended it
            record.end_trial(trial.trial_id, STOPPED, BY_TIME_LIMIT)
    front = pareto_front(record, spec.objectives) if spec.multi_objective else []
    record.prune(spec.budget.keep_checkpoints, also=[t.trial_id for t in front])
    for trial in record.trials.values():  # kept for loading and fine-tuning, never to train on
        for folder in trial.checkpoints.values():
            slim_checkpoint(record.out_dir / folder)
    if spec.experiments:
        echo(f"Experiment matrix: {write_experiment_summary(record, spec)}")
    best_dir = export_best(record)
    front_dirs = export_front(record, front)
    if front_dirs:
        echo(f"Pareto front: best/ and {len(front_dirs)} more in {record.out_dir / front_dirs[0].parent.name}/")
    tracker.tag_pareto([t.trial_id for t in front])
    test = None
    if best_dir:
        test = _test_metrics(best_dir)
        if test:
            echo("Best model on the held-out test split (touched once, now): "
                 + ", ".join(f"{k}={v:.4g}" for k, v in test.items()))
        evaluation_path = write_model_evaluation(best_dir)
        if evaluation_path:
            echo(f"Best model's evaluation on its validation split: {evaluation_path}")
        write_best_figures(best_dir)  # before tracker.finish logs best/ to the parent run
    best = record.best_trial()
    tracker.finish(None if best is None else {"trial_id": best.trial_id, "value": best.best_value(record.objective),
                                              "epoch": best.best_epoch(record.objective)},
                   best_dir, failed=best is None, registered_model=spec.registered_model, test=test)
    if best_dir:
        tracker.writer.flush()  # the copy is made on the writer thread
        tracker.share_local_copy(best_dir)
    record.close(SEARCH_FINISHED)
    path = write_summary(record, spec.experiment, best_dir, tracker.info(), {"test": test} if test else None,
                         warm_start, spec.objectives)
    echo(print_trials(record, spec, seconds, path, best_dir))
    echo(_write_report(record.out_dir, tracker))
    if tracker.writer.pending:
        echo(f"MLflow: {tracker.writer.pending} writes are waiting for {tracker.tracking_uri}; "
             f"once it is reachable, run: python launch.py sync {record.out_dir}")
    _tell_lost(tracker, echo)
    return json.loads(path.read_text())


def _tell_lost(tracker: Any, echo: Callable[[str], None]) -> None:
    """MLflow writes that could be neither sent nor journaled (summary.json's ``lost_writes``)
    are missing from MLflow for good; the record, summary.json and the report still hold them."""
    if tracker.writer.lost:
        echo(f"MLflow: {tracker.writer.lost} writes could be neither sent to {tracker.tracking_uri} nor kept "
             f"for later; its runs lack them, while {RECORD_FILE}, {SUMMARY_FILE} and the report hold everything.")


def _test_metrics(best_dir: Path) -> dict[str, float] | None:
    """The exported model's metrics on the data's held-out test split (kinds with an official
    one, e.g. mnist1d), named test_<metric>; None without a test split. Selection used the
    validation split only: this is the first and only time a model meets the test split."""
    import torch

    from data import build_splits
    from trainables.spec.schema import SearchSpec
    from trainables.trial.checkpoints import load_config, load_model
    from trainables.trial.loop import evaluate

    spec = SearchSpec.model_validate(load_config(best_dir))
    test = build_splits(spec.data).test
    if test is None:
        return None
    loader = torch.utils.data.DataLoader(test, batch_size=spec.training.batch_size)
    return {f"test_{k}": v for k, v in evaluate(load_model(best_dir), loader, torch.device("cpu")).items()}


def _write_report(out_dir: Path, tracker: Any) -> str:
    """Write the search report and log it to the parent run. Drawing it cannot cost the search
    its results (summary and best checkpoint are written by now): a failure is reported, and
    ``launch.py report`` draws it again."""
    from trainables.results.report import HTML_FILE, write_report

    try:
        folder = write_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - any plotting or reading problem
        return f"Report: not written ({type(exc).__name__}: {exc}); retry with: python launch.py report {out_dir}"
    tracker.log_report(folder)
    return f"Report: {folder / HTML_FILE}"
