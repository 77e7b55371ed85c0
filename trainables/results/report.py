"""The search report, from the output folder alone: charts, a table of trials and one HTML page.

It reads only files, so it works on a finished search, an interrupted one and one still
running: ``spec.yaml``, the search's record (``record.jsonl``: every trial's config, epochs
and how it ended) and the Optuna study. Everything goes to ``<out>/report/``: the charts as
PNG, ``trials.csv`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from trainables.objective import Objective
from trainables.outputs import BEST_DIR, FIGURES_DIR, REPORT_DIR
from trainables.results import plots
from trainables.results.report_html import render_html
from trainables.results.search_data import SearchData, gather
from trainables.spec.distributions import optuna_scalar

CSV_FILE = "trials.csv"
HTML_FILE = "report.html"
IMPORTANCES_FILE = "importances.csv"
MIN_BUDGET_TRIALS = 3  # trials that must have reached a budget for comparing them there


@dataclass(frozen=True)
class Budget:
    """A common budget: every trial that reached it is compared by its value there. ``key`` is
    what the scheduler counts (a row's "epoch", or its training seconds), ``at`` how much."""

    key: str
    at: float
    trials: int

    @property
    def name(self) -> str:
        return f"epoch {self.at:g}" if self.key == "epoch" else f"{self.at:g} s of training"

    @property
    def label(self) -> str:
        return f"at {self.name} ({self.trials} trials reached it)"

    def value(self, rows: list[dict[str, Any]], metric: str) -> float | None:
        """A trial's value at the budget as ASHA saw it: at its first epoch that reached it."""
        return next((row[metric] for row in rows if row[self.key] >= self.at), None)


def common_budget(search: SearchData) -> Budget | None:
    """The highest ASHA rung (in the scheduler's own count, epochs or training seconds) that at
    least half of the trials with a value reached, and at least MIN_BUDGET_TRIALS of them; else
    (no ASHA, or too few trials at its first rung) the highest such epoch. A pruned search is
    then explained by all its trials, not by the few that finished."""
    if search.rungs:
        found = _highest_reached(search, search.time_attr, search.rungs)
        if found is not None:
            return found
    last_epochs = [t.rows[-1]["epoch"] for t in search.trials if t.rows]
    return _highest_reached(search, "epoch", range(1, max(last_epochs, default=0) + 1))


def _highest_reached(search: SearchData, key: str, candidates: Iterable[float]) -> Budget | None:
    reached = [t.rows[-1][key] for t in search.trials if t.rows]
    need = max(MIN_BUDGET_TRIALS, math.ceil(len(reached) / 2))
    found = None
    for at in sorted(candidates):
        count = sum(last >= at for last in reached)
        if count >= need:
            found = Budget(key, at, count)
    return found


def budget_study(search: SearchData, budget: Budget) -> optuna.Study:
    """A study of every trial that reached the budget, scored by its value there."""
    spec = search.spec
    distributions = {path: dist.to_optuna() for path, dist in spec.search.items()}
    with plots.quiet_optuna():
        study = optuna.create_study(direction=Objective(spec.metric, spec.mode).optuna_direction)
    for trial in search.trials:
        value = budget.value(trial.rows, spec.metric)
        if value is None:
            continue
        params = {path: optuna_scalar(trial.config[path]) for path in distributions if path in trial.config}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={p: distributions[p] for p in params},
                                                  value=value))
    return study


def write_report(out_dir: Path) -> Path:
    """Write ``<out>/report/`` (charts, trials.csv, report.html); returns that folder."""
    search = gather(out_dir)
    folder = out_dir / REPORT_DIR
    folder.mkdir(exist_ok=True)
    budget = common_budget(search)
    # At a common budget when enough trials reached one; otherwise the final scores.
    study, label = (budget_study(search, budget), budget.label) if budget else (search.study, "final scores")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # the same numbers in the chart and the file
    write_importances(study, evaluator, budget, folder / IMPORTANCES_FILE)
    charts = {
        "learning_curves": plots.learning_curves(search),
        "best_so_far": plots.best_so_far(search),
        "parallel_coordinates": plots.parallel_coordinates(study, label),
        "param_importances": plots.param_importances(study, evaluator, label),
    }
    images = {}
    for name, figure in charts.items():
        images[name] = folder / f"{name}.png"
        figure.savefig(images[name], dpi=90, bbox_inches="tight")  # Optuna's long parameter names
        plots.close(figure)
    header, rows = trial_table(search)
    with (folder / CSV_FILE).open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    (folder / HTML_FILE).write_text(render_html(search, images, header, rows, best_trial_figures(search)))
    return folder


def write_importances(study: optuna.Study, evaluator: Any, budget: Budget | None, path: Path) -> None:
    """importances.csv: hyperparameter, importance, budget (where the trials were compared, or 'final')."""
    scored = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator) if len(scored) >= 2 else {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["hyperparameter", "importance", "budget"])
        for name, value in importances.items():
            writer.writerow([name, value, budget.name if budget else "final"])


def trial_table(search: SearchData) -> tuple[list[str], list[list[Any]]]:
    """One row per trial, best first (trials without a value last)."""
    objective = Objective(search.metric, search.mode)
    ranked = objective.ranked(search.trials, key=lambda t: t.best_value)
    header = ["trial_id", "status", "reason", "epochs", f"best_{search.metric}", "best_epoch", *search.params]
    rows = [[t.trial_id, t.status, t.reason, len(t.rows), t.best_value, t.best_epoch,
             *(t.config.get(p) for p in search.params)] for t in ranked]
    if any(objective.baseline in row for t in search.trials for row in t.rows):
        # The model's trivial baseline at the best epoch, next to the best value: how far from trivial.
        header.insert(6, f"{objective.baseline}_at_best_epoch")
        for row, trial in zip(rows, ranked, strict=True):
            at_best = next((r for r in trial.rows if r["epoch"] == trial.best_epoch), {})
            row.insert(6, at_best.get(objective.baseline))
    return header, rows


def best_trial_figures(search: SearchData) -> list[Path]:
    """The best trial's validation figures: from ``best/`` once the search has finished,
    else the latest epoch the tracking callback copied out of its checkpoints."""
    if search.best_trial_id is None:
        return []
    exported = search.out_dir / BEST_DIR / FIGURES_DIR
    if search.finished and exported.is_dir():
        return sorted(exported.glob("*.png"))
    epochs = sorted((search.out_dir / FIGURES_DIR / search.best_trial_id).glob("epoch_*"))
    return sorted(epochs[-1].glob("*.png")) if epochs else []
