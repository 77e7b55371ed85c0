"""bench/mfhartmann.py and bench/replay.py: the synthetic benchmark is exact where it must be,
its low fidelity misleads where it should, and the replay drives the service's scheduler
policies deterministically and as their rules say. Fast (no Ray, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from bench import mfhartmann
from bench.replay import Method, hartmann, mnist1d, replay, scheduler
from trainables.search.schedulers.promotion import promotion_rungs


@pytest.mark.parametrize("preset", sorted(mfhartmann.PRESETS))
def test_hartmann_is_exact_at_the_highest_fidelity(preset: str) -> None:
    assert mfhartmann.value(mfhartmann.OPTIMUM_X, preset) == pytest.approx(mfhartmann.OPTIMUM, abs=1e-5)
    x = np.random.default_rng(0).random((20, 3))
    exact = [mfhartmann.value(p, "default", 100) for p in x]
    assert [mfhartmann.curve(p, preset)[-1] for p in x] == pytest.approx(exact, abs=1e-12)
    assert min(exact) > mfhartmann.OPTIMUM


def test_hartmann_curves_are_reproducible() -> None:
    x = (0.3, 0.6, 0.9)
    full = mfhartmann.curve(x, "terrible")
    assert full == mfhartmann.curve(x, "terrible")
    assert mfhartmann.curve(x, "terrible", [5, 50]) == [full[4], full[49]]
    assert len(set(full)) == len(full)  # noise differs per fidelity


def test_low_fidelity_reorders_configurations_on_terrible() -> None:
    x = np.random.default_rng(1).random((200, 3))
    curves = np.array([mfhartmann.curve(p, "terrible") for p in x])
    low_high = spearmanr(curves[:, 0], curves[:, -1])[0]
    near_end = spearmanr(curves[:, 80], curves[:, -1])[0]
    assert low_high < 0.2
    assert near_end > 0.8


def test_mnist1d_maps_a_recorded_configuration_to_its_own_curve() -> None:
    corpus = mnist1d()
    import json

    from bench.mnist1d_space import CALIBRATION_FILE

    run = json.loads(CALIBRATION_FILE.read_text())["runs"][7]
    assert corpus.curve_of(run["config"]) == run["val_accuracy"]


def small(preset: str = "good"):
    """A few dozen trials: 2 workers, 400 simulated s, a start of 5 s."""
    return hartmann(preset, start_s=5.0, budget_s=400.0, workers=2)


@pytest.mark.parametrize("kind", ["promotion", "asha", "hyperband", "none"])
def test_replay_is_deterministic(kind: str) -> None:
    corpus = small()
    method = Method(kind, scheduler(kind, 1, 3.0))
    first, again, other = replay(corpus, method, 3), replay(corpus, method, 3), replay(corpus, method, 4)
    assert first.points == again.points
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert first.points != other.points
    assert first.trials_started >= 4 and first.epochs_trained > 0
    assert all(t <= corpus.budget_s for t, *_ in first.points)
    assert math.isfinite(first.regret_by(corpus.budget_s)) and first.regret_by(corpus.budget_s) >= 0


@pytest.mark.parametrize("eta", [2.0, 3.0])
def test_promotion_passes_a_rung_only_from_the_top_of_enough_entries(eta: float) -> None:
    corpus = small("terrible")
    method = Method("promotion", scheduler("promotion", 1, eta, trust_correlation=-1.0))  # every rung trusted
    run = replay(corpus, method, 0, log=True)
    rungs = promotion_rungs(1, eta, corpus.max_t)
    entries: dict[float, dict[str, float]] = {r: {} for r in rungs}
    passes = pauses = 0
    for event in run.log:
        if event["e"] == "result":
            for rung in rungs:
                if event["t"] >= rung:
                    entries[rung].setdefault(event["id"], event["value"])
        went_on = event["e"] == "result" and event["t"] in rungs and event["decision"] == "CONTINUE"
        promoted = event["e"] == "promote" and event["new_left"]
        if went_on or promoted:
            rung = event["t"] if went_on else event["rung"]
            values = entries[rung]
            better = sum(v < values[event["id"]] for v in values.values())
            assert len(values) >= eta, event
            assert better < math.floor(len(values) / eta + 1e-9), event
            passes += 1
        pauses += event["e"] == "paused"
    assert passes > 0 and pauses > 0
