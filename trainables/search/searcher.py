"""The searcher, restored from the search's record on resume.

Every searcher type writes one Optuna study (``optuna.db`` in the output folder, or a database
URL), so optuna-dashboard shows any search live. The study is a projection of the record:
every epoch a trial reports becomes an intermediate value at its epoch, a trial stopped early
(or still paused when the search ended) is told PRUNED after its last value, a finished one
COMPLETE with its best epoch's value, a failed one FAIL. (Ray's OptunaSearch drops the last
epoch of a stopped trial and tells it COMPLETE with that low-fidelity value.) With several
objectives the study has one direction per objective and no intermediate values (Optuna
supports none there): a finished trial is COMPLETE with its point (each objective at its best
epoch by the first), a stopped one PRUNED without values.

Configurations are sampled on a view of the record (trainables/search/sampling.py: TPE for
``optuna``, random for ``random``; grid points, from ``searcher.type: grid``, ``grid`` entries
or an experiment matrix, are given in order and the other values sampled); the study is
written behind, on a thread of its own, and never read to sample. Unfinished trials of the record are issued again first, under their own ids and
configurations; paused trials are issued again when the scheduler promotes them. A
warm-started search (warm_start.py) also tells the view the earlier searches' trials, and its
first new configurations are their best.
"""

from __future__ import annotations

import functools
import itertools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from ray.tune.experiment import Trial
from ray.tune.search import Searcher, SearchGenerator

from trainables.background import BackgroundWriter
from trainables.disk_space import DiskFault, as_disk_full
from trainables.outputs import study_storage_url
from trainables.results.record import (
    RUNNING,
    RecordListener,
    SearchRecord,
    TrialRecord,
)
from trainables.search.costs import TrialCosts
from trainables.objective import Objective
from trainables.search.sampling import (
    KeptView,
    Observation,
    new_sampler,
    optuna_state,
    sample,
    startup_point,
    told_value,
    trial_observation,
)
from trainables.search.schedulers.base import RungPolicy, recorded_results
from trainables.search.warm_start import WarmStart, first_trials
from trainables.spec.distributions import Grid, optuna_scalar
from trainables.spec.resources import room_beside
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
                               directions=[o.optuna_direction for o in spec.objectives], load_if_exists=True)


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
    """Tune's searcher. When a slot is free it issues, in this order: an unfinished trial of
    the record (a continued search), a paused trial the scheduler promotes, a new
    configuration. Nothing is issued that cannot reach its next rung before the time limit
    (its cost measured from the record, trainables/search/costs.py), and in a cluster that cannot
    grow, nothing that cannot be placed beside the running trials while something else can."""

    def __init__(self, spec: SearchSpec, out_dir: Path, record: SearchRecord, policy: RungPolicy,
                 seconds_left: Callable[[], float | None] = lambda: None, disk: DiskFault | None = None,
                 warm_starts: Sequence[WarmStart] = (), fixed_cluster: dict[str, float] | None = None,
                 gpus: bool = False) -> None:
        objective = spec.objective
        super().__init__(metric=objective.metric, mode=objective.mode)
        self.spec = spec
        self.record = record
        # A full disk met here or anywhere in the search: issue nothing more.
        self.disk = disk if disk is not None else DiskFault()
        self._study_url = study_storage_url(spec.searcher.storage, out_dir)
        self.policy = policy
        self.seconds_left = seconds_left
        self.costs = TrialCosts(spec, record)
        # The resources of a cluster that cannot grow (the embedded one): a new trial is placed
        # beside the running ones only where it fits. None: a trial that does not fit waits (an
        # autoscaler may add the node it needs).
        self.fixed_cluster = fixed_cluster
        self.gpus = gpus
        self._space = {path: dist.to_optuna() for path, dist in spec.search.items()}
        self.projection = StudyProjection(open_study(spec, out_dir), record, spec.objectives, self._space,
                                          self.disk, self._study_url)
        self._points = grid_points(spec)
        self._total = total_trials(spec)
        self.warm_starts = list(warm_starts)  # read_warm_starts(spec), read once per launch
        self._warm_observations = [seen for start in self.warm_starts for seen in start.observations]
        self._kept_view = KeptView(self._space, [o.optuna_direction for o in spec.objectives])
        self._first = first_trials(self.warm_starts)
        self._again = [t.trial_id for t in record.to_continue()]
        self._no_new = False  # no new configuration can reach its first rung in the time left

    def next_trial_id(self) -> str:
        if self._again:
            return self._again[0]
        promoted = self._promotion()
        return promoted or Trial.generate_id()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.disk:
            return None  # the search is ending (SearchStop); nothing new starts on a full disk
        try:
            return self._suggest(trial_id)
        except Exception as exc:
            full = as_disk_full(exc, self.record.out_dir, f"the Optuna study {self._study_url}")
            if full is None:
                raise
            self.disk.report(full)
            return None

    def _suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._again and trial_id == self._again[0]:
            return dict(self.record.add_trial(self._again.pop(0), {}).config)  # issued again, as it was
        if trial_id in self.record.trials:  # a paused trial promoted (next_trial_id chose it)
            self.policy.promote(trial_id)
            self.record.promote_trial(trial_id)
            return dict(self.record.add_trial(trial_id, {}).config)
        issued = len(self.record.trials)
        if issued >= self._total or self._no_new:
            return self._wait_or_finish()
        config = self._new_config(issued)
        if config is None:
            return None
        # The study's trial is created behind (StudyProjection.on_trial), under the number given here.
        self.record.add_trial(trial_id, config, study_number=self.projection.next_number())
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Optuna is told from the record (StudyProjection), which knows how the trial ended."""

    def save(self, checkpoint_path: str) -> None:
        """Nothing: the record is the search's state (Tune would otherwise warn that it cannot save)."""

    # ----- promotions -----
    def _promotion(self) -> str | None:
        """The first promotion candidate that can reach its next rung in the time left and be
        placed now."""
        new_left = len(self.record.trials) < self._total and not self._no_new
        placeable = self._placeable()
        for trial_id in self.policy.candidates(new_trials_left=new_left):
            trial = self.record.trials[trial_id]
            done = max(m[self.policy.time_key] for m in trial.epochs.values() if self.policy.time_key in m)
            target = min([r for r in self.policy.rungs() if r > done] or [self.policy.max_t])
            # One that cannot be placed now stays a candidate: the slot goes to what can run now.
            if self._fits(trial.config, done, target) and placeable(trial.config):
                return trial_id
        return None

    def _wait_or_finish(self) -> dict[str, Any] | str | None:
        """No new configuration: wait while a trial runs (it may pause and free a promotion),
        finish when none runs and none can be promoted."""
        running = any(t.status == RUNNING for t in self.record.trials.values() if t.trial_id not in self._again)
        if running or self._again:
            return None
        return Searcher.FINISHED

    # ----- new configurations -----
    def _new_config(self, issued: int) -> dict[str, Any] | None:
        searcher = self.spec.searcher
        queued = len(self._first)  # a warm start's configurations come first; the start-up design after them
        if issued < queued:
            config = dict(self._first[issued])
        else:
            fixed = {k: optuna_scalar(v) for k, v in self._points[issued % len(self._points)].items()}
            startup = searcher.type == "optuna" and issued < queued + searcher.startup_trials
            if startup:
                fixed = {**startup_point(self.spec.search, searcher.seed, issued - queued), **fixed}
            if searcher.type == "optuna":
                fixed = self._design_in_room(fixed, queued, issued, startup)
            # TPE counts the earlier searches' trials as start-up trials (Optuna counts every trial
            # told): a warm-started search draws its own start-up trials at random explicitly.
            kind = "random" if startup and self.warm_starts else searcher.type
            params = sample(self._view(), self._space,
                            new_sampler(kind, searcher.seed, issued, searcher.startup_trials), fixed)
            config = {path: self.spec.search[path].from_optuna(value) for path, value in params.items()}
        fitted = self._fitting(config, self._first_rung())
        if fitted is None:
            self._no_new = True  # not even the cheapest group would reach its first rung: issue no more
        return fitted

    def _design_in_room(self, fixed: dict[str, Any], queued: int, issued: int, startup: bool) -> dict[str, Any]:
        """The start-up design runs each size once (``startup_point``). A design size that
        cannot be placed now or reach its first rung is owed: this trial takes the first owed
        size that can (a start-up trial its own first), and later trials, start-up or not, take
        it as soon as it can run. With none that can, the size is left to the sampler (a size
        the design already ran is not forced again). In the flagship search `large`, drawn
        while `huge` held the memory it needed, was replaced by a size already run, and once
        the start-up trials were used up it never ran at all."""
        path = self.costs.group_path
        if path is None or path not in self.spec.search or isinstance(self.spec.search[path], Grid):
            return fixed  # no size that decides the cost, or a grid's (the grid's value is not the design's)
        number = issued - queued
        count = self.spec.searcher.startup_trials
        design = [startup_point(self.spec.search, self.spec.searcher.seed, i)[path] for i in range(count)]
        owed = list(design)
        for trial in list(self.record.trials.values())[queued:issued]:
            value = optuna_scalar(trial.config.get(path))
            if value in owed:
                owed.remove(value)
        if not owed:
            return fixed
        placeable = self._placeable()
        first = self._first_rung()
        order = [fixed[path], *design[number:], *design[:number]] if startup else design
        for value in order:
            config = {path: self.spec.search[path].from_optuna(value)}
            if value in owed and self._fits(config, 0, first) and placeable(config):
                return {**fixed, path: value}
        return {k: v for k, v in fixed.items() if k != path or v in owed}

    def _first_rung(self) -> float:
        return (self.policy.rungs() or [1 if self.policy.time_key == "epoch" else 0])[0]

    def _fitting(self, config: dict[str, Any], first: float) -> dict[str, Any] | None:
        """``config`` if it can reach its first rung in the time left and be placed now; else,
        where the cost depends on a group (the MAE's size), ``config`` in the costliest group
        that can both (the sampler's other choices kept, the record holding what ran); else
        ``config`` if it can reach the rung once placed (it waits for room), or the costliest
        group that can; else None.

        Ending the search instead wasted its last minutes: the sampler, having seen one size
        finish, kept drawing sizes too slow for the time left. And a `large` trial issued beside
        a running `huge` one waited 270 s for memory to be placed, holding a slot while a core
        stood idle, and ended at the time limit with 0 epochs."""
        placeable = self._placeable()
        in_time = self._fits(config, 0, first)
        if in_time and placeable(config):
            return config
        path = self.costs.group_path
        dist = self.spec.search.get(path) if path else None
        if dist is None:
            return config if in_time else None
        costs = {v: self.costs.epoch_seconds({**config, path: v}) for v in dist.values}
        fitting = [v for v, c in costs.items() if c is not None and self._fits({**config, path: v}, 0, first)]
        room = [v for v in fitting if placeable({**config, path: v})]
        if room:
            return {**config, path: max(room, key=costs.get)}
        if in_time:
            return config
        return {**config, path: max(fitting, key=costs.get)} if fitting else None

    def _placeable(self) -> Callable[[dict[str, Any]], bool]:
        """Whether a config can be placed now beside the record's running trials."""
        if self.fixed_cluster is None:
            return lambda config: True
        running = [t.config for t in self.record.trials.values() if t.status == RUNNING]
        return room_beside(self.spec, self.fixed_cluster, self.gpus, running)

    def _fits(self, config: dict[str, Any], done: float, target: float) -> bool:
        left = self.seconds_left()
        if left is None:
            return True
        needed = self.costs.seconds_to(config, done, target, self.policy.time_key)
        return needed is None or needed <= left

    def _view(self) -> optuna.Study:
        """What the sampler learns from (trainables/search/sampling.py): the earlier searches'
        trials, told first, then this search's, in issue order. A trial is observed again only
        when its status or its epoch count changed (KeptView)."""
        rungs = tuple(self.policy.rungs())
        warm = ((("warm", i), None, lambda seen=seen: seen) for i, seen in enumerate(self._warm_observations))
        own = ((trial.trial_id, (trial.status, len(trial.epochs), rungs), functools.partial(self.observation, trial))
               for trial in self.record.trials.values())
        # One trust check per rung per sample (each is a rank correlation over the rung).
        return self._kept_view.view(itertools.chain(warm, own), functools.cache(self.policy.trusted))

    def observation(self, trial: TrialRecord) -> Observation | None:
        """What the sampler may learn from one of this search's trials now."""
        return trial_observation(trial, self._space, self.record.objective,
                                 recorded_results(trial, self.policy.time_key, self.spec.metric),
                                 self.policy.rungs(), self.spec.objectives)


class StudyProjection(RecordListener):
    """Writes the record's events into the Optuna study, in order, on a thread of its own
    (a SQLite write costs milliseconds that Tune's event loop need not wait for).

    A new trial's number in the study is given on the driver (``next_number``) and recorded
    with the trial; the writer then creates the study's trial, RUNNING with its values, under
    that number, since the study numbers its trials in the order they are created and only
    this writer creates them (the output folder's lock keeps a second launch out). A launch
    killed between the two leaves the record ahead of the study: the next launch creates the
    missing trials first (``_reconcile``)."""

    def __init__(self, study: optuna.Study, record: SearchRecord, objectives: Sequence[Objective],
                 space: dict[str, optuna.distributions.BaseDistribution], disk: DiskFault, url: str) -> None:
        self.study = study
        self.objective = record.objective
        self.objectives = list(objectives)
        self.space = space
        # Optuna refuses intermediate values in a multi-objective study (NotImplementedError).
        self.intermediate = len(self.objectives) == 1
        self.disk = disk
        self.folder = record.out_dir
        self.where = f"the Optuna study {url}"
        self._told_failure = False
        self._numbers = {t.trial_id: t.study_number for t in record.trials.values()}
        # Read once a launch, for the numbering and for _reconcile: trials a killed launch left.
        stored = {t.number: t for t in study.get_trials(deepcopy=False)}
        self._next = max([len(stored), *(n + 1 for n in self._numbers.values() if n is not None)])
        # The open trials' optuna.Trial handles, used on the writer thread only. Building one
        # reads the trial back from the database (two queries), which cost about a tenth of the
        # driver's CPU in a 150-trial profile when done at every report; a handle keeps its
        # own copy of the intermediate values it reported, so reusing it changes nothing told.
        self._handles: dict[str, optuna.trial.Trial] = {}
        self._writer = BackgroundWriter("optuna-writer", self._apply, self._failed)
        self._submit(self._reconcile, list(record.trials.values()), stored)

    def next_number(self) -> int:
        """The study number of the next new trial (the driver's thread)."""
        number, self._next = self._next, self._next + 1
        return number

    def flush(self) -> bool:
        """Wait (bounded) until the study holds every event so far; False if its writer is stuck."""
        return self._writer.flush()

    def on_trial(self, trial: TrialRecord) -> None:
        if trial.trial_id not in self._numbers:  # new; a trial issued again is in the study already
            self._numbers[trial.trial_id] = trial.study_number
            self._submit(self._create, trial.trial_id, dict(trial.config))

    def on_epoch(self, trial: TrialRecord, epoch: int) -> None:
        value = trial.value_at(epoch, self.objective.metric)
        if value is not None and self.intermediate:
            self._submit(self._report, trial.trial_id, {epoch: value})

    def on_end(self, trial: TrialRecord) -> None:
        self._submit(self._tell, trial.trial_id, trial.status, told_value(trial, self.objectives))

    def _submit(self, fn: Any, *args: Any) -> None:
        self._writer.submit((fn, args))

    @staticmethod
    def _apply(call: tuple[Any, tuple]) -> None:
        fn, args = call
        fn(*args)

    def _failed(self, exc: Exception) -> None:
        """The study is a view: a failed write must not end the search, unless the disk is full."""
        full = as_disk_full(exc, self.folder, self.where)
        if full is not None:
            self.disk.report(full)
        elif not self._told_failure:  # one line, not one per write
            self._told_failure = True
            print(f"Optuna study: a write failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                  f"the search goes on, and the study may lag behind the record (later failures not shown).",
                  file=sys.stderr)

    def _trial(self, trial_id: str) -> optuna.trial.Trial:
        if trial_id not in self._handles:
            number = self._numbers[trial_id]
            # Optuna addresses a trial's intermediate values by its storage id, which only its
            # storage maps from the trial number.
            storage_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
            self._handles[trial_id] = optuna.trial.Trial(self.study, storage_id)
        return self._handles[trial_id]

    def _create(self, trial_id: str, config: dict[str, Any]) -> None:
        params = {path: optuna_scalar(config[path]) for path in self.space}
        # One insert, where enqueue_trial + ask cost three times the CPU (a write per value).
        self.study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, params=params, distributions=self.space,
            user_attrs={"trial_id": trial_id}))  # the id of its folder, its MLflow run and the record

    def _report(self, trial_id: str, values: dict[int, float]) -> None:
        trial = self._trial(trial_id)
        for epoch, value in values.items():
            trial.report(value, epoch)

    def _tell(self, trial_id: str, status: str, best: float | list[float] | None) -> None:
        self._handles.pop(trial_id, None)  # it reports no more
        state = optuna_state(status, best)
        self.study.tell(self._numbers[trial_id], best if state == optuna.trial.TrialState.COMPLETE else None, state)

    def _reconcile(self, trials: list[TrialRecord], stored: dict[int, optuna.trial.FrozenTrial]) -> None:
        """Bring a study left behind by a killed launch up to the record: trials it never got
        are created (in number order, so each gets its recorded number), values and ends it
        missed are told now. A trial in the study and not in the record (asked, then killed,
        by launches before the record numbered trials itself) fails. ``stored``: the study's
        trials by number as the launch found them (nothing writes the study before this)."""
        known = {t.study_number for t in trials}
        for trial in sorted(trials, key=lambda t: t.study_number if t.study_number is not None else -1):
            if trial.study_number is not None and trial.study_number not in stored:
                self._create(trial.trial_id, dict(trial.config))
            elif trial.study_number is None or stored[trial.study_number].state.is_finished():
                continue
            frozen = stored.get(trial.study_number)
            intermediate = frozen.intermediate_values if frozen is not None else {}
            missing = {e: v for e in trial.epochs if e not in intermediate
                       and (v := trial.value_at(e, self.objective.metric)) is not None}
            if missing and self.intermediate:
                self._report(trial.trial_id, missing)
            if trial.ended:
                self._tell(trial.trial_id, trial.status, told_value(trial, self.objectives))
        for number, frozen in stored.items():
            if number not in known and not frozen.state.is_finished():
                self.study.tell(number, state=optuna.trial.TrialState.FAIL)


class RecordSearchGenerator(_DriverOnly, SearchGenerator):
    """Tune's search algorithm around ``StudySearcher``: trial ids come from the searcher, so
    a trial issued again keeps the id (folders, MLflow run, record) it had."""

    def create_trial_if_possible(self, experiment_spec: dict[str, Any]) -> Trial | None:
        from ray.tune.experiment.config_parser import _create_trial_from_spec

        limiter = self.searcher
        if len(limiter.live_trials) >= limiter.max_concurrent:
            return None  # no slot: Tune asks again after the next trial ends (asking costs a promotion check)
        trial_id = limiter.searcher.next_trial_id()
        if trial_id in limiter.live_trials:
            # A trial paused at a rung is in the record before Tune has ended it: it is issued
            # again once Tune has (the limiter refuses an id it still holds).
            return None
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
