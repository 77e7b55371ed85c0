"""What a search needs on disk, estimated before Ray starts, and the refusal when the output
folder's file system clearly cannot hold it.

A checkpoint holds the model's state and the optimizer's (trainables/trial/checkpoints.py):
its size is counted on the meta device from the largest model the search can sample. While
the search runs, every trial keeps its latest and its best epoch's checkpoint (the record's
retention); the extra ones are deleted, and the rest slimmed, only when the search ends. So a
search needs, at most, two checkpoints per trial, one more being written per running trial,
best/ (hard links to a kept checkpoint where the file system allows), and its stores: the
record, the Optuna study and MLflow's store, which grow with the epochs.

The refusal counts one checkpoint per trial (what even a search whose trials all stop at their
first epoch keeps): below that, the search cannot end. A time-limited search's trial count is
only an upper bound (a search "of 10,000 trials in 20 minutes" runs what fits), so there the
refusal counts only the trials that certainly start, the first running ones. The message says
the full estimate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from models import create_model
from trainables.disk_space import free_bytes, size_text
from trainables.prepare.preflight import model_variants
from trainables.spec.schema import SearchSpec, SpecError

# A new mlflow.db (its schema, an experiment, a run) measured 0.95 MB and a new optuna.db
# 0.11 MB (MLflow 3, Optuna 4, this machine); with a margin:
STORES_BASE_BYTES = 1_500_000
# Each reported epoch: a record line (about 1 kB), MLflow's metric rows and the study's
# intermediate value. An estimate with a margin, not a measurement.
STORES_EPOCH_BYTES = 8_000
# config.yaml, figures and the file system's blocks around each checkpoint.
CHECKPOINT_OVERHEAD_BYTES = 64_000
# Optimizer state per parameter, in copies of the parameter (AdamW: two moments).
OPTIMIZER_COPIES = {"adamw": 2, "adam": 2, "sgd": 1}


@dataclass(frozen=True)
class SpaceNeed:
    checkpoint: int  # bytes of one checkpoint with its optimizer state
    trials: int  # trials still to write checkpoints
    concurrent: int  # trials running at once (each writes one more beside its kept ones)
    stores: int  # of all ``trials``
    certain: int  # trials that certainly start: all, or the first running ones of a time-limited search
    certain_stores: int  # the stores of those

    @property
    def time_limited(self) -> bool:
        return self.certain < self.trials

    @property
    def estimate(self) -> int:
        """What the search needs at most."""
        return self.checkpoint * (2 * self.trials + self.concurrent + 1) + self.stores

    @property
    def minimum(self) -> int:
        """Below this the search cannot end: one checkpoint per trial that certainly starts
        (all of them, or the first running ones of a time-limited search), the stores."""
        return self.checkpoint * (self.certain + self.concurrent) + self.certain_stores

    def describe(self) -> str:
        upto = "up to " if self.time_limited else ""
        return (f"about {size_text(self.estimate)} ({upto}{self.trials} trials x up to 2 checkpoints of "
                f"{size_text(self.checkpoint)} kept until the search ends, {self.concurrent} being written, "
                f"best/ and {size_text(self.stores)} of stores" +
                ("; fewer trials if the time limit ends the search first)" if self.time_limited else ")"))


def checkpoint_bytes(spec: SearchSpec) -> int:
    """One checkpoint of the largest model the search can sample: its state (parameters and
    buffers) and the optimizer's moments, counted on the meta device (nothing allocated)."""
    copies = OPTIMIZER_COPIES.get(spec.training.optimizer, 2)
    if spec.training.optimizer == "sgd" and not spec.training.momentum:
        copies = 0
    largest = 0
    for _, variant in model_variants(spec):
        with torch.device("meta"):
            model = create_model(variant.model.name, **variant.model.args)
        state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        moments = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad) * copies  # fp32 moments
        largest = max(largest, state + moments)
    return largest + CHECKPOINT_OVERHEAD_BYTES


def space_needed(spec: SearchSpec, out_dir: Path) -> SpaceNeed:
    """What the search still needs in ``out_dir`` (a continued search: its trials not ended yet)."""
    from trainables.results.record import SearchRecord
    from trainables.search.searcher import total_trials

    total = total_trials(spec)
    ended = sum(1 for t in SearchRecord(out_dir, spec.objective).trials.values() if t.ended)
    trials = max(0, total - ended)
    concurrent = min(trials, spec.budget.max_concurrent or os.cpu_count() or 1)
    certain = concurrent if spec.budget.time_limit_minutes is not None else trials

    def stores(count: int) -> int:
        return (STORES_BASE_BYTES if ended == 0 else 0) + count * spec.training.epochs * STORES_EPOCH_BYTES

    return SpaceNeed(checkpoint_bytes(spec), trials, concurrent, stores(trials), certain, stores(certain))


def check_free_space(spec: SearchSpec, out_dir: Path, where: str) -> int:
    """Refuse (SpecError, one line) a search whose output folder's file system clearly cannot
    hold it; returns the estimate of what it needs, for a full disk met later."""
    need = space_needed(spec, out_dir)
    free = free_bytes(out_dir)
    if free < need.minimum:
        raise SpecError(f"{where}: {out_dir}: {size_text(free)} free, and a search of this spec needs "
                        f"{need.describe()}; at least {size_text(need.minimum)} even if every trial stopped "
                        f"at its first epoch{' and the time limit came soon' if need.time_limited else ''}. "
                        f"Free some space, or choose another folder with --out")
    return need.estimate
