"""Every name in a search's output folder, the product's contract with scripts: defined here
once and imported everywhere (no Ray, no torch, so offline readers stay light).

    <out>/
      spec.yaml              the resolved spec as run
      split.json             the seeded train/validation split
      record.jsonl           the search's record: every trial's config, epochs, checkpoints, end
      search.lock            held (flock) by the launch that runs the search; search.lock.json says who
      trials/<id>/epoch_NNN/ each trial's checkpoints (its latest and best while it runs)
      best/                  the best epoch's checkpoint, exported
      pareto/<id>/           with several objectives: the other Pareto-front trials' checkpoints
      summary.json           written from the record at the end (and at an interruption)
      report/                the search report
      figures/<id>/epoch_NNN the validation figures logged to each trial's MLflow run
      optuna.db              the Optuna study (a projection of the record)
      mlflow.db, mlflow-artifacts/, mlflow-runs.json, mlflow-pending.jsonl   MLflow
      tune/                  Ray Tune's scratch folder (nothing the service reads back)
"""

from __future__ import annotations

from pathlib import Path

SPEC_FILE = "spec.yaml"
SPLIT_FILE = "split.json"
RECORD_FILE = "record.jsonl"
LOCK_FILE = "search.lock"
LOCK_HOLDER_FILE = "search.lock.json"
TRIALS_DIR = "trials"
BEST_DIR = "best"
PARETO_DIR = "pareto"
SUMMARY_FILE = "summary.json"
EXPERIMENT_SUMMARY_FILE = "experiment_summary.csv"
REPORT_DIR = "report"
FIGURES_DIR = "figures"  # also the folder name inside a checkpoint
OPTUNA_DB = "optuna.db"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS_DIR = "mlflow-artifacts"
MLFLOW_RUNS_FILE = "mlflow-runs.json"
MLFLOW_JOURNAL_FILE = "mlflow-pending.jsonl"
TUNE_DIR = "tune"
DDP_DIR = "ddp"  # Ray Train's run folders of DDP trials

# Inside a checkpoint folder.
CHECKPOINT_STATE_FILE = "checkpoint.pt"
CHECKPOINT_CONFIG_FILE = "config.yaml"
MODEL_EVALUATION_FILE = "evaluation.json"  # the best model's own evaluation on its validation split
BEST_TRIAL_FILE = "trial.json"  # in best/: the trial it came from


def trial_dir(out_dir: Path, trial_id: str) -> Path:
    return out_dir / TRIALS_DIR / trial_id


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}"


def study_storage_url(storage: str | None, out_dir: Path) -> str:
    """The Optuna study's database: the spec's ``searcher.storage``, else optuna.db here."""
    return storage or f"sqlite:///{(out_dir / OPTUNA_DB).resolve()}"
