"""The search report, from the output folder alone: charts, a table of trials and one HTML page.

It reads only files, so it works on a finished search and on one still running (before
``summary.json`` exists): ``spec.yaml``, each trial's ``tune/trial_*/params.json`` and
``result.json`` (one JSON line per epoch, the last possibly half written), the Optuna
study, and ``summary.json`` when there is one (the final statuses). Everything goes to
``<out>/report/``: the charts as PNG, ``trials.csv`` and a self-contained ``report.html``.
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

from trainables.distributions import Choice, Grid, IntRange, LogUniform, Uniform
from trainables.figures import FIGURES_DIR
from trainables.preflight import SPEC_FILE, SUMMARY_FILE, TUNE_DIR
from trainables.searcher import OPTUNA_DB, study_storage_url
from trainables.spec import EXPERIMENT_KEY, SearchSpec
from trainables.summary import TRIAL_DIR_PREFIX

REPORT_DIR = "report"
CSV_FILE = "trials.csv"
HTML_FILE = "report.html"
UNFINISHED = "unfinished"  # no summary yet, and the trial has not ended on its own terms


class NotASearchError(FileNotFoundError):
    """The folder holds no search (or no trial yet) to report on."""


@dataclass
class TrialData:
    trial_id: str
    config: dict[str, Any]
    status: str  # finished | stopped early | failed | unfinished
    reason: str
    rows: list[dict[str, Any]]  # results with a finite metric, in order; each has wall_s
    best_value: float | None
    best_epoch: int | None


@dataclass
class SearchData:
    out_dir: Path
    spec: SearchSpec
    trials: list[TrialData]
    finished: bool  # summary.json exists
    best_trial_id: str | None
    study: optuna.Study
    params: list[str]  # the searched hyperparameters

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def time_attr(self) -> str:
        return self.spec.scheduler.time_attr

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
    """Read a search's output folder (finished or running)."""
    spec_path, tune_dir = out_dir / SPEC_FILE, out_dir / TUNE_DIR
    if not spec_path.is_file():
        raise NotASearchError(f"{out_dir}: no {SPEC_FILE}: not the output folder of a search")
    if not tune_dir.is_dir():
        raise NotASearchError(f"{out_dir}: no trial has started yet ({tune_dir} does not exist)")
    spec = SearchSpec.model_validate(yaml.safe_load(spec_path.read_text()))
    summary_path = out_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    final = {t["trial_id"]: t for t in summary["trials"]} if summary else {}
    trials = [_read_trial(folder, spec, final) for folder in sorted(tune_dir.glob(f"{TRIAL_DIR_PREFIX}*"))
              if folder.is_dir()]
    _add_wall_times(trials)
    best = (summary or {}).get("best") or _best_of(trials, spec.mode)
    params = [EXPERIMENT_KEY] if spec.experiments else list(spec.search)
    return SearchData(out_dir=out_dir, spec=spec, trials=trials, finished=summary is not None,
                      best_trial_id=best["trial_id"] if best else None, study=load_study(spec, out_dir, trials),
                      params=params)


def load_study(spec: SearchSpec, out_dir: Path, trials: list[TrialData]) -> optuna.Study:
    """The searcher's own Optuna study (TPE searches); for other searchers, one built in memory
    from the trials (finished ones scored by their best epoch, stopped ones pruned), so the
    same Optuna plots and importance evaluator serve every search."""
    if spec.searcher.type == "optuna" and not spec.experiments and (spec.searcher.storage or (out_dir / OPTUNA_DB).exists()):
        try:
            return optuna.load_study(study_name=spec.experiment, storage=study_storage_url(spec, out_dir))
        except KeyError:  # the searcher creates the study with its first trial
            pass
    return study_from_trials(spec, trials)


def study_from_trials(spec: SearchSpec, trials: list[TrialData]) -> optuna.Study:
    if spec.experiments:
        distributions = {EXPERIMENT_KEY: optuna.distributions.CategoricalDistribution(list(spec.experiments))}
    else:
        distributions = {path: _optuna_distribution(dist) for path, dist in spec.search.items()}
    study = optuna.create_study(direction="minimize" if spec.mode == "min" else "maximize")
    states = {"finished": optuna.trial.TrialState.COMPLETE, "stopped early": optuna.trial.TrialState.PRUNED,
              "failed": optuna.trial.TrialState.FAIL}
    for trial in trials:
        state = states.get(trial.status)
        if state is None or (state == optuna.trial.TrialState.COMPLETE and trial.best_value is None):
            continue  # still running: nothing to tell yet
        params = {path: _plain(trial.config[path]) for path in distributions if path in trial.config}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={p: distributions[p] for p in params}, state=state,
            value=trial.best_value if state == optuna.trial.TrialState.COMPLETE else None))
    return study


def write_report(out_dir: Path) -> Path:
    """Write ``<out>/report/`` (charts, trials.csv, report.html); returns that folder."""
    from trainables import plots
    from trainables.report_html import render_html

    search = gather(out_dir)
    folder = out_dir / REPORT_DIR
    folder.mkdir(exist_ok=True)
    charts = {
        "learning_curves": plots.learning_curves(search),
        "best_so_far": plots.best_so_far(search),
        "parallel_coordinates": plots.parallel_coordinates(search.study),
        "param_importances": plots.param_importances(search.study),
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


def trial_table(search: SearchData) -> tuple[list[str], list[list[Any]]]:
    """One row per trial, best first (trials without a value last)."""
    sign = 1 if search.mode == "min" else -1
    ranked = sorted(search.trials, key=lambda t: (t.best_value is None, sign * (t.best_value or 0.0), t.trial_id))
    header = ["trial_id", "status", "reason", "epochs", f"best_{search.metric}", "best_epoch", *search.params]
    rows = [[t.trial_id, t.status, t.reason, len(t.rows), t.best_value, t.best_epoch,
             *(t.config.get(p) for p in search.params)] for t in ranked]
    return header, rows


def best_trial_figures(search: SearchData) -> list[Path]:
    """The best trial's validation figures: from ``best/`` once the search has finished,
    else the latest epoch the tracking callback copied out of its checkpoints."""
    if search.best_trial_id is None:
        return []
    exported = search.out_dir / "best" / FIGURES_DIR
    if search.finished and exported.is_dir():
        return sorted(exported.glob("*.png"))
    epochs = sorted((search.out_dir / FIGURES_DIR / search.best_trial_id).glob("epoch_*"))
    return sorted(epochs[-1].glob("*.png")) if epochs else []


def _read_trial(folder: Path, spec: SearchSpec, final: dict[str, dict[str, Any]]) -> TrialData:
    trial_id = folder.name.removeprefix(TRIAL_DIR_PREFIX)
    rows = _json_lines(folder / "result.json")
    params = folder / "params.json"
    config = json.loads(params.read_text()) if params.exists() else (rows[0].get("config", {}) if rows else {})
    scored = [r for r in rows if _finite(r.get(spec.metric))]
    best = (min if spec.mode == "min" else max)(scored, key=lambda r: r[spec.metric]) if scored else None
    if trial_id in final:
        status, reason = final[trial_id]["status"], final[trial_id]["reason"]
    elif rows and rows[-1].get("failed"):
        status, reason = "failed", rows[-1].get("stop_reason") or "failed"
    elif rows and rows[-1].get("finished"):
        status, reason = "finished", rows[-1].get("stop_reason") or "budget"
    else:
        status, reason = UNFINISHED, "running, or stopped by the scheduler (the summary is written at the end)"
    return TrialData(trial_id=trial_id, config=config, status=status, reason=reason, rows=scored,
                     best_value=None if best is None else float(best[spec.metric]),
                     best_epoch=None if best is None else int(best.get("epoch", best.get("training_iteration", 0))))


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the line Tune is writing right now
            continue
    return rows


def _add_wall_times(trials: list[TrialData]) -> None:
    """``wall_s`` of each row: seconds since the first trial began. A trial began at its first
    result's timestamp (whole seconds) less the training time it reports (fractions)."""
    starts = {t.trial_id: t.rows[0]["timestamp"] - t.rows[0].get("time_total_s", 0.0) for t in trials if t.rows}
    if not starts:
        return
    origin = min(starts.values())
    for trial in trials:
        for row in trial.rows:
            row["wall_s"] = starts[trial.trial_id] - origin + row.get("time_total_s", 0.0)


def _best_of(trials: list[TrialData], mode: str) -> dict[str, Any] | None:
    scored = [t for t in trials if t.best_value is not None]
    if not scored:
        return None
    best = (min if mode == "min" else max)(scored, key=lambda t: t.best_value)
    return {"trial_id": best.trial_id, "value": best.best_value, "epoch": best.best_epoch}


def _optuna_distribution(dist: Any) -> optuna.distributions.BaseDistribution:
    if isinstance(dist, (Uniform, LogUniform)):
        return optuna.distributions.FloatDistribution(dist.low, dist.high, log=isinstance(dist, LogUniform))
    if isinstance(dist, IntRange):
        return optuna.distributions.IntDistribution(dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, (Choice, Grid)):
        return optuna.distributions.CategoricalDistribution([_plain(v) for v in dist.values])
    raise TypeError(f"no Optuna distribution for {dist!r}")


def _plain(value: Any) -> Any:
    """Optuna's categorical values are scalars; a list or mapping value is shown as its JSON."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
