"""The searcher (Optuna TPE or random) and the scheduler (ASHA or none) a spec asks for."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm, Searcher
from ray.tune.search.optuna import OptunaSearch

from trainables.spec import EXPERIMENT_KEY, SearchSpec


OPTUNA_DB = "optuna.db"


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about early-stopped trials.

    Ray's OptunaSearch records a trial that ASHA stopped as COMPLETE with its last,
    low-fidelity score, which TPE then trusts as if it had trained to the full budget. Here
    such a trial is told as PRUNED (its per-epoch values were already reported as
    intermediate values, which TPE uses), a trial that did finish is told its best
    epoch's value rather than its last, and one whose loss diverged is told FAIL.
    """

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        if result and result.get("failed"):  # a NaN loss: the loop ended the trial as failed
            return super().on_trial_complete(trial_id, None, error=True)
        if result and not error and not result.get("finished", False):
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return None
        if result and not error and result.get("best_value") is not None:
            result = {**result, self.metric: result["best_value"]}
        return super().on_trial_complete(trial_id, result, error)


def param_space(spec: SearchSpec) -> dict[str, Any]:
    """Tune's param_space: the search's domains, every value of each for grid search, or the
    names of an experiment matrix."""
    if spec.experiments:
        return {EXPERIMENT_KEY: tune.grid_search(list(spec.experiments))}
    if spec.searcher.type == "grid":
        return {path: tune.grid_search(list(dist.values)) for path, dist in spec.search.items()}
    return {path: dist.to_tune() for path, dist in spec.search.items()}


def study_storage_url(spec: SearchSpec, out_dir: Path) -> str:
    return spec.searcher.storage or f"sqlite:///{(out_dir / OPTUNA_DB).resolve()}"


def build_searcher(spec: SearchSpec, out_dir: Path, max_concurrent: int | None = None) -> Searcher | SearchAlgorithm:
    if spec.searcher.type == "optuna" and not spec.experiments:
        sampler = optuna.samplers.TPESampler(seed=spec.searcher.seed, n_startup_trials=spec.searcher.startup_trials)
        # A persisted study: optuna-dashboard shows it live, and a resumed search (whose
        # searcher state points at the same database) continues it.
        url = study_storage_url(spec, out_dir)
        # SQLite: wait for a reader (the dashboard) rather than fail with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
        storage = _study_storage(url, engine_kwargs)
        return PruneAwareOptunaSearch(sampler=sampler, storage=storage, study_name=spec.experiment)
    # Random sampling, grid expansion and experiment matrices: Tune's own variant generator.
    # It is not a Searcher, so Tune ignores TuneConfig.max_concurrent_trials for it (with a
    # warning): it takes the limit itself (0 = none).
    return BasicVariantGenerator(random_state=spec.searcher.seed, max_concurrent=max_concurrent or 0)


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


def build_scheduler(spec: SearchSpec) -> TrialScheduler:
    if spec.scheduler.type == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=spec.scheduler.time_attr,
        max_t=spec.max_t,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )
