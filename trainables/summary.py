"""From Tune's results to what a user keeps: summary.json, the best checkpoint in best/, a table.

The best trial is the one whose best epoch is best (Tune's default ranks by the last value
reported, which punishes a trial that peaked and then drifted).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray.train import Checkpoint
from ray.tune import ResultGrid
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from trainables.checkpoints import CONFIG_FILE, STATE_FILE
from trainables.preflight import SUMMARY_FILE
from trainables.spec import EXPERIMENT_KEY

FINISHED, STOPPED_EARLY, FAILED = "finished", "stopped early", "failed"
TRIAL_DIR_PREFIX = "trial_"
EXPERIMENT_SUMMARY_FILE = "experiment_summary.csv"  # Tune's trial folders are named TRIAL_DIR_PREFIX + trial id


@dataclass
class TrialSummary:
    trial_id: str
    config: dict[str, Any]
    status: str  # finished | stopped early | failed
    reason: str  # budget | patience | scheduler | the error's last line
    epochs: int  # epochs reported
    best_value: float | None
    best_epoch: int | None
    checkpoint: str | None  # the best epoch's checkpoint folder
    failures: int  # crashes that were retried (or that ended it, for status failed)
    last_failure: str | None  # the last crash's last line


def summarize_trials(results: ResultGrid, metric: str, mode: str) -> list[TrialSummary]:
    return sorted((_summarize(r, metric, mode) for r in results), key=lambda t: t.trial_id)


def pick_best(trials: list[TrialSummary], mode: str) -> TrialSummary | None:
    scored = [t for t in trials if t.best_value is not None and t.checkpoint]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda t: t.best_value)


def export_best(best: TrialSummary, out_dir: Path) -> Path:
    """Copy the best checkpoint (weights, optimizer state, resolved config) to ``out/best``."""
    target = out_dir / "best"
    if target.exists():
        shutil.rmtree(target)
    Checkpoint(best.checkpoint).to_directory(str(target))
    (target / "trial.json").write_text(json.dumps(asdict(best), indent=2, default=str))
    missing = [f for f in (STATE_FILE, CONFIG_FILE) if not (target / f).exists()]
    if missing:
        raise FileNotFoundError(f"{best.checkpoint}: checkpoint lacks {', '.join(missing)}")
    return target


def write_summary(out_dir: Path, trials: list[TrialSummary], best: TrialSummary | None, best_dir: Path | None,
                  mlflow_info: dict[str, Any], spec: dict[str, Any]) -> Path:
    summary = {
        "experiment": spec["experiment"],
        "metric": spec["metric"],
        "mode": spec["mode"],
        "trials": [asdict(t) for t in trials],
        "best": None if best is None else {
            "trial_id": best.trial_id,
            "value": best.best_value,
            "epoch": best.best_epoch,
            "checkpoint": str(best_dir) if best_dir else best.checkpoint,
            "source_checkpoint": best.checkpoint,
            "config": best.config,
        },
        "mlflow": mlflow_info,
    }
    path = out_dir / SUMMARY_FILE
    _write_atomically(path, summary)
    return path


def _write_atomically(path: Path, summary: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)  # scripts never read half a summary


def write_experiment_summary(out_dir: Path, trials: list[TrialSummary], spec: Any) -> Path:
    """experiment_summary.csv: one row per trial of an experiment matrix, best first."""
    path = out_dir / EXPERIMENT_SUMMARY_FILE
    sign = 1 if spec.mode == "min" else -1
    ranked = sorted(trials, key=lambda t: (t.best_value is None, sign * (t.best_value or 0.0)))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "trial_id", "status", f"best_{spec.metric}", "best_epoch", "epochs",
                         "overrides"])
        for trial in ranked:
            name = trial.config.get(EXPERIMENT_KEY, "")
            writer.writerow([name, trial.trial_id, trial.status, trial.best_value, trial.best_epoch, trial.epochs,
                             json.dumps(spec.experiments.get(name, {}))])
    return path


def update_tracking_info(out_dir: Path, info: dict[str, Any]) -> None:
    """Rewrite summary.json's ``mlflow`` block (after ``launch.py sync``)."""
    path = out_dir / SUMMARY_FILE
    if path.exists():
        summary = json.loads(path.read_text())
        summary["mlflow"] = info
        _write_atomically(path, summary)


def _summarize(result: Any, metric: str, mode: str) -> TrialSummary:
    frame = result.metrics_dataframe
    last = result.metrics or {}
    # From the folder name: a trial that failed before its first report has no metrics
    # of its own to carry the id.
    trial_id = Path(result.path).name.removeprefix(TRIAL_DIR_PREFIX)
    config = dict(result.config or {})
    rows = [] if frame is None or metric not in getattr(frame, "columns", ()) else frame.to_dict("records")
    rows = [r for r in rows if _is_number(r.get(metric))]
    best_row, checkpoint = _best_row_with_checkpoint(result, rows, metric, mode)
    if result.error is not None:
        status, reason = FAILED, _error_line(result.error)
    elif last.get("failed"):
        status, reason = FAILED, last.get("stop_reason") or "failed"
    elif last.get("finished"):
        status, reason = FINISHED, last.get("stop_reason") or "budget"
    else:
        status, reason = STOPPED_EARLY, "scheduler"
    failures = _failures(Path(result.path))
    return TrialSummary(
        trial_id=trial_id,
        config=config,
        status=status,
        reason=reason,
        epochs=len(rows),
        best_value=None if best_row is None else float(best_row[metric]),
        best_epoch=None if best_row is None else int(best_row.get("epoch", best_row.get("training_iteration"))),
        checkpoint=checkpoint,
        failures=len(failures),
        last_failure=failures[-1] if failures else None,
    )


def _best_row_with_checkpoint(result: Any, rows: list[dict[str, Any]], metric: str,
                              mode: str) -> tuple[dict[str, Any] | None, str | None]:
    """The best epoch's row and its checkpoint folder.

    When epochs tie on the best value, the checkpoint manager keeps only one of them (the
    latest, usually): the tied epoch whose checkpoint survives is the one reported.
    """
    if not rows:
        return None, None
    best_value = (min if mode == "min" else max)(r[metric] for r in rows)
    tied = [r for r in rows if r[metric] == best_value]
    # Only checkpoints still on disk count (a resumed search's list may name deleted ones).
    kept = {metrics.get("epoch"): checkpoint.path for checkpoint, metrics in result.best_checkpoints or []
            if _exists(checkpoint)}
    for row in tied:
        # DDP trials: Train kept the checkpoint and Tune got its path as a metric.
        path = row.get(CHECKPOINT_PATH_KEY)
        if isinstance(path, str) and Path(path).exists():
            return row, path
        # One-worker trials: Tune kept it; match on the epoch it was written at.
        if row.get("epoch") in kept:
            return row, kept[row["epoch"]]
    return tied[0], None


def _exists(checkpoint: Any) -> bool:
    from pyarrow.fs import FileType

    return checkpoint.filesystem.get_file_info(checkpoint.path).type != FileType.NotFound


def _failures(trial_dir: Path) -> list[str]:
    """Each crash's last line, from the error.txt Tune appends to at every failure (kept
    after a successful retry, unlike Result.error)."""
    path = trial_dir / "error.txt"
    if not path.exists():
        return []
    failures = []
    for block in path.read_text().split("Failure # ")[1:]:
        lines = [line for line in block.strip().splitlines()[1:] if line.strip()]
        failures.append(lines[-1][:500] if lines else "unknown error")
    return failures


def _error_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
