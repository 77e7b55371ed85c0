"""The scheduler kinds' decisions, without Ray: promotion-type ASHA pauses and promotes by the
rules of Li et al., rebuilds itself from the record, and stops trusting a rung whose ranking
does not hold; seeds of different searches share no configuration."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from trainables.objective import Objective
from trainables.results.record import PAUSED, SearchRecord
from trainables.search.sampling import Observation, new_sampler, sample, sampler_view, trial_seed, values_at_rungs
from trainables.search.schedulers import CONTINUE, PAUSE, POLICIES, STOP
from trainables.spec.schedulers import AshaScheduler, PromotionScheduler

MIN = Objective("val_loss", "min")


def _promotion(**kw) -> object:
    spec = PromotionScheduler(type="promotion", grace_period=1, reduction_factor=3, **kw)
    return POLICIES["promotion"](spec, MIN, 9)


def test_promotion_rungs_stop_below_max_t() -> None:
    assert _promotion().rungs() == [1, 3]


def test_first_arrival_pauses_and_only_the_top_third_of_three_or_more_goes_on() -> None:
    policy = _promotion()
    assert policy.on_result("a", 1, 0.5) == PAUSE  # first at the rung: never a reason
    assert policy.on_result("b", 1, 0.9) == PAUSE
    assert policy.candidates(new_trials_left=True) == []  # two entries < eta
    assert policy.on_result("c", 1, 0.7) == PAUSE
    assert policy.candidates(new_trials_left=True) == ["a"]  # top floor(3/3) = the best
    policy.promote("a")
    assert policy.paused() == {"b": 1, "c": 1}
    assert policy.on_result("a", 2, 0.4) == CONTINUE  # between rungs
    assert policy.on_result("d", 1, 0.95) == PAUSE
    assert policy.candidates(new_trials_left=True) == []  # the top floor(4/3) = a, promoted already
    # With no new configurations left, the top ceil(4/3) = 2 qualify: a, and c after it.
    assert policy.candidates(new_trials_left=False) == ["c"]


def test_a_trial_the_rung_would_promote_at_once_goes_on_without_a_restart() -> None:
    policy = _promotion()
    policy.on_result("a", 1, 0.9)
    policy.on_result("b", 1, 0.8)
    assert policy.on_result("c", 1, 0.1) == CONTINUE  # it is the rung's top third at arrival
    assert policy.rung_of("c") == 1 and "c" not in policy.paused()
    assert policy.on_result("c", 9, 0.05) == STOP  # max_t: its budget


def test_an_untrusted_rung_lets_its_trials_through() -> None:
    policy = _promotion(trust_correlation=0.0, trust_pairs=2)
    for trial, early in zip("abcdef", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]):
        policy.on_result(trial, 1, early)
    for trial in "ab":  # the early best (top ceil(6/3) = 2) are promoted ...
        assert policy.candidates(new_trials_left=False)[0] == trial
        policy.promote(trial)
    for trial, late in zip("ab", [0.9, 0.8]):  # ... and end in the reverse order
        policy.on_result(trial, 9, late)
    assert policy.rung_correlation(0) == pytest.approx(-1.0) and not policy.trusted(0)
    assert set(policy.candidates(new_trials_left=True)) == {"c", "d", "e", "f"}  # every paused one may go on
    assert policy.on_result("g", 1, 0.99) == CONTINUE  # no pause at a rung that misleads


def test_promotion_is_rebuilt_from_the_record(tmp_path: Path) -> None:
    record = SearchRecord(tmp_path, MIN).open_for_writing()
    live = _promotion()
    for trial, value in [("a", 0.5), ("b", 0.9), ("c", 0.7), ("d", 0.6)]:
        record.add_trial(trial, {"x": value})
        record.add_epoch(trial, 1, {"val_loss": value, "epoch": 1}, None)
        if live.on_result(trial, 1, value) == PAUSE:
            record.pause_trial(trial, live.rung_of(trial))
    promoted = live.candidates(new_trials_left=True)[0]
    live.promote(promoted)
    record.promote_trial(promoted)
    record.close("interrupted")

    again = _promotion().restore(SearchRecord(tmp_path, MIN), MIN)
    assert again.paused() == live.paused() and again.candidates(True) == live.candidates(True)
    assert again.candidates(False) == live.candidates(False)
    assert {t.trial_id for t in SearchRecord(tmp_path, MIN).trials.values() if t.status == PAUSED} == set(live.paused())


def test_ray_asha_stops_below_the_cutoff_and_names_the_rung() -> None:
    spec = AshaScheduler(type="asha", grace_period=1, reduction_factor=2)
    policy = POLICIES["asha"](spec, MIN, 4)
    assert policy.rungs() == [1, 2]
    assert policy.on_result("a", 1, 0.1) == CONTINUE  # Ray's first arrival goes on
    assert policy.on_result("b", 1, 0.9) == STOP
    assert policy.rung_of("b") == 1


def test_two_search_seeds_share_no_configuration() -> None:
    space = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
    view = sampler_view(space, "minimize", [])

    def configs(seed: int) -> set[float]:
        return {sample(view, space, new_sampler("random", seed, n, 5))["lr"] for n in range(30)}

    assert configs(1).isdisjoint(configs(2))
    assert configs(1) == configs(1)  # and a seed replays itself
    assert trial_seed(1, 2) != trial_seed(2, 1)


def test_the_sampler_learns_from_paused_trials_at_equal_rungs() -> None:
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    seen = [Observation({"x": 0.1 * i}, False, None, {0: float(i)}) for i in range(10)]
    view = sampler_view(space, "minimize", seen)
    assert [t.state for t in view.trials] == [optuna.trial.TrialState.PRUNED] * 10
    assert len(sampler_view(space, "minimize", seen, trusted=lambda k: False).trials) == 0


def test_a_result_that_skipped_a_rung_is_compared_only_at_the_rung_it_stands_for() -> None:
    # Rungs 1 and 3 (max_t 9); one long epoch took trial "big" from 0 to 4: it was never measured at 1.
    policy = _promotion()
    for trial, value in [("a", 0.5), ("b", 0.6), ("c", 0.7)]:
        policy.on_result(trial, 1, value)
    assert policy.on_result("big", 4, 0.1) == PAUSE  # alone at rung 3 (fewer than eta entries there)
    assert policy.rung_of("big") == 3
    assert policy.candidates(new_trials_left=True) == ["a"]  # rung 1 still holds a, b, c only
    assert values_at_rungs([(4, 0.1), (5, 0.05)], [1, 3]) == {1: 0.1}
    assert values_at_rungs([(1, 0.5), (2, 0.4), (3, 0.3)], [1, 3]) == {0: 0.5, 1: 0.3}
