"""What a trial costs, measured from the record: so that no trial is started (or promoted)
that cannot reach its next rung before the search's time limit.

Trials are grouped by the value of ``resources.depends_on`` (the MAE's size: the sizes differ
60-fold in the cost of a step), or form one group. A group's seconds per epoch are measured
from its recorded epochs; a group not measured yet is estimated from the measured ones in
proportion to its parameter count (counted on the meta device), with a margin. The start of a
trial (actor, data, model, checkpoint) is measured as the time from its issue to its first
report, less that epoch's training. Before anything is measured, every trial may start.
"""

from __future__ import annotations

import math
import statistics
from functools import cached_property
from typing import Any

from trainables.results.record import TRIAL_SECONDS, SearchRecord, TrialRecord
from trainables.spec.schema import SearchSpec, trial_spec

# An unmeasured group's estimate is raised by a quarter. In three flagship runs (2026-12-05 to
# 07) an MAE size's seconds per epoch per parameter lay within 0.50 to 0.66 s per million
# parameters (about 15% either side of the median, every size from tiny to huge), and the
# large sizes' start (building the model, its first checkpoint) took 33 to 45 s against 10 s.
UNMEASURED_MARGIN = 1.25


class TrialCosts:
    def __init__(self, spec: SearchSpec, record: SearchRecord) -> None:
        self.spec = spec
        self.record = record
        self.group_path = spec.resources.depends_on

    def group(self, config: dict[str, Any]) -> Any:
        return config.get(self.group_path) if self.group_path else None

    def epoch_seconds(self, config: dict[str, Any], measured: dict[Any, float] | None = None) -> float | None:
        """Seconds an epoch of this configuration takes (training and validation)."""
        measured = self._measured() if measured is None else measured
        group = self.group(config)
        if group in measured:
            return measured[group]
        per_parameter = [seconds / self._parameters(g) for g, seconds in measured.items() if self._parameters(g)]
        if not per_parameter or not self._parameters(group):
            return None
        return statistics.median(per_parameter) * self._parameters(group)

    def start_seconds(self) -> float:
        """The median measured start of a trial (0 before any)."""
        starts = [s for t in self.record.trials.values() if (s := _start(t)) is not None]
        return statistics.median(starts) if starts else 0.0

    def seconds_to(self, config: dict[str, Any], done: float, target: float, time_key: str) -> float | None:
        """Wall seconds a trial of ``config`` that has counted ``done`` needs to count
        ``target`` (reports come once an epoch), start included; None when unknown."""
        measured = self._measured()  # a walk over the record's trials: once per estimate
        epoch = self.epoch_seconds(config, measured)
        if epoch is None:
            return None
        needed = target - done if time_key == "epoch" else (target - done) / max(epoch, 1e-9)
        seconds = self.start_seconds() + max(1, math.ceil(needed - 1e-9)) * epoch
        return seconds if self.group(config) in measured else seconds * UNMEASURED_MARGIN

    def _measured(self) -> dict[Any, float]:
        totals: dict[Any, list[float]] = {}
        for trial in self.record.trials.values():
            if trial.epochs:
                last = max(trial.epochs)
                seconds = trial.epochs[last].get(TRIAL_SECONDS)
                if isinstance(seconds, (int, float)) and seconds > 0:
                    totals.setdefault(self.group(trial.config), []).append(seconds / last)
        return {group: statistics.median(values) for group, values in totals.items()}

    def _parameters(self, group: Any) -> int | None:
        return self._parameter_counts.get(group)

    @cached_property
    def _parameter_counts(self) -> dict[Any, int]:
        import torch

        from models import create_model

        values = getattr(self.spec.search.get(self.group_path), "values", [None]) if self.group_path else [None]
        counts = {}
        for value in values:
            variant = trial_spec(self.spec, {self.group_path: value} if self.group_path else {})
            with torch.device("meta"):
                model = create_model(variant.model.name, **variant.model.args)
            counts[value] = sum(p.numel() for p in model.parameters())
        return counts


def _start(trial: TrialRecord) -> float | None:
    """Issue to first report, less the first epoch's own seconds (a fresh trial's only)."""
    first = trial.epochs.get(1)
    if trial.issued_at is None or first is None or first.get("resumed_from_epoch"):
        return None
    seconds = first.get(TRIAL_SECONDS)
    if not isinstance(seconds, (int, float)):
        return None
    return max(0.0, first["time"] - trial.issued_at - seconds)
