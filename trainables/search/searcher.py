"""The searcher and the scheduler, both restored from the search's record on resume.

Every searcher type asks one Optuna study (``optuna.db`` in the output folder, or a database
URL), so optuna-dashboard shows any search live: TPE for ``optuna``, Optuna's random sampler
for ``random``, and for grid values (``searcher.type: grid``, ``grid`` entries, an experiment
matrix) each grid point is enqueued in order and the other values are sampled. The study is
a projection of the record: every epoch a trial reports becomes an intermediate value at its
epoch (the last one included), a trial ASHA stopped is told PRUNED after its last value, a
finished one COMPLETE with its best epoch's value, a failed one FAIL. (Ray's OptunaSearch
drops the last epoch of a stopped trial and tells it COMPLETE with that low-fidelity value.)

The sampler is seeded per trial (the spec's seed plus the trial's number), so a continued
search samples what the uninterrupted one would have, given the same history; unfinished
trials of the record are issued again first, under their own ids and configurations.

ASHA's rungs are rebuilt from the record's epochs before the first trial (Tune does not
restore a scheduler's state; ray issue 30838), and each stop decision is noted with its rung
for the record.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher, SearchGenerator

from trainables.objective import Objective
from trainables.outputs import study_storage_url
from trainables.results.record import (
    FINISHED,
    STOPPED,
    TIME_ATTRS,
    RecordListener,
    SearchRecord,
    TrialRecord,
)
from trainables.spec.distributions import Grid, optuna_scalar
from trainables.spec.schema import SearchSpec


class _DriverOnly:
    """Tune pickles its config (searcher, scheduler, callbacks) into ``tuner.pkl`` for its own
    restore, which this service never uses: the live objects (a database, the record's file)
    stay behind."""

    def __getstate__(self) -> dict[str, Any]:
        return {}


def open_study(spec: SearchSpec, out_dir: Path) -> optuna.Study:
    url = study_storage_url(spec.searcher.storage, out_dir)
    # SQLite: wait for a reader (the dashboard) rather than fail with "database is locked".
    engine_kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    return optuna.create_study(storage=_study_storage(url, engine_kwargs), study_name=spec.experiment,
                               direction=Objective(spec.metric, spec.mode).optuna_direction, load_if_exists=True)


def _study_storage(url: str, engine_kwargs: dict[str, Any], attempts: int = 5) -> optuna.storages.RDBStorage:
    for attempt in range(1, attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            # Another process (optuna-dashboard opened on the new URL) is creating the schema
            # at the same moment ("table ... already exists", a UNIQUE constraint on the
            # schema version, "database is locked"); once it is done, connecting succeeds.
            time.sleep(0.2 * attempt)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)  # the last try raises what it meets


def grid_points(spec: SearchSpec) -> list[dict[str, Any]]:
    """Every combination of the grid values, in order (one empty point without grid values)."""
    grid = {path: dist.values for path, dist in spec.search.items()
            if isinstance(dist, Grid) or spec.searcher.type == "grid"}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def total_trials(spec: SearchSpec) -> int:
    """Trials the whole search runs: ``budget.trials`` per grid point."""
    return len(grid_points(spec)) * spec.budget.trials


class StudySearcher(_DriverOnly, Searcher):
    """Tune's searcher: unfinished trials of the record first, then new ones from the study."""

    def __init__(self, spec: SearchSpec, out_dir: Path, record: SearchRecord) -> None:
        objective = Objective(spec.metric, spec.mode)
        super().__init__(metric=objective.metric, mode=objective.mode)
        self.spec = spec
        self.record = record
        self.study = open_study(spec, out_dir)
        self.projection = StudyProjection(self.study, record)
        self._points = grid_points(spec)
        self._total = total_trials(spec)
        self._space = {path: dist.to_optuna() for path, dist in spec.search.items()}
        self._again = [t.trial_id for t in record.unfinished()]

    def next_trial_id(self) -> str:
        return self._again[0] if self._again else Trial.generate_id()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._again and trial_id == self._again[0]:
            return dict(self.record.add_trial(self._again.pop(0), {}).config)  # issued again, as it was
        issued = len(self.record.trials)
        if issued >= self._total:
            return Searcher.FINISHED
        self.projection.flush()  # the sampler sees every result told so far
        self.study.sampler = self._sampler(issued)
        point = {k: optuna_scalar(v) for k, v in self._points[issued % len(self._points)].items()}
        if point:
            self.study.enqueue_trial(point, skip_if_exists=False)
        asked = self.study.ask(self._space)
        config = self._config(asked.params)
        self.record.add_trial(trial_id, config, study_number=asked.number)
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Optuna is told from the record (StudyProjection), which knows how the trial ended."""

    def save(self, checkpoint_path: str) -> None:
        """Nothing: the record is the search's state (Tune would otherwise warn that it cannot save)."""

    def _sampler(self, number: int) -> optuna.samplers.BaseSampler:
        seed = self.spec.searcher.seed + number
        if self.spec.searcher.type == "optuna":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.spec.searcher.startup_trials)
        return optuna.samplers.RandomSampler(seed=seed)

    def _config(self, params: dict[str, Any]) -> dict[str, Any]:
        return {path: self.spec.search[path].from_optuna(value) for path, value in params.items()}


class StudyProjection(RecordListener):
    """Writes the record's events into the Optuna study, in order, on a thread of its own
    (a SQLite write costs milliseconds that Tune's event loop need not wait for)."""

    def __init__(self, study: optuna.Study, record: SearchRecord) -> None:
        self.study = study
        self.objective = record.objective
        self._numbers = {t.trial_id: t.study_number for t in record.trials.values()}
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="optuna-writer", daemon=True).start()
        self._submit(self._reconcile, list(record.trials.values()))

    def flush(self) -> None:
        self._queue.join()

    def on_trial(self, trial: TrialRecord) -> None:
        self._numbers[trial.trial_id] = trial.study_number

    def on_epoch(self, trial: TrialRecord, epoch: int) -> None:
        value = trial.value_at(epoch, self.objective.metric)
        if value is not None:
            self._submit(self._report, trial.trial_id, {epoch: value})

    def on_end(self, trial: TrialRecord) -> None:
        self._submit(self._tell, trial.trial_id, trial.status, trial.best_value(self.objective))

    def _submit(self, fn: Any, *args: Any) -> None:
        self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - the study is a view: it must not end the search
                print(f"Optuna study: {type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    def _trial(self, trial_id: str) -> optuna.trial.Trial:
        number = self._numbers[trial_id]
        # Optuna addresses a trial's intermediate values by its storage id, which only its
        # storage maps from the trial number.
        storage_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        return optuna.trial.Trial(self.study, storage_id)

    def _report(self, trial_id: str, values: dict[int, float]) -> None:
        trial = self._trial(trial_id)
        for epoch, value in values.items():
            trial.report(value, epoch)

    def _tell(self, trial_id: str, status: str, best: float | None) -> None:
        number = self._numbers[trial_id]
        if status == FINISHED and best is not None:
            self.study.tell(number, best)
        elif status == STOPPED and best is not None:
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)
        else:  # failed, or ended before any value
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)

    def _reconcile(self, trials: list[TrialRecord]) -> None:
        """Bring a study left behind by a killed launch up to the record: values and ends it
        missed are told now; a trial asked but never recorded (killed in between) fails."""
        stored = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        known = {t.study_number for t in trials}
        for trial in trials:
            frozen = stored.get(trial.study_number)
            if frozen is None or frozen.state.is_finished():
                continue
            missing = {e: v for e in trial.epochs if e not in frozen.intermediate_values
                       and (v := trial.value_at(e, self.objective.metric)) is not None}
            if missing:
                self._report(trial.trial_id, missing)
            if trial.ended:
                self._tell(trial.trial_id, trial.status, trial.best_value(self.objective))
        for number, frozen in stored.items():
            if number not in known and not frozen.state.is_finished():
                self.study.tell(number, state=optuna.trial.TrialState.FAIL)


class RecordSearchGenerator(_DriverOnly, SearchGenerator):
    """Tune's search algorithm around ``StudySearcher``: trial ids come from the searcher, so
    a trial issued again keeps the id (folders, MLflow run, record) it had."""

    def create_trial_if_possible(self, experiment_spec: dict[str, Any]) -> Trial | None:
        from ray.tune.experiment.config_parser import _create_trial_from_spec

        trial_id = self.searcher.searcher.next_trial_id() if hasattr(self.searcher, "searcher") \
            else self.searcher.next_trial_id()
        config = self.searcher.suggest(trial_id)
        if config == Searcher.FINISHED:
            self._finished = True
            return None
        if config is None:
            return None
        spec = {**experiment_spec, "config": {**experiment_spec["config"], **config}}
        self._counter += 1
        return _create_trial_from_spec(spec, self._parser, evaluated_params=dict(config),
                                       experiment_tag=str(self._counter), trial_id=trial_id)


class RecordedASHA(_DriverOnly, ASHAScheduler):
    """ASHA whose rungs start from the record, and which notes the rung of each stop."""

    def __init__(self, spec: SearchSpec, record: SearchRecord) -> None:
        objective = Objective(spec.metric, spec.mode)
        super().__init__(time_attr=TIME_ATTRS[spec.scheduler.time_attr], metric=objective.metric,
                         mode=objective.mode, max_t=spec.max_t, grace_period=spec.scheduler.grace_period,
                         reduction_factor=spec.scheduler.reduction_factor)
        self.stops: dict[str, int] = {}  # trial id -> the rung it was stopped at
        for trial in sorted(record.trials.values(), key=lambda t: t.number):
            self._replay(trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and not result.get("finished") and self._time_attr in result:
            done = result[self._time_attr]
            rung = max((m for m, _ in self._brackets[0]._rungs if m <= done), default=done)
            self.stops[trial.trial_id] = int(rung) if float(rung).is_integer() else rung
        return action

    def _replay(self, trial: TrialRecord) -> None:
        """Feed one recorded trial's epochs to the bracket as Tune fed them live: each result
        below max_t, then its last result again when it ended (on_trial_complete)."""
        bracket, stand_in = self._brackets[0], _StandIn(trial.trial_id)
        results = [(m[self._time_attr], m.get(self._metric)) for _, m in sorted(trial.epochs.items())
                   if self._time_attr in m]
        for done, value in results:
            if done < self._max_t and value is not None:
                bracket.on_result(stand_in, done, self._metric_op * value)
        if results and trial.status in (FINISHED, STOPPED) and results[-1][1] is not None:
            bracket.on_result(stand_in, results[-1][0], self._metric_op * results[-1][1])


class _StandIn:
    """What a bracket needs of a trial: its id."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def build_scheduler(spec: SearchSpec, record: SearchRecord) -> TrialScheduler:
    if spec.scheduler.type == "none":
        return FIFOScheduler()
    return RecordedASHA(spec, record)
