"""bench/mo_hypervolume.py: its hypervolume is measured honestly (never falls, never beats the
true front, nothing worse than the reference counts), the three methods get the same budget,
and the replay's multi-objective path ranks rungs by both objectives. Fast (no Ray)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench import mo_hypervolume as mo
from bench.mo_sampler import hypervolume
from bench.replay import Run, replay

BUDGET_S = 300.0  # the quick setting's


@pytest.fixture(scope="module")
def runs() -> dict[str, list[Run]]:
    return mo.run_all(mo.sized_hartmann(BUDGET_S), seeds=2)


def test_hypervolume_never_falls_and_stays_below_the_true_front(runs: dict[str, list[Run]]) -> None:
    bound = mo.true_front_hypervolume()
    for name, per_seed in runs.items():
        for run in per_seed:
            curve = [mo.hypervolume_by(run, t) for t in np.arange(0.0, BUDGET_S + 1, 10.0)]
            assert all(b >= a for a, b in itertools.pairwise(curve)), name
            assert 0 < curve[-1] < bound, name


def test_the_three_methods_see_the_same_budget(runs: dict[str, list[Run]]) -> None:
    for name, per_seed in runs.items():
        for run in per_seed:
            assert run.corpus.budget_s == BUDGET_S and run.corpus.workers == mo.WORKERS, name
            assert all(t <= BUDGET_S for t, *_ in run.points), name
            # Nobody stops early: each keeps its workers busy until the last epoch fits.
            assert max(t for t, *_ in run.points) > 0.9 * BUDGET_S, name


def test_nothing_worse_than_the_reference_counts() -> None:
    ref = mo.REFERENCE
    front = [(mo.mfhartmann.OPTIMUM + mo.floor(s), mo.log_params(s)) for s in mo.SIZES]
    assert all(f < ref[0] and c < ref[1] for f, c in front)  # every size can count
    assert hypervolume([(ref[0], 6.0), (-1.0, ref[1]), (0.5, 5.0)], ref) == 0.0
    assert hypervolume([(-1.0, 7.0), (0.5, 5.0)], ref) == pytest.approx(1.0)


def test_a_low_fidelity_never_flatters() -> None:
    """So a run's observed points lie behind the true front, and sampling many configurations
    briefly cannot buy hypervolume with lucky noise."""
    rng = np.random.default_rng(0)
    for size in mo.SIZES:
        for x in rng.random((20, 3)):
            curve = mo.curve({"x0": x[0], "x1": x[1], "x2": x[2], "size": size})
            assert min(curve) >= curve[-1] - 1e-12
            assert curve[-1] > mo.mfhartmann.OPTIMUM + mo.floor(size)


def test_the_service_default_pauses_on_both_objectives(runs: dict[str, list[Run]]) -> None:
    run = runs[mo.methods()[0].name][0]
    entries = run.policy._entries[0]  # the first rung's (f, cost) points
    assert len(entries) >= 3 and all(len(point) == 2 for point in entries.values())
    assert {round(cost, 6) for _, cost in entries.values()} <= {round(mo.log_params(s), 6) for s in mo.SIZES}
    stopped_early = [t for t in run.trials if t.done < run.corpus.max_t and t.status != "running"]
    assert stopped_early  # it paused trials, where (b) and (c) train every one to the end
    assert len(run.trials) > max(len(runs[m.name][0].trials) for m in mo.methods()[1:])


def test_table_says_whether_the_target_is_met(runs: dict[str, list[Run]]) -> None:
    corpus = mo.sized_hartmann(BUDGET_S)
    table = mo.table(corpus, runs)
    rows = {row[0]: row for row in table.rows}
    verdict = rows["(a) higher than (b) and (c)?"][1:1 + len(mo.CHECKPOINTS)]
    a, b, c = (rows[m.name][1:1 + len(mo.CHECKPOINTS)] for m in mo.methods())
    assert verdict == ["yes" if x > max(y, z) else "no" for x, y, z in zip(a, b, c)]
    expected = "met" if verdict == ["yes"] * len(verdict) else "not met"
    assert f"target: (a) higher than both at every checkpoint: {expected}" in table.notes


def test_replay_is_deterministic_with_two_objectives() -> None:
    corpus = mo.sized_hartmann(BUDGET_S)
    method = mo.methods()[0]
    assert replay(corpus, method, 5).points_by(BUDGET_S) == replay(corpus, method, 5).points_by(BUDGET_S)
