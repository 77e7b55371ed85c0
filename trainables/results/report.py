"""The search report, from the output folder alone: charts, a table of trials and one HTML page.

It reads only files, so it works on a finished search, an interrupted one and one still
running: ``spec.yaml``, the search's record (``record.jsonl``: every trial's config, epochs
and how it ended) and the Optuna study. Everything goes to ``<out>/report/``: the charts as
PNG, ``trials.csv`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from trainables.outputs import BEST_DIR, FIGURES_DIR, REPORT_DIR
from trainables.results import plots
from trainables.results.record import FINISHED
from trainables.results.report_html import CHOICE_PREFIX, render_html
from trainables.results.search_data import SearchData, gather, quiet_optuna
from trainables.spec.distributions import Choice, Grid, optuna_scalar

CSV_FILE = "trials.csv"
PARETO_CSV_FILE = "pareto.csv"  # with several objectives: the front, one row per trial
HTML_FILE = "report.html"
IMPORTANCES_FILE = "importances.csv"
MIN_BUDGET_TRIALS = 3  # trials that must have reached a budget for comparing them there
# Trials that must share a budget before the report draws importances. fANOVA fits a random
# forest to the trials' values and splits their variance among the hyperparameters; with a
# handful of trials (issue 18: two trials gave "weight_decay 0.49, size 0.0") it ranks noise
# as a finding. 8 is the fewest that gives each of a few hyperparameters more than one split.
MIN_IMPORTANCE_TRIALS = 8
# Two hyperparameters whose values rose and fell together over the compared trials (|Spearman's
# rho| at least this: half their rank variance shared) cannot be told apart by fANOVA, which
# may give either one's effect to the other. With few trials this happens by chance: the
# flagship's 8 trials at its first rung had lr and weight_decay at rho -0.74.
CONFOUNDED_RHO = 0.7
# Where a search without rungs compares its choices: these fractions of its epoch budget.
NO_RUNG_FRACTIONS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Budget:
    """A common budget: every trial that reached it is compared by its value there. ``key`` is
    what the scheduler counts (a row's "epoch", or its training seconds), ``at`` how much."""

    key: str
    at: float
    trials: int
    # The next budget: a trial whose first row at or past ``at`` lies at or past ``until`` (one
    # long epoch passed this budget and the next) was never measured here, and has no value.
    until: float = math.inf

    @property
    def name(self) -> str:
        return f"epoch {self.at:g}" if self.key == "epoch" else f"{self.at:g} s of training"

    @property
    def label(self) -> str:
        return f"at {self.name} ({self.trials} trials reached it)"

    def value(self, rows: list[dict[str, Any]], metric: str, finished: bool = False) -> float | None:
        """A trial's value at the budget as the scheduler saw it: at its first epoch that
        reached it, if that epoch came before the next budget (rung_at decides the same).
        At the last budget (no next one: the end of training), a ``finished`` trial that ended
        its epochs before counting ``at`` (tiny in the flagship search: 320 epochs in 217 of
        max_t's 360 s) counts with its last value."""
        row = next((row for row in rows if row[self.key] >= self.at), None)
        if row is None and finished and rows and math.isinf(self.until):
            row = rows[-1]
        return row[metric] if row is not None and row[self.key] < self.until else None


def common_budget(search: SearchData, min_trials: int = MIN_BUDGET_TRIALS) -> Budget | None:
    """The highest rung of the scheduler (in its own count, epochs or training seconds) that at
    least half of the trials with a value reached, and at least ``min_trials`` of them; else
    (no rungs, or too few trials at the first) the highest such epoch. A pruned search is
    then explained by all its trials, not by the few that finished. The one place that decides
    where trials are compared: parallel coordinates ask for MIN_BUDGET_TRIALS, importances
    for MIN_IMPORTANCE_TRIALS."""
    if search.rungs:
        found = _highest_reached(search, search.time_attr, search.rungs, min_trials, end=search.spec.max_t)
        if found is not None:
            return found
    last_epochs = [t.rows[-1]["epoch"] for t in search.trials if t.rows]
    return _highest_reached(search, "epoch", range(1, max(last_epochs, default=0) + 1), min_trials)


def importance_budget(search: SearchData) -> tuple[Budget | None, str]:
    """Where importances are measured, or None and one line saying why there are none."""
    budget = common_budget(search, MIN_IMPORTANCE_TRIALS)
    if budget is not None:
        return budget, ""
    scored = [t for t in search.trials if t.rows]
    why = (f"No importances: they need at least {MIN_IMPORTANCE_TRIALS} trials measured at one budget "
           f"(with fewer, fANOVA ranks noise); ")
    if not scored:
        return None, why + "no trial has a value yet."
    why += f"only {len(scored)} trial{'s' if len(scored) != 1 else ''} {'have' if len(scored) != 1 else 'has'} a value"
    if search.rungs:
        first = Budget(search.time_attr, search.rungs[0], 0, until=[*search.rungs, search.spec.max_t][1])
        reached = sum(first.value(t.rows, search.metric) is not None for t in scored)
        why += f", {reached} of them reached the first rung ({first.name})"
    return None, why + "."


def _highest_reached(search: SearchData, key: str, candidates: Iterable[float], min_trials: int,
                     end: float = math.inf) -> Budget | None:
    scored = [t for t in search.trials if t.rows]
    need = max(min_trials, math.ceil(len(scored) / 2))
    found = None
    positions = sorted(candidates)
    for at, until in zip(positions, [*positions[1:], end]):
        count = sum(Budget(key, at, 0, until).value(t.rows, search.metric) is not None for t in scored)
        if count >= need:
            found = Budget(key, at, count, until)
    return found


@dataclass(frozen=True)
class ChoiceAtBudgets:
    """One choice (or grid) parameter's values compared at equal training. At each budget (each
    rung of the scheduler, then its max_t), every trial that reached it counts with its value
    there, as the scheduler saw it; ``best`` is each value's best trial there (by the mode)."""

    param: str
    values: list[Any]  # the spec's values, in its order
    budgets: list[Budget]  # where compared; ``trials``: how many trials (of any value) reached it
    sampled: list[int]  # per value: how many trials it had
    points: list[list[list[tuple[str, float]]]]  # [value][budget] -> (trial id, metric at the budget)
    best: list[list[float | None]]  # [value][budget] -> the best of those points, None if none

    def reached(self, index: int) -> bool:
        """Whether any trial of value ``index`` reached any budget."""
        return any(self.points[index])


def equal_training_budgets(search: SearchData) -> list[Budget]:
    """Where choices are compared at equal training: the scheduler's rungs and its end (max_t),
    in its own count; a search without rungs, at fractions of its epoch budget (its trials all
    count epochs the same way). ``trials`` is how many trials reached each."""
    if search.rungs:
        key, positions = search.time_attr, [*search.rungs, search.spec.max_t]
    else:
        epochs = search.spec.training.epochs
        key, positions = "epoch", [max(1, round(epochs * f)) for f in NO_RUNG_FRACTIONS]
    positions = sorted(set(positions))
    budgets = []
    for at, until in zip(positions, [*positions[1:], math.inf]):
        reached = sum(Budget(key, at, 0, until).value(t.rows, search.metric, t.status == FINISHED) is not None
                      for t in search.trials)
        budgets.append(Budget(key, at, reached, until))
    return budgets


def choice_params(search: SearchData) -> list[str]:
    """The searched parameters with a list of values (choice or grid), in the spec's order."""
    return [path for path, dist in search.spec.search.items() if isinstance(dist, (Choice, Grid))]


def choice_at_budgets(search: SearchData, param: str, budgets: list[Budget] | None = None) -> ChoiceAtBudgets:
    """Each value of ``param`` at each equal-training budget (see ChoiceAtBudgets)."""
    budgets = equal_training_budgets(search) if budgets is None else budgets
    values = list(search.spec.search[param].values)
    keys = [optuna_scalar(v) for v in values]  # a list or mapping value compares as its JSON
    objective = search.objective
    points: list[list[list[tuple[str, float]]]] = [[[] for _ in budgets] for _ in values]
    sampled = [0] * len(values)
    for trial in search.trials:
        if param not in trial.config or optuna_scalar(trial.config[param]) not in keys:
            continue
        index = keys.index(optuna_scalar(trial.config[param]))
        sampled[index] += 1
        for at, budget in enumerate(budgets):
            value = budget.value(trial.rows, search.metric, trial.status == FINISHED)
            if value is not None:
                points[index][at].append((trial.trial_id, float(value)))
    best = [[None if not here else objective.best(here, key=lambda p: p[1])[1] for here in row] for row in points]
    return ChoiceAtBudgets(param, values, budgets, sampled, points, best)


def budget_study(search: SearchData, budget: Budget) -> optuna.Study:
    """A study of every trial that reached the budget, scored by its value there."""
    spec = search.spec
    distributions = {path: dist.to_optuna() for path, dist in spec.search.items()}
    with quiet_optuna():
        study = optuna.create_study(direction=spec.objective.optuna_direction)
    for trial in search.trials:
        value = budget.value(trial.rows, spec.metric)
        if value is None:
            continue
        params = {path: optuna_scalar(trial.config[path]) for path in distributions if path in trial.config}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={p: distributions[p] for p in params},
                                                  value=value))
    return study


def write_report(out_dir: Path, echo: Callable[[str], None] = lambda line: None) -> Path:
    """Write ``<out>/report/`` (charts, trials.csv, report.html); returns that folder. A damaged
    record is drawn up to its damaged line, and ``echo`` is told where it stops."""
    search = gather(out_dir)
    if search.damage:
        echo(f"{search.damage.path}: line {search.damage.line} is damaged; the report shows the search up to "
             f"line {search.damage.line - 1}.")
    folder = out_dir / REPORT_DIR
    folder.mkdir(exist_ok=True)
    budget = common_budget(search)
    # At a common budget when enough trials reached one; otherwise the final scores.
    study, label = (budget_study(search, budget), budget.label) if budget else (search.study, "final scores")
    charts: dict[str, Any] = {
        **({"pareto_front": plots.pareto_front(search)} if search.front is not None else {}),
        "learning_curves": plots.learning_curves(search),
        "best_so_far": plots.best_so_far(search),
    }
    captions: dict[str, str] = {}
    budgets = equal_training_budgets(search)
    unit = _unit(budgets[0].key) if budgets else ""
    where = ("each rung of the scheduler and its end (max_t, or all the epochs of a trial that finished sooner)"
             if search.rungs
             else "a quarter, half and all of the epoch budget")
    for param in choice_params(search):
        name = f"{CHOICE_PREFIX}{param}"
        charts[name] = plots.choice_at_budgets(choice_at_budgets(search, param, budgets), search.metric,
                                               search.mode, f"{unit}: {where}")
        captions[name] = (f"Each value of {param} compared at equal training: every trial's {search.metric} "
                          f"when it first reached {where}, in {unit}, and a line through each value's best "
                          f"there ({search.mode}).")
    if any(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials):
        charts["parallel_coordinates"] = plots.parallel_coordinates(study, label)
    else:  # Optuna would draw empty axes (and warn in the terminal)
        charts["parallel_coordinates"] = None
        captions["parallel_coordinates"] = (
            f"No parallel coordinates: fewer than {MIN_BUDGET_TRIALS} trials reached one budget, and no trial "
            f"has a final score (each was paused or stopped early, or is still running).")
    importance_at, why_none = importance_budget(search)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # the same numbers in the chart and the file
    if importance_at is not None:
        importance_study = budget_study(search, importance_at)
        write_importances(importance_study, evaluator, importance_at, folder / IMPORTANCES_FILE)
        charts["param_importances"] = plots.param_importances(importance_study, evaluator, importance_at.label)
        confounded = confounded_pairs(importance_study)
        if confounded:
            captions["param_importances"] = (
                f"Read with care: in these {importance_at.trials} trials, "
                + "; ".join(f"{a} and {b} (rho {rho:+.2f})" for a, b, rho in confounded)
                + " rose and fell together, so fANOVA cannot tell their effects apart and may give either's "
                  "to the other. More trials separate them.")
    else:
        write_importances(None, evaluator, None, folder / IMPORTANCES_FILE)
        charts["param_importances"] = None
        captions["param_importances"] = why_none
    images: dict[str, Path | None] = {}
    for name, figure in charts.items():
        if figure is None:
            images[name] = None
            (folder / f"{_file_name(name)}.png").unlink(missing_ok=True)  # a chart from an earlier report says no more
            continue
        images[name] = folder / f"{_file_name(name)}.png"
        figure.savefig(images[name], dpi=90, bbox_inches="tight")  # Optuna's long parameter names
        plots.close(figure)
    header, rows = trial_table(search)
    with (folder / CSV_FILE).open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    front = front_table(search)
    if front is not None:
        with (folder / PARETO_CSV_FILE).open("w", newline="") as handle:
            csv.writer(handle).writerows([front[0], *front[1]])
        captions["pareto_front"] = (f"Each trial at its best epoch by {search.metric} (the checkpoint kept); "
                                    f"the front's trials are ringed: no other trial beats one of them in every "
                                    f"objective. best/ holds the front's best {search.metric}, pareto/<trial>/ "
                                    f"the others.")
    (folder / HTML_FILE).write_text(render_html(search, images, header, rows, best_trial_figures(search),
                                                captions=captions, front=front))
    return folder


def _unit(key: str) -> str:
    return "epochs" if key == "epoch" else "training seconds"


def _file_name(chart: str) -> str:
    """A chart's file name: a parameter's dotted path as it is, anything odd as '_'."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in chart)


def write_importances(study: optuna.Study | None, evaluator: Any, budget: Budget | None, path: Path) -> None:
    """importances.csv: hyperparameter, importance, budget (where the trials were compared);
    the header alone when no budget has MIN_IMPORTANCE_TRIALS trials (see importance_budget)."""
    importances = {} if study is None else optuna.importance.get_param_importances(study, evaluator=evaluator)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["hyperparameter", "importance", "budget"])
        for name, value in importances.items():
            writer.writerow([name, value, budget.name])


def confounded_pairs(study: optuna.Study) -> list[tuple[str, str, float]]:
    """Pairs of hyperparameters whose values moved together over the study's trials: Spearman's
    rho of at least CONFOUNDED_RHO in size, a choice ranked by its place in the space's list
    (Optuna's internal value). Parameters some trial lacks, or that never changed, are left out."""
    from scipy.stats import spearmanr

    trials = study.trials
    names = sorted(set.intersection(*(set(t.params) for t in trials))) if trials else []
    columns = {name: [t.distributions[name].to_internal_repr(t.params[name]) for t in trials] for name in names}
    names = [name for name in names if len(set(columns[name])) > 1]
    pairs = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            rho = float(spearmanr(columns[first], columns[second]).statistic)
            if abs(rho) >= CONFOUNDED_RHO:
                pairs.append((first, second, rho))
    return pairs


def trial_table(search: SearchData) -> tuple[list[str], list[list[Any]]]:
    """One row per trial, best first (trials without a value last)."""
    objective = search.objective
    # The search's best trial first among equal values (the record's tie rule: the first to reach it).
    ordered = sorted(search.trials, key=lambda t: t.trial_id != search.best_trial_id)
    ranked = objective.ranked(ordered, key=lambda t: t.best_value)
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


def front_table(search: SearchData) -> tuple[list[str], list[list[Any]]] | None:
    """The Pareto front, one row per trial, best quality first: each objective's value at its
    point, its status and its searched values. None with one objective."""
    if search.front is None:
        return None
    by_id = {t.trial_id: t for t in search.trials}
    header = ["trial_id", "status", *(o.metric for o in search.spec.objectives), *search.params]
    rows = [[i, by_id[i].status, *(by_id[i].point or []), *(by_id[i].config.get(p) for p in search.params)]
            for i in search.front]
    return header, rows


def best_trial_figures(search: SearchData) -> list[Path]:
    """The best trial's validation figures: from ``best/`` once the search has finished,
    else the latest epoch the MLflow projection (a record listener) copied out of its checkpoints."""
    if search.best_trial_id is None:
        return []
    exported = search.out_dir / BEST_DIR / FIGURES_DIR
    if search.finished and exported.is_dir():
        return sorted(exported.glob("*.png"))
    epochs = sorted((search.out_dir / FIGURES_DIR / search.best_trial_id).glob("epoch_*"))
    return sorted(epochs[-1].glob("*.png")) if epochs else []
