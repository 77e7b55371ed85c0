"""A search's output folder read back for reporting: its spec, its record (every trial's
config, epochs and how it ended; the search finished, interrupted or still running) and its
Optuna study. Files only, so it reads a live search as well as an ended one.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from trainables.objective import Objective, is_number
from trainables.outputs import OPTUNA_DB, SPEC_FILE, SUMMARY_FILE, study_storage_url
from trainables.folder_lock import is_running
from trainables.results.front import pareto_front
from trainables.results.record import (
    RUNNING,
    SEARCH_FINISHED,
    SEARCH_INTERRUPTED,
    TIME_ATTRS,
    DamagedRecordError,
    SearchRecord,
)
from trainables.spec.distributions import optuna_scalar
from trainables.spec.schema import SearchSpec


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
    point: list[float | None] | None = None  # each objective at its best epoch (TrialRecord.point)


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
    damage: DamagedRecordError | None = None  # the record's damaged line: everything here comes before it
    front: list[str] | None = None  # with several objectives: the Pareto front's trial ids, best quality first

    @property
    def finished(self) -> bool:
        return self.state == SEARCH_FINISHED

    def state_words(self) -> str:
        """The search's state as the report states it."""
        if self.finished:
            return "finished"
        if self.state == SEARCH_INTERRUPTED:
            return "interrupted (the same command continues it): statuses as they stood"
        return "still running, or its launcher was killed: statuses are provisional"

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def objective(self) -> Objective:
        return self.spec.objective

    @property
    def time_attr(self) -> str:
        """The key of each row that counts the scheduler's time (epochs or seconds)."""
        return TIME_ATTRS[self.spec.scheduler.time_attr]

    @property
    def rungs(self) -> list[float]:
        """Where the search's scheduler compares trials, as its kind defines them."""
        from trainables.search.schedulers import scheduler_rungs

        return scheduler_rungs(self.spec)


def gather(out_dir: Path) -> SearchData:
    """Read a search's output folder (finished, interrupted or running)."""
    spec_path = out_dir / SPEC_FILE
    if not spec_path.is_file():
        raise NotASearchError(f"{out_dir}: no {SPEC_FILE}: not the output folder of a search")
    spec = SearchSpec.model_validate(yaml.safe_load(spec_path.read_text()))
    record = SearchRecord(out_dir, spec.objective, up_to_damage=True)
    if not record.trials:
        raise NotASearchError(f"{out_dir}: no trial has started yet")
    # The launch that writes a search's last report still holds the lock: the record's end decides.
    live = record.state == RUNNING and is_running(out_dir)
    origin = record.sessions[0]["t"]
    trials = []
    for trial in sorted(record.trials.values(), key=lambda t: t.trial_id):
        rows = [{**metrics, "epoch": epoch, "wall_s": metrics["time"] - origin}
                for epoch, metrics in sorted(trial.epochs.items()) if is_number(metrics.get(spec.metric))]
        trials.append(TrialData(trial_id=trial.trial_id, config=trial.config, status=record.status(trial, live),
                                reason=trial.why_ended, rows=rows, best_value=trial.best_value(record.objective),
                                best_epoch=trial.best_epoch(record.objective), point=trial.point(spec.objectives)))
    best = record.best_trial() or record.objective.best(record.trials.values(),
                                                       key=lambda t: t.best_value(record.objective))
    params = list(spec.search)
    summary = json.loads((out_dir / SUMMARY_FILE).read_text()) if (out_dir / SUMMARY_FILE).exists() else {}
    return SearchData(out_dir=out_dir, spec=spec, trials=trials, state="running" if live else record.state,
                      best_trial_id=best.trial_id if best else None, study=load_study(spec, out_dir, trials),
                      params=params, best_test=(summary.get("best") or {}).get("test"), damage=record.damage,
                      front=[t.trial_id for t in pareto_front(record, spec.objectives)] if spec.multi_objective
                      else None)


def load_study(spec: SearchSpec, out_dir: Path, trials: list[TrialData]) -> optuna.Study:
    """The searcher's own Optuna study (TPE searches); for other searchers (and several
    objectives), one built in memory
    from the trials (finished ones scored by their best epoch, stopped ones pruned), so the
    same Optuna plots and importance evaluator serve every search."""
    # A multi-objective study has no single value to chart: the report's Optuna charts rank
    # by the primary objective, in memory; the front has its own chart.
    if not spec.multi_objective and (spec.searcher.storage or (out_dir / OPTUNA_DB).exists()):
        try:
            return optuna.load_study(study_name=spec.experiment, storage=study_storage_url(spec.searcher.storage, out_dir))
        except KeyError:  # the searcher creates the study with its first trial
            pass
    return study_from_trials(spec, trials)


def study_from_trials(spec: SearchSpec, trials: list[TrialData]) -> optuna.Study:
    distributions = {path: dist.to_optuna() for path, dist in spec.search.items()}
    with quiet_optuna():
        study = optuna.create_study(direction=spec.objective.optuna_direction)
    from trainables.search.sampling import optuna_state

    for trial in trials:
        state = optuna_state(trial.status, trial.best_value)
        if state is None:
            continue  # not ended: nothing to tell yet
        params = {path: optuna_scalar(trial.config[path]) for path in distributions if path in trial.config}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={p: distributions[p] for p in params}, state=state,
            value=trial.best_value if state == optuna.trial.TrialState.COMPLETE else None))
    return study


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna marks its matplotlib plots experimental and warns on every call, and logs each
    in-memory study the report builds: neither is news to the person reading the terminal."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # A hyperparameter every compared trial shares gets a flat axis; matplotlib widens it.
            warnings.filterwarnings("ignore", message="Attempting to set identical", category=UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
