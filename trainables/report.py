"""The search report, from the output folder alone: charts, a table of trials and one HTML page.

It reads only files, so it works on a finished search, an interrupted one and one still
running: ``spec.yaml``, the search's record (``record.jsonl``: every trial's config, epochs
and how it ended) and the Optuna study. Everything goes to ``<out>/report/``: the charts as
PNG, ``trials.csv`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from trainables.distributions import optuna_scalar
from trainables.folder_lock import is_running
from trainables.objective import Objective, is_number
from trainables.outputs import BEST_DIR, FIGURES_DIR, OPTUNA_DB, REPORT_DIR, SPEC_FILE, SUMMARY_FILE, study_storage_url
from trainables.record import FAILED, FINISHED, STOPPED, TIME_ATTRS, SearchRecord
from trainables.spec import EXPERIMENT_KEY, SearchSpec

CSV_FILE = "trials.csv"
HTML_FILE = "report.html"
IMPORTANCES_FILE = "importances.csv"
MIN_BUDGET_TRIALS = 3  # trials that must have reached a budget for comparing them there


class NotASearchError(FileNotFoundError):
    """The folder holds no search (or no trial yet) to report on."""


@dataclass
class TrialData:
    trial_id: str
    config: dict[str, Any]
    status: str  # the record's words: running | finished | stopped early | failed | interrupted
    reason: str
    rows: list[dict[str, Any]]  # results with a finite metric, in order; each has wall_s
    best_value: float | None
    best_epoch: int | None


@dataclass
class SearchData:
    out_dir: Path
    spec: SearchSpec
    trials: list[TrialData]
    state: str  # the search's: running | interrupted | finished
    best_trial_id: str | None
    study: optuna.Study
    params: list[str]  # the searched hyperparameters
    best_test: dict[str, float] | None  # the best model's test-split metrics, once the search has ended

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def time_attr(self) -> str:
        """The key of each row that counts the scheduler's time (epochs or seconds)."""
        return TIME_ATTRS[self.spec.scheduler.time_attr]

    @property
    def rungs(self) -> list[float]:
        return asha_rungs(self.spec)


def asha_rungs(spec: SearchSpec) -> list[float]:
    """The milestones where ASHA compares trials, computed as Ray's ASHAScheduler does (one
    bracket): grace_period * reduction_factor**k below max_t."""
    if spec.scheduler.type != "asha":
        return []
    grace, factor = spec.scheduler.grace_period, spec.scheduler.reduction_factor
    count = int(math.log(spec.max_t / grace) / math.log(factor) + 1)
    return [grace * factor**k for k in range(count)]


def gather(out_dir: Path) -> SearchData:
    """Read a search's output folder (finished, interrupted or running)."""
    spec_path = out_dir / SPEC_FILE
    if not spec_path.is_file():
        raise NotASearchError(f"{out_dir}: no {SPEC_FILE}: not the output folder of a search")
    spec = SearchSpec.model_validate(yaml.safe_load(spec_path.read_text()))
    record = SearchRecord(out_dir, Objective(spec.metric, spec.mode))
    if not record.trials:
        raise NotASearchError(f"{out_dir}: no trial has started yet")
    live = is_running(out_dir)
    origin = record.sessions[0]["t"]
    trials = []
    for trial in sorted(record.trials.values(), key=lambda t: t.trial_id):
        rows = [{**metrics, "epoch": epoch, "wall_s": metrics["time"] - origin}
                for epoch, metrics in sorted(trial.epochs.items()) if is_number(metrics.get(spec.metric))]
        reason = trial.reason if trial.rung is None else f"{trial.reason} at rung {trial.rung}"
        trials.append(TrialData(trial_id=trial.trial_id, config=trial.config, status=record.status(trial, live),
                                reason=reason, rows=rows, best_value=trial.best_value(record.objective),
                                best_epoch=trial.best_epoch(record.objective)))
    best = record.best_trial() or record.objective.best(record.trials.values(),
                                                       key=lambda t: t.best_value(record.objective))
    params = [EXPERIMENT_KEY] if spec.experiments else list(spec.search)
    summary = json.loads((out_dir / SUMMARY_FILE).read_text()) if (out_dir / SUMMARY_FILE).exists() else {}
    return SearchData(out_dir=out_dir, spec=spec, trials=trials, state="running" if live else record.state,
                      best_trial_id=best.trial_id if best else None, study=load_study(spec, out_dir, trials),
                      params=params, best_test=(summary.get("best") or {}).get("test"))


def load_study(spec: SearchSpec, out_dir: Path, trials: list[TrialData]) -> optuna.Study:
    """The searcher's own Optuna study (TPE searches); for other searchers, one built in memory
    from the trials (finished ones scored by their best epoch, stopped ones pruned), so the
    same Optuna plots and importance evaluator serve every search."""
    if spec.searcher.storage or (out_dir / OPTUNA_DB).exists():
        try:
            return optuna.load_study(study_name=spec.experiment, storage=study_storage_url(spec.searcher.storage, out_dir))
        except KeyError:  # the searcher creates the study with its first trial
            pass
    return study_from_trials(spec, trials)


def study_from_trials(spec: SearchSpec, trials: list[TrialData]) -> optuna.Study:
    if spec.experiments:
        distributions = {EXPERIMENT_KEY: optuna.distributions.CategoricalDistribution(list(spec.experiments))}
    else:
        distributions = {path: dist.to_optuna() for path, dist in spec.search.items()}
    study = optuna.create_study(direction=Objective(spec.metric, spec.mode).optuna_direction)
    states = {FINISHED: optuna.trial.TrialState.COMPLETE, STOPPED: optuna.trial.TrialState.PRUNED,
              FAILED: optuna.trial.TrialState.FAIL}
    for trial in trials:
        state = states.get(trial.status)
        if state is None or (state == optuna.trial.TrialState.COMPLETE and trial.best_value is None):
            continue  # still running: nothing to tell yet
        params = {path: optuna_scalar(trial.config[path]) for path in distributions if path in trial.config}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={p: distributions[p] for p in params}, state=state,
            value=trial.best_value if state == optuna.trial.TrialState.COMPLETE else None))
    return study


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
    distributions = {EXPERIMENT_KEY: optuna.distributions.CategoricalDistribution(list(spec.experiments))} \
        if spec.experiments else {path: dist.to_optuna() for path, dist in spec.search.items()}
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
    from trainables import plots
    from trainables.report_html import render_html

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
