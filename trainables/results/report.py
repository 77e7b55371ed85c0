"""The search report, from the output folder alone: charts, a table of trials and one HTML page.

It reads only files, so it works on a finished search, an interrupted one and one still
running: ``spec.yaml``, the search's record (``record.jsonl``: every trial's config, epochs
and how it ended) and the Optuna study. Everything goes to ``<out>/report/``: the charts as
PNG, ``trials.csv`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import csv
import math
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
    """A common budget: the epoch at which every trial that reached it is compared."""

    epoch: int
    trials: int

    @property
    def label(self) -> str:
        return f"at epoch {self.epoch} ({self.trials} trials reached it)"


def common_budget(search: SearchData) -> Budget | None:
    """The highest epoch (an ASHA rung, when the scheduler counts epochs) that at least half of
    the trials with a value reached, and at least MIN_BUDGET_TRIALS of them: a pruned search
    is then explained by all its trials, not by the few that finished."""
    reached = [t.rows[-1]["epoch"] for t in search.trials if t.rows]
    if not reached:
        return None
    candidates = [int(r) for r in search.rungs] if search.rungs and search.time_attr == "epoch" \
        else list(range(1, max(reached) + 1))
    need = max(MIN_BUDGET_TRIALS, math.ceil(len(reached) / 2))
    found = None
    for epoch in sorted(candidates):
        count = sum(last >= epoch for last in reached)
        if count >= need:
            found = Budget(epoch, count)
    return found


def budget_study(search: SearchData, budget: Budget) -> optuna.Study:
    """A study of every trial that reached the budget, scored by its value at that epoch."""
    spec = search.spec
    distributions = {path: dist.to_optuna() for path, dist in spec.search.items()}
    study = optuna.create_study(direction=Objective(spec.metric, spec.mode).optuna_direction)
    for trial in search.trials:
        value = next((row[spec.metric] for row in trial.rows if row["epoch"] == budget.epoch), None)
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
    """importances.csv: hyperparameter, importance, budget (the epoch compared at, or 'final')."""
    scored = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator) if len(scored) >= 2 else {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["hyperparameter", "importance", "budget"])
        for name, value in importances.items():
            writer.writerow([name, value, f"epoch {budget.epoch}" if budget else "final"])


def trial_table(search: SearchData) -> tuple[list[str], list[list[Any]]]:
    """One row per trial, best first (trials without a value last)."""
    ranked = Objective(search.metric, search.mode).ranked(search.trials, key=lambda t: t.best_value)
    header = ["trial_id", "status", "reason", "epochs", f"best_{search.metric}", "best_epoch", *search.params]
    rows = [[t.trial_id, t.status, t.reason, len(t.rows), t.best_value, t.best_epoch,
             *(t.config.get(p) for p in search.params)] for t in ranked]
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
