"""Several objectives ranked: non-dominated sorting and crowding distance (trainables/pareto.py),
the ``pareto`` scheduler's decisions at its rungs (MOASHA on promotion's rungs) and its rebuild
from the record, and the multi-objective sampler's view."""

from __future__ import annotations

import math
from pathlib import Path

import optuna

from trainables.objective import PARAMETERS, Objective
from trainables.pareto import crowding_distances, dominates, nondominated_ranks, pareto_order, signed_point
from trainables.results.record import PAUSED, SearchRecord
from trainables.search.sampling import Observation, sampler_view, view_fidelity
from trainables.search.schedulers import CONTINUE, PAUSE, POLICIES, STOP
from trainables.spec.schedulers import ParetoScheduler

LOSS, SIZE = Objective("val_loss", "min"), Objective(PARAMETERS, "min")
OBJECTIVES = [LOSS, SIZE]


def test_signed_points_make_every_objective_smaller_is_better() -> None:
    assert signed_point([0.9, 10], [Objective("val_acc", "max"), SIZE]) == (-0.9, 10.0)
    assert signed_point([0.9, None], OBJECTIVES) is None
    assert signed_point([0.9, float("nan")], OBJECTIVES) is None


def test_non_dominated_ranks_peel_fronts() -> None:
    points = [(1, 5), (2, 2), (5, 1), (3, 3), (4, 4), (6, 6), (1, 5)]
    assert nondominated_ranks(points) == [0, 0, 0, 1, 2, 3, 0]  # an equal point dominates nothing
    assert dominates((1, 1), (1, 2)) and not dominates((1, 2), (2, 1)) and not dominates((1, 1), (1, 1))


def test_crowding_gives_the_extremes_infinity_and_the_rest_their_neighbours_span() -> None:
    distances = crowding_distances([(0, 4), (1, 3), (3, 1), (4, 0)])
    assert distances[0] == distances[3] == math.inf
    assert distances[1] == 3 / 4 + 3 / 4 and distances[2] == 3 / 4 + 3 / 4


def test_pareto_order_is_by_front_then_most_isolated_first() -> None:
    # Front: a, b, c, d (b crowded between a and c, d far out); e lies behind.
    points = {"a": (0, 10), "b": (1, 9), "c": (2, 8), "d": (10, 0), "e": (3, 9)}
    names = list(points)
    order = [names[i] for i in pareto_order(list(points.values()))]
    assert order[:2] == ["a", "d"]  # the extremes
    assert order[2:4] == ["c", "b"]  # c spans (1..10, 0..9), b only (0..2, 8..10)
    assert order[4] == "e"


def _pareto(**kw) -> object:
    spec = ParetoScheduler(type="pareto", grace_period=1, reduction_factor=3, **kw)
    return POLICIES["pareto"](spec, OBJECTIVES, 9)


def test_a_small_model_with_a_fair_loss_goes_on_beside_the_best_loss() -> None:
    """Six trials at a rung, eta 3: two go on. One metric would take the two best losses (both
    large models); MOASHA takes the best loss and the small model that no other beats."""
    policy = _pareto()
    arrivals = [("a", 0.40, 100), ("b", 0.42, 100), ("c", 0.45, 100), ("d", 0.60, 1), ("e", 0.50, 100),
                ("f", 0.70, 1)]
    for trial, loss, size in arrivals:
        policy.on_result(trial, 1, (loss, size))
    assert set(policy.paused()) == set("abcdef")  # the first arrivals never go on for being first
    assert policy.candidates(new_trials_left=True) == ["a", "d"]  # the front, extremes both
    one_metric = POLICIES["promotion"](ParetoScheduler(type="pareto", grace_period=1, reduction_factor=3), LOSS, 9)
    for trial, loss, _ in arrivals:
        one_metric.on_result(trial, 1, loss)
    assert one_metric.candidates(new_trials_left=True) == ["a", "b"]


def test_first_arrivals_pause_and_a_dominated_trial_waits_behind_the_front() -> None:
    policy = _pareto()
    assert policy.on_result("a", 1, (0.5, 10)) == PAUSE
    assert policy.on_result("b", 1, (0.9, 1)) == PAUSE
    assert policy.candidates(new_trials_left=True) == []  # fewer than eta entries
    assert policy.on_result("c", 1, (0.95, 12)) == PAUSE  # dominated by a
    assert policy.candidates(new_trials_left=True) == ["a"]  # top floor(3/3): a front extreme, the first
    # No new configurations left: the top ceil(3/3) = 1 still; c never before a front trial.
    assert policy.candidates(new_trials_left=False) == ["a"]
    policy.promote("a")
    assert policy.on_result("a", 9, (0.3, 10)) == STOP  # max_t: its budget
    assert policy.on_result("x", 1, (None, 3)) == CONTINUE  # an objective missing: not ranked


def test_pareto_is_rebuilt_from_the_record(tmp_path: Path) -> None:
    record = SearchRecord(tmp_path, LOSS).open_for_writing()
    live = _pareto()
    for trial, loss, size in [("a", 0.5, 10), ("b", 0.9, 1), ("c", 0.95, 12), ("d", 0.6, 11)]:
        record.add_trial(trial, {"x": loss})
        record.add_epoch(trial, 1, {"val_loss": loss, PARAMETERS: size, "epoch": 1}, None)
        if live.on_result(trial, 1, (loss, size)) == PAUSE:
            record.pause_trial(trial, live.rung_of(trial))
    promoted = live.candidates(new_trials_left=True)[0]
    live.promote(promoted)
    record.promote_trial(promoted)
    record.close("interrupted")

    again = _pareto().restore(SearchRecord(tmp_path, LOSS), LOSS)
    assert again.paused() == live.paused() and again.candidates(False) == live.candidates(False)
    assert {t.trial_id for t in SearchRecord(tmp_path, LOSS).trials.values() if t.status == PAUSED} == set(live.paused())


def test_the_multi_objective_view_tells_points_and_prunes_without_values() -> None:
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    seen = [Observation({"x": 0.1}, True, [0.5, 10.0], {}), Observation({"x": 0.2}, False, None, {0: 0.9})]
    view = sampler_view(space, ["minimize", "minimize"], seen)
    assert [t.state for t in view.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert view.trials[0].values == [0.5, 10.0] and view.trials[1].intermediate_values == {}
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=1)
    from trainables.search.sampling import sample

    assert 0 <= sample(view, space, sampler)["x"] <= 1  # multi-objective TPE samples on it


def test_with_two_objectives_the_view_compares_trials_at_the_highest_rung_enough_reached() -> None:
    """BOHB's rule (sampling.view_fidelity): with one searched value, two trials at a rung are
    enough. Every trial with a value there is COMPLETE with its point at the rung (its costs
    kept); a finished one that has none there, and one stopped below it, are PRUNED."""
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    seen = [Observation({"x": 0.1}, True, [0.4, 10.0], {0: 0.6, 1: 0.4}),  # finished
            Observation({"x": 0.2}, False, [0.5, 2.0], {0: 0.5}),  # paused at rung 0
            Observation({"x": 0.3}, False, [0.9, 50.0], {0: 0.9}),  # stopped at rung 0
            Observation({"x": 0.4}, True, [0.3, 80.0], {1: 0.3})]  # finished, its one epoch passed rung 0
    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED

    view = sampler_view(space, ["minimize", "minimize"], seen)  # rung 0: three trials, rung 1: two
    assert view_fidelity(seen, space, ["minimize", "minimize"], lambda k: True) == 1
    assert [(t.state, t.values) for t in view.trials] == [(complete, [0.4, 10.0]), (pruned, None), (pruned, None),
                                                          (complete, [0.3, 80.0])]
    view = sampler_view(space, ["minimize", "minimize"], seen[:3])  # rung 1: one trial, not enough
    assert [(t.state, t.values) for t in view.trials] == [(complete, [0.6, 10.0]), (complete, [0.5, 2.0]),
                                                          (complete, [0.9, 50.0])]
    view = sampler_view(space, ["minimize", "minimize"], seen, trusted=lambda k: k == 0)  # rung 1 not trusted
    assert [t.values for t in view.trials] == [[0.6, 10.0], [0.5, 2.0], [0.9, 50.0]]
    assert view_fidelity(seen, space, ["minimize"], lambda k: True) is None  # one objective: intermediate values
    assert sampler_view(space, ["minimize", "minimize"], seen[:1]).trials[0].values == [0.4, 10.0]  # too few: final
