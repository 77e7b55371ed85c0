"""From the search's record to what a user keeps: summary.json, the best checkpoint in best/
(and, with several objectives, the Pareto front's others in pareto/<trial>/), and the
experiment matrix's table.

The best trial is the one whose best epoch is best (Tune's default ranks by the last value
reported, which punishes a trial that peaked and then drifted). With several objectives that is
the preferred point of the front: its best by the first objective (the quality), since nothing
beats it there; best/ holds it, pareto/<trial>/ every other point of the front.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainables.objective import Objective
from trainables.outputs import (
    BEST_DIR,
    PARETO_DIR,
    BEST_TRIAL_FILE,
    CHECKPOINT_CONFIG_FILE,
    CHECKPOINT_STATE_FILE,
    EXPERIMENT_SUMMARY_FILE,
    SUMMARY_FILE,
)
from trainables.results.front import front_entries
from trainables.results.record import SearchRecord, TrialRecord
from trainables.spec.schema import EXPERIMENT_KEY, SearchSpec


def trial_entry(record: SearchRecord, trial: TrialRecord, live: bool = False) -> dict[str, Any]:
    """A trial as summary.json (and the report's table) states it."""
    objective = record.objective
    checkpoint = trial.best_checkpoint(objective)
    return {
        "trial_id": trial.trial_id,
        "config": trial.config,
        "status": record.status(trial, live),
        "reason": trial.reason,
        "rung": trial.rung,
        "epochs": len(trial.epochs),
        "best_value": trial.best_value(objective),
        "best_epoch": trial.best_epoch(objective),
        "checkpoint": None if checkpoint is None else str(record.out_dir / checkpoint),
        "failures": len(trial.failures),  # crashes that were retried (or that ended it, for status failed)
        "last_failure": trial.failures[-1] if trial.failures else None,
    }


def export_best(record: SearchRecord) -> Path | None:
    """Copy the best epoch's checkpoint (weights and resolved config; its optimizer state is
    dropped when the search ends, see slim_checkpoint) to
    ``out/best``; None when no trial has a checkpoint. Files are hard links where the file
    system allows: the kept checkpoint and best/ then share their disk."""
    best = record.best_trial()
    if best is None:
        return None
    return _export(record, best, record.out_dir / BEST_DIR)


def export_front(record: SearchRecord, front: Sequence[TrialRecord]) -> list[Path]:
    """``pareto/<trial>/`` for each trial of the front but the one in best/, made as best/ is;
    pareto/ is emptied first (a continued search's front moves)."""
    folder = record.out_dir / PARETO_DIR
    shutil.rmtree(folder, ignore_errors=True)
    best = record.best_trial()
    others = [t for t in front if t is not best and t.best_checkpoint(record.objective)]
    return [_export(record, trial, folder / trial.trial_id) for trial in others]


def _export(record: SearchRecord, trial: TrialRecord, target: Path) -> Path:
    source = record.out_dir / trial.best_checkpoint(record.objective)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=_link_or_copy)
    (target / BEST_TRIAL_FILE).write_text(json.dumps(trial_entry(record, trial), indent=2, default=str))
    missing = [f for f in (CHECKPOINT_STATE_FILE, CHECKPOINT_CONFIG_FILE) if not (target / f).exists()]
    if missing:
        raise FileNotFoundError(f"{source}: checkpoint lacks {', '.join(missing)}")
    return target


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_summary(record: SearchRecord, experiment: str, best_dir: Path | None, mlflow_info: dict[str, Any],
                  extra_best: dict[str, Any] | None = None, warm_start: Sequence[dict[str, Any]] = (),
                  objectives: Sequence[Objective] = ()) -> Path:
    """summary.json: every trial as the record states it, the best, MLflow's ids, the
    earlier searches a warm-started search read (trainables/search/warm_start.py), and the
    objectives with the Pareto front (trainables/results/front.py; the best trial alone for one)."""
    best = record.best_trial()
    objective = record.objective
    summary = {
        "experiment": experiment,
        "metric": objective.metric,
        "mode": objective.mode,
        "state": record.state,
        "interrupted_by": record.interrupted_by,  # the signal (SIGINT, SIGTERM) when one interrupted it
        "trials": [trial_entry(record, t) for t in sorted(record.trials.values(), key=lambda t: t.trial_id)],
        "best": None if best is None else {
            "trial_id": best.trial_id,
            "value": best.best_value(objective),
            "epoch": best.best_epoch(objective),
            "checkpoint": str(best_dir) if best_dir else str(record.out_dir / best.best_checkpoint(objective)),
            "source_checkpoint": str(record.out_dir / best.best_checkpoint(objective)),
            "config": best.config,
            **(extra_best or {}),
        },
        "mlflow": mlflow_info,
        "warm_start": list(warm_start),
        "objectives": [{"metric": o.metric, "mode": o.mode} for o in objectives or [objective]],
        "pareto": front_entries(record, list(objectives) or [objective]),
    }
    path = record.out_dir / SUMMARY_FILE
    _write_atomically(path, summary)
    return path


def _write_atomically(path: Path, summary: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)  # scripts never read half a summary


def write_experiment_summary(record: SearchRecord, spec: SearchSpec) -> Path:
    """experiment_summary.csv: one row per trial of an experiment matrix, best first."""
    path = record.out_dir / EXPERIMENT_SUMMARY_FILE
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "trial_id", "status", f"best_{spec.metric}", "best_epoch", "epochs",
                         "overrides"])
        for trial in record.ranked():
            entry = trial_entry(record, trial)
            name = trial.config.get(EXPERIMENT_KEY, "")
            writer.writerow([name, trial.trial_id, entry["status"], entry["best_value"], entry["best_epoch"],
                             entry["epochs"], json.dumps(spec.experiments.get(name, {}))])
    return path


def update_tracking_info(out_dir: Path, info: dict[str, Any]) -> None:
    """Rewrite summary.json's ``mlflow`` block (after ``launch.py sync``)."""
    path = out_dir / SUMMARY_FILE
    if path.exists():
        summary = json.loads(path.read_text())
        summary["mlflow"] = info
        _write_atomically(path, summary)
