"""How a configuration is sampled: a seeded sampler per trial, asked on a view of the search
built from the record (no Ray here; bench/replay.py samples through the same functions).

Seeds. Trial n's sampler is seeded from (search seed, n) through numpy's ``SeedSequence``, a
proper mixer: two search seeds share no configuration (``seed + n`` made seed 2 replay seed 1
shifted by one trial), and a continued search samples what the uninterrupted one would have,
given the same history.

The view. TPE learns from an in-memory study of the record as it is before each sample, not
from the persisted one (which optuna-dashboard reads): there a trial paused at a rung is
still running, and TPE would not see it until the search ends. In the view a finished trial is
COMPLETE with its best value; a trial stopped or paused is PRUNED with its values at the
rungs it reached, keyed by the rung's index, so TPE ranks it by (rungs reached, value there),
at equal training whatever its cost per epoch. A trial whose highest rung the scheduler no
longer trusts is left out: a ranking that does not hold teaches nothing.

With several objectives Optuna keeps no intermediate values, so the view compares trials at
one fidelity, as BOHB does (Falkner et al., 2018): the highest trusted rung that at least
``len(space) + 1`` trials reached (``view_fidelity``). Every trial with a value there is
COMPLETE with its point at that rung; one that stopped below it is PRUNED. Telling finished
trials alone as COMPLETE made MOTPE learn from the trials a time limit lets finish, which are
the costliest per epoch (in the flagship job, ``large``: half its minutes).

The searcher keeps the view's trials between samples (``KeptView``): a recorded trial is
observed again only when its status or its epochs changed, and the trust of each rung is asked
again at each sample, so each view holds what one built afresh from the whole record would, in
the same order (TPE weighs trials by their order), and a continued search samples what the
uninterrupted one did. A view is a new in-memory study each sample, filled with the kept trials
themselves: Optuna's ``add_trials`` deep-copies each, which at 1,000 trials cost more than TPE.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from trainables.objective import Objective, is_number
from trainables.results.record import (
    ENDED,
    FAILED,
    FINISHED,
    RUNNING,
    STOPPED,
    TrialRecord,
)
from trainables.search.schedulers.base import rung_at
from trainables.spec.distributions import Choice, optuna_scalar

optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial_seed(search_seed: int, number: int) -> int:
    """The sampler seed of the search's trial ``number``."""
    return int(np.random.SeedSequence([search_seed % 2**63, number]).generate_state(1)[0])


def startup_point(search: dict[str, Any], search_seed: int, number: int) -> dict[str, Any]:
    """The choice values of TPE's ``number``-th random start-up trial: each value of every
    choice once before any repeats (in a seeded order), so a question like "which size?" is
    measured for every answer. Numbers from 10**9 up seed the orders, apart from the trials'."""
    point = {}
    for path, dist in search.items():
        if isinstance(dist, Choice):
            order = list(dist.values)
            np.random.default_rng(trial_seed(search_seed, 10**9 + len(point))).shuffle(order)
            point[path] = optuna_scalar(order[number % len(order)])
    return point


def new_sampler(kind: str, search_seed: int, number: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """``optuna``: TPE after ``startup_trials`` random ones; ``random`` (and grid's free values): random.
    On a view with several directions TPE is Optuna's multi-objective TPE: chosen over NSGA-II
    by ``python -m bench.mo_sampler`` (higher median hypervolume after 20 and 40 trials), and
    NSGA-II keeps its generations in its study, which the view rebuilt per sample does not."""
    seed = trial_seed(search_seed, number)
    if kind == "optuna":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)


@dataclass
class Observation:
    """What the sampler may learn from one trial."""

    params: dict[str, Any]  # Optuna's values of the searched paths
    complete: bool  # finished its budget (value = its best); otherwise stopped or paused at a rung
    value: float | list[float] | None  # with several objectives: the trial's point (TrialRecord.point)
    rung_values: dict[int, float]  # rung index -> the value when it reached that rung


def values_at_rungs(results: Iterable[tuple[float, float | None]], rungs: Sequence[float]) -> dict[int, float]:
    """Rung index -> the value of the first result that stands for that rung (``rung_at``;
    results in order). A rung a result skipped has no value."""
    found: dict[int, float] = {}
    for t, value in results:
        k = rung_at(t, rungs)
        if is_number(value) and k is not None and k not in found:
            found[k] = float(value)
    return found


def trial_observation(trial: TrialRecord, space: dict[str, optuna.distributions.BaseDistribution],
                      objective: Objective, results: Iterable[tuple[float, float | None]],
                      rungs: Sequence[float], objectives: Sequence[Objective] = ()) -> Observation | None:
    """What the sampler may learn from a recorded trial (the search's own, or an earlier
    search's in a warm start), given its ``results`` in the scheduler's count: None while it
    runs or when it failed; a finished trial is complete with its best value (with several
    ``objectives``, its point), a stopped or paused one has its values at ``rungs``."""
    if trial.status in (RUNNING, FAILED):
        return None
    value = told_value(trial, objectives) if len(objectives) > 1 else trial.best_value(objective)
    return Observation(params={p: optuna_scalar(trial.config[p]) for p in space if p in trial.config},
                       complete=trial.status == FINISHED, value=value,
                       rung_values=values_at_rungs(results, rungs))


def told_value(trial: TrialRecord, objectives: Sequence[Objective]) -> float | list[float] | None:
    """A trial's value as Optuna is told it: its best value, or with several objectives its
    point (TrialRecord.point), None unless every value is a number."""
    if len(objectives) == 1:
        return trial.best_value(objectives[0])
    point = trial.point(objectives)
    return point if point is not None and all(is_number(v) for v in point) else None


def optuna_state(status: str, best: float | list[float] | None) -> optuna.trial.TrialState | None:
    """What Optuna is told of a trial in the record's ``status`` with best value ``best`` (with
    several objectives its point, None unless every value is a number):
    None while it has not ended (running, paused, interrupted). The one mapping, for the
    persisted study (searcher.py) and the report's (results/search_data.py)."""
    if status == FINISHED and best is not None:
        return optuna.trial.TrialState.COMPLETE
    if status == STOPPED and best is not None:
        return optuna.trial.TrialState.PRUNED  # not COMPLETE with a low-fidelity value
    if status in ENDED:
        return optuna.trial.TrialState.FAIL  # failed, or ended before any value
    return None


def sampler_view(space: dict[str, optuna.distributions.BaseDistribution], direction: str | Sequence[str],
                 observations: Iterable[Observation], trusted: Callable[[int], bool] = lambda k: True) -> optuna.Study:
    """An in-memory study of the observations the sampler may learn from (see the module).

    With several directions (objectives) the trials are compared at ``view_fidelity``'s rung
    (see the module): Optuna keeps no intermediate values in a multi-objective study."""
    directions = _directions(direction)
    observations = list(observations)
    fidelity = view_fidelity(observations, space, directions, trusted)
    told = (view_trial(seen, space, directions, fidelity) for seen in observations)
    return _study(directions, [trial for trial, rung in told if trial is not None and (rung is None or trusted(rung))])


def view_fidelity(observations: Sequence[Observation], space: dict[str, optuna.distributions.BaseDistribution],
                  directions: Sequence[str], trusted: Callable[[int], bool]) -> int | None:
    """With several objectives, the rung index at which the view compares trials: the highest
    trusted one that at least ``len(space) + 1`` trials reached (BOHB's rule for the budget its
    model is fitted on); None with one objective, or before any rung has that many (then
    finished trials are told with their points and the others PRUNED)."""
    if len(directions) == 1:
        return None
    reached: dict[int, int] = {}
    for seen in observations:
        for k in seen.rung_values:
            reached[k] = reached.get(k, 0) + 1
    enough = [k for k, n in reached.items() if n >= len(space) + 1 and trusted(k)]
    return max(enough) if enough else None


def view_trial(seen: Observation, space: dict[str, optuna.distributions.BaseDistribution],
               directions: Sequence[str], fidelity: int | None = None
               ) -> tuple[optuna.trial.FrozenTrial | None, int | None]:
    """The view's trial for one observation (None: nothing to tell), and the rung whose trust
    decides whether the view holds it (None: it does, whatever the trust). With several
    objectives and a ``fidelity`` (``view_fidelity``), a trial that reached that rung is
    COMPLETE with its point there: the quality at the rung and its costs (the trial's own,
    which the training does not change)."""
    several = len(directions) > 1
    params = {p: v for p, v in seen.params.items() if p in space}
    distributions = {p: space[p] for p in params}
    values = list(seen.value) if several and isinstance(seen.value, (list, tuple)) else [seen.value]
    if several and fidelity is not None:  # at that rung or not at all: a finished trial too
        at_rung = [seen.rung_values.get(fidelity), *values[1:]]
        if len(at_rung) == len(directions) and all(is_number(v) for v in at_rung):
            return optuna.trial.create_trial(params=params, distributions=distributions, values=at_rung), fidelity
    elif seen.complete and len(values) == len(directions) and all(is_number(v) for v in values):
        return optuna.trial.create_trial(params=params, distributions=distributions, values=values), None
    if seen.rung_values:
        return optuna.trial.create_trial(params=params, distributions=distributions,
                                         state=optuna.trial.TrialState.PRUNED,
                                         intermediate_values={} if several else dict(seen.rung_values)), \
            max(seen.rung_values)
    return None, None


class KeptView:
    """``sampler_view`` kept between samples. Each source of observations (a recorded trial, an
    earlier search's) comes with a key and a token that changes whenever its observation may
    have (the trial's status and epoch count): only a source whose token changed is observed
    again. Which trials the view holds, and in which order, is decided afresh each time (the
    sources' order, each rung's trust now), so every view is the one ``sampler_view`` would
    build from every source's observation."""

    def __init__(self, space: dict[str, optuna.distributions.BaseDistribution], direction: str | Sequence[str]) -> None:
        self.space = space
        self.directions = _directions(direction)
        # key -> (token, its observation or None, and once made: (the fidelity it was made at,
        # the view's trial or None, the rung whose trust decides or None))
        self._kept: dict[Hashable, tuple[Hashable, Observation | None,
                                         tuple[int | None, optuna.trial.FrozenTrial | None, int | None] | None]] = {}

    def view(self, sources: Iterable[tuple[Hashable, Hashable, Callable[[], Observation | None]]],
             trusted: Callable[[int], bool] = lambda k: True) -> optuna.Study:
        """The view of ``sources``, in order: (key, token, a call that observes the source)."""
        keys = []
        for key, token, observe in sources:
            kept = self._kept.get(key)
            if kept is None or kept[0] != token:
                self._kept[key] = (token, observe(), None)
            keys.append(key)
        observed = [self._kept[key][1] for key in keys]
        fidelity = view_fidelity([seen for seen in observed if seen is not None], self.space, self.directions, trusted)
        trials = []
        for key in keys:
            token, seen, made = self._kept[key]
            if seen is None:
                continue
            if made is None or made[0] != fidelity:  # new, changed, or the view's fidelity moved
                made = (fidelity, *view_trial(seen, self.space, self.directions, fidelity))
                self._kept[key] = (token, seen, made)
            _, trial, rung = made
            if trial is not None and (rung is None or trusted(rung)):
                trials.append(trial)
        return _study(self.directions, trials)


def _directions(direction: str | Sequence[str]) -> list[str]:
    return [direction] if isinstance(direction, str) else list(direction)


def _study(directions: list[str], trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    """A new in-memory study holding ``trials`` in order, numbered 0, 1, ... as ``add_trials``
    would number copies of them. The trials themselves are held (a kept trial is in every view
    made of it, each view numbering it anew): a view serves one sample, before the next is made."""
    storage = _SharedTrialStorage()
    study = optuna.create_study(storage=storage, directions=directions)
    storage.hold(study._study_id, trials)
    return study


class _SharedTrialStorage(optuna.storages.InMemoryStorage):
    """Optuna's in-memory storage, given finished trials as they are: ``add_trials`` deep-copies
    each (about 0.2 ms a trial, over the whole view at every sample), and updates the best trial
    after each. ``hold`` fills what ``InMemoryStorage.create_new_trial`` does;
    tests/test_sampler_view.py checks that a study built by ``add_trials`` samples the same."""

    def hold(self, study_id: int, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Hold ``trials`` (finished), in order, in the empty study ``study_id``."""
        with self._lock:
            info = self._studies[study_id]
            assert not info.trials, "a view's study is filled once"
            for number, trial in enumerate(trials):
                self._max_trial_id += 1
                trial.number, trial._trial_id = number, self._max_trial_id
                self._trial_id_to_study_id_and_number[trial._trial_id] = (study_id, number)
            info.trials.extend(trials)
            # As create_new_trial keeps it: the first complete trial, or with one objective
            # the first of the best.
            complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            if len(info.directions) == 1 and complete:
                pick = max if info.directions[0] == optuna.study.StudyDirection.MAXIMIZE else min
                complete = [pick(complete, key=lambda t: t.value)]
            info.best_trial_id = complete[0]._trial_id if complete else None


def sample(view: optuna.Study, space: dict[str, optuna.distributions.BaseDistribution],
           sampler: optuna.samplers.BaseSampler, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """One configuration (Optuna's values) from ``sampler`` on ``view``; ``fixed`` values (a grid
    point) are taken as given and the rest sampled."""
    view.sampler = sampler
    if fixed:
        view.enqueue_trial(fixed, skip_if_exists=False)
    trial = view.ask(space)
    params = dict(trial.params)
    view.tell(trial, state=optuna.trial.TrialState.FAIL)  # a view serves one sample
    return params
