"""The sampler's view kept between samples (sampling.KeptView, StudySearcher._view) against the
view built afresh from the whole record: the same samples at every step of a search whose
trials report epochs, pause, are promoted, stop and finish while a rung's trust changes. No Ray."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.specs import tiny_mae_spec, write_spec
from trainables.results.record import FINISHED, STOPPED, TRIAL_SECONDS, SearchRecord
from trainables.search.costs import UNMEASURED_MARGIN
from trainables.search.sampling import new_sampler, sample, sampler_view, view_fidelity
from trainables.search.schedulers import PAUSE, STOP, build_scheduler
from trainables.spec.loading import load_spec
from trainables.spec.resources import GIB
from trainables.spec.schema import ResourceOverride

LR, WD, SIZE = "training.lr", "training.weight_decay", "model.args.size"


def _searcher(tmp_path: Path, objectives: int = 1, sizes: tuple[str, ...] = ("tiny", "small"), startup: int = 2):
    from trainables.search.searcher import StudySearcher

    raw = tiny_mae_spec("kept")
    if objectives == 2:
        raw["objectives"] = [{"metric": "val_mse", "mode": "min"}, {"metric": "cost_params", "mode": "min"}]
    raw["search"] = {LR: {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2},
                     WD: {"type": "uniform", "low": 0.0, "high": 0.1},
                     SIZE: {"type": "choice", "values": list(sizes)}}
    raw["searcher"] = {"type": "optuna", "seed": 3, "startup_trials": startup}
    raw["training"]["epochs"] = 4
    # Rungs at epochs 1 and 2 (max_t 4); a rung's trust is checked once 3 trials allow it.
    raw["scheduler"] = {"type": "promotion" if objectives == 1 else "pareto", "grace_period": 1,
                        "reduction_factor": 2, "trust_pairs": 3}
    raw["budget"]["trials"] = 100
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    out = tmp_path / "out"
    record = SearchRecord(out, spec.objective)
    policy = build_scheduler(spec, record).policy
    record.open_for_writing()
    return StudySearcher(spec, out, record, policy), record, policy


def _curve(i: int) -> list[float]:
    """Trial i's val_mse by epoch: for the first trials the order at epoch 1 is the reverse of
    the order later (rung 0 loses the trust), for the later ones it holds (and may win it back)."""
    late = 0.2 + 0.05 * ((7 * i) % 11)
    early = 1.2 - late if i < 8 else late + 0.3
    return [early, late + 0.1, late + 0.05, late]


@pytest.mark.parametrize("objectives", [1, 2])
def test_a_kept_view_samples_what_a_view_rebuilt_from_the_record_does(tmp_path: Path, objectives: int) -> None:
    """With two objectives (quality, parameters) the view's fidelity moves up a rung as trials
    reach it, and each kept trial is told again at the new one."""
    searcher, record, policy = _searcher(tmp_path, objectives)
    space, metric = searcher._space, searcher.spec.metric
    directions = [o.optuna_direction for o in searcher.spec.objectives]
    rng = np.random.default_rng(0)
    trusts, states, compared, fidelities = set(), set(), 0, set()

    def compare() -> None:
        nonlocal compared
        number = len(record.trials)
        kept = sample(searcher._view(), space, new_sampler("optuna", 3, number, 2))
        seen = [o for o in (searcher.observation(t) for t in record.trials.values()) if o is not None]
        rebuilt_view = sampler_view(space, directions, seen, policy.trusted)
        fidelities.add(view_fidelity(seen, space, directions, policy.trusted))
        states.update(t.state for t in rebuilt_view.trials)
        public = optuna.create_study(directions=directions)  # Optuna's own add_trials, deep copies
        public.add_trials(copy.deepcopy(rebuilt_view.trials))
        rebuilt = sample(rebuilt_view, space, new_sampler("optuna", 3, number, 2))
        assert kept == rebuilt == sample(public, space, new_sampler("optuna", 3, number, 2)), \
            f"after {compared} samples ({number} trials)"
        trusts.add(policy.trusted(0))
        compared += 1

    def epoch(trial_id: str) -> None:
        trial = record.trials[trial_id]
        e = len(trial.epochs) + 1
        metrics = {metric: _curve(trial.number)[e - 1], "epoch": e,
                   "cost_params": 1000.0 if trial.config[SIZE] == "tiny" else 4000.0}
        record.add_epoch(trial_id, e, metrics, None)
        decision = policy.on_result(trial_id, e, policy.value_of(metrics))
        if e >= 4:
            policy.on_end(trial_id)
            record.end_trial(trial_id, FINISHED, "budget")
        elif decision == PAUSE:
            record.pause_trial(trial_id, policy.rung_of(trial_id))
        elif decision == STOP:
            record.end_trial(trial_id, STOPPED, "scheduler", rung=e)

    running: list[str] = []
    for step in range(30):
        while len(running) < 2:  # a free slot: a promotion first, else a new trial (as the searcher fills it)
            promoted = policy.candidates(new_trials_left=True)[:1]
            for trial_id in promoted:
                policy.promote(trial_id)
                record.promote_trial(trial_id)
                record.add_trial(trial_id, {})
            if not promoted:
                trial_id = f"t{len(record.trials)}"
                record.add_trial(trial_id, {LR: float(10 ** rng.uniform(-4, -2)), WD: float(rng.uniform(0, 0.1)),
                                            SIZE: str(rng.choice(["tiny", "small"]))})
            running.append(trial_id)
            compare()
        trial_id = running[int(rng.integers(len(running)))]  # either of the two reports next: ends come out of order
        epoch(trial_id)
        if record.trials[trial_id].status == "running" and step % 7 == 3:  # the time limit stops one
            record.end_trial(trial_id, STOPPED, "time limit")
        if record.trials[trial_id].status != "running":
            running.remove(trial_id)
        compare()
        if step == 20:  # one fails mid-way
            record.end_trial(running.pop(0), "failed", "boom")
            compare()

    assert trusts == {True, False}, "rung 0's trust never changed: the sequence tests less than it claims"
    assert fidelities == ({None} if objectives == 1 else {None, 0, 1}), fidelities
    assert {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED} <= states
    assert {"paused", STOPPED, FINISHED, "failed"} <= {t.status for t in record.trials.values()}
    searcher.projection.flush()
    record.close("interrupted")


def test_a_sample_too_slow_for_the_time_left_runs_in_the_costliest_size_that_fits(tmp_path: Path) -> None:
    """The flagship search ended 4 of its 13 minutes early: TPE, having seen only `large` finish,
    kept sampling sizes that could not reach their first rung in the time left. Such a sample now
    runs in the costliest size that can (its other values kept); none fitting ends the sampling."""
    searcher, record, policy = _searcher(tmp_path)
    searcher.spec.search[SIZE].values.append("base")  # three sizes; costs grow tiny < small < base
    for trial_id, size, epoch_s in (("t0", "tiny", 10.0), ("t1", "base", 300.0)):
        record.add_trial(trial_id, {LR: 1e-3, WD: 0.0, SIZE: size})
        record.add_epoch(trial_id, 1, {"val_mse": 1.0, "epoch": 1, TRIAL_SECONDS: epoch_s}, None)
    small_s = searcher.costs.epoch_seconds({SIZE: "small"})
    assert 10.0 < small_s < 300.0  # estimated from the measured sizes by parameter count

    sampled = {LR: 2e-3, WD: 0.05, SIZE: "base"}
    searcher.seconds_left = lambda: 1000.0
    assert searcher._fitting(sampled, 1) == sampled
    searcher.seconds_left = lambda: UNMEASURED_MARGIN * small_s + 5  # small is estimated, with its margin
    assert searcher._fitting(sampled, 1) == {**sampled, SIZE: "small"}
    searcher.seconds_left = lambda: small_s + 5  # enough for the bare estimate, not for its margin
    assert searcher._fitting(sampled, 1) == {**sampled, SIZE: "tiny"}
    searcher.seconds_left = lambda: UNMEASURED_MARGIN * small_s + 5
    assert searcher._fitting(sampled, 1) == {**sampled, SIZE: "small"}
    searcher.seconds_left = lambda: 15.0
    assert searcher._fitting(sampled, 1) == {**sampled, SIZE: "tiny"}
    searcher.seconds_left = lambda: 5.0
    assert searcher._fitting(sampled, 1) is None
    assert searcher._new_config(len(record.trials)) is None and searcher._no_new


def test_a_sample_that_cannot_be_placed_beside_the_running_trials_runs_in_the_costliest_size_that_can(
        tmp_path: Path) -> None:
    """The flagship search issued `large` (6 GiB) beside a running `huge` (10 GiB): Ray could
    not place it for 270 s, one of the two cores stood idle, and it ended at the time limit
    with 0 epochs. In a cluster that cannot grow, a sample runs in the costliest size that can
    be placed beside the running trials; when none can, as drawn (it waits for room)."""
    searcher, record, policy = _searcher(tmp_path)
    searcher.spec.search[SIZE].values.append("base")
    searcher.spec.resources.per_value.update(base=ResourceOverride(memory_gb=6), small=ResourceOverride(memory_gb=3))
    searcher.fixed_cluster = {"CPU": 2.0, "memory": 10 * GIB}
    searcher.seconds_left = lambda: 1000.0
    for trial_id, size, epoch_s in (("t0", "tiny", 10.0), ("t1", "base", 300.0), ("t2", "small", 40.0)):
        record.add_trial(trial_id, {LR: 1e-3, WD: 0.0, SIZE: size})
        record.add_epoch(trial_id, 1, {"val_mse": 1.0, "epoch": 1, TRIAL_SECONDS: epoch_s}, None)
    record.end_trial("t0", FINISHED, "budget")
    record.end_trial("t2", FINISHED, "budget")
    sampled = {LR: 2e-3, WD: 0.05, SIZE: "base"}

    # base runs (6 GiB): another base does not fit in the 4 GiB left, small (3 GiB) does.
    assert searcher._fitting(sampled, 1) == {**sampled, SIZE: "small"}
    # The time left fits tiny alone: tiny, which also fits beside it.
    searcher.seconds_left = lambda: 20.0
    assert searcher._fitting(sampled, 1) == {**sampled, SIZE: "tiny"}
    searcher.seconds_left = lambda: 1000.0
    # Both cores taken: nothing can be placed now, so the sample waits for room as drawn.
    record.add_trial("t3", {LR: 1e-3, WD: 0.0, SIZE: "tiny"})
    assert searcher._fitting(sampled, 1) == sampled
    # The running trials end: base is placed.
    record.end_trial("t1", STOPPED, "scheduler")
    record.end_trial("t3", STOPPED, "scheduler")
    assert searcher._fitting(sampled, 1) == sampled
    # A cluster that may grow (an existing one, with an autoscaler) is not judged.
    record.add_trial("t4", {LR: 1e-3, WD: 0.0, SIZE: "base"})
    assert searcher._fitting(sampled, 1) == {**sampled, SIZE: "small"}
    searcher.fixed_cluster = None
    assert searcher._fitting(sampled, 1) == sampled
    searcher.projection.flush()
    record.close("interrupted")


def test_the_start_up_design_runs_each_size_once_though_one_cannot_be_placed_when_drawn(tmp_path: Path) -> None:
    """The start-up design's size that cannot be placed beside the running trials trades places
    with a later size of the design that can, so every size still runs once (in the flagship
    search `large`, drawn beside `huge`, was replaced by a size already run and never ran)."""
    from trainables.search.sampling import startup_point

    searcher, record, policy = _searcher(tmp_path, sizes=("tiny", "small", "base"), startup=3)
    design = [startup_point(searcher.spec.search, searcher.spec.searcher.seed, i)[SIZE] for i in range(3)]
    assert sorted(design) == ["base", "small", "tiny"]
    searcher.spec.resources.per_value.clear()
    searcher.spec.resources.per_value.update({design[0]: ResourceOverride(memory_gb=6),
                                              design[1]: ResourceOverride(memory_gb=6)})
    searcher.fixed_cluster = {"CPU": 2.0, "memory": 10 * GIB}
    searcher.seconds_left = lambda: 1000.0

    first = searcher._new_config(0)
    assert first[SIZE] == design[0]
    record.add_trial("t0", first)  # running: design[1] does not fit beside it, design[2] does
    second = searcher._new_config(1)
    assert second[SIZE] == design[2]
    record.add_trial("t1", second)
    record.end_trial("t0", STOPPED, "scheduler")
    third = searcher._new_config(2)
    assert third[SIZE] == design[1]  # the size passed over runs once it fits
    searcher.projection.flush()
    record.close("interrupted")


def test_a_design_size_that_cannot_be_placed_by_the_end_of_the_start_up_runs_once_it_can(tmp_path: Path) -> None:
    """The last start-up size, blocked beside a running trial with none left to trade with,
    stays owed: the start-up trial and the next are drawn without it (never forced onto a size
    the design already ran), and the first new trial after the blocker ends runs it (in the
    flagship search `large` was blocked beside `huge` to the end of the start-up and never ran)."""
    from trainables.search.sampling import startup_point

    searcher, record, policy = _searcher(tmp_path, sizes=("tiny", "small", "base"), startup=3)
    design = [startup_point(searcher.spec.search, searcher.spec.searcher.seed, i)[SIZE] for i in range(3)]
    searcher.spec.resources.per_value.clear()
    searcher.spec.resources.per_value.update({design[0]: ResourceOverride(memory_gb=6),
                                              design[2]: ResourceOverride(memory_gb=6)})
    searcher.fixed_cluster = {"CPU": 3.0, "memory": 10 * GIB}
    searcher.seconds_left = lambda: 1000.0

    for i in range(2):
        config = searcher._new_config(i)
        assert config[SIZE] == design[i]
        record.add_trial(f"t{i}", config)  # both running: design[2] does not fit beside design[0]
        record.add_epoch(f"t{i}", 1, {"val_mse": 1.0, "epoch": 1, TRIAL_SECONDS: 1.0}, None)  # costs measured
    for i in (2, 3):  # the last start-up trial, then the first after it
        config = searcher._new_config(i)
        assert config[SIZE] == design[1]  # the only size that fits beside design[0] (the sampler's draw fitted)
        record.add_trial(f"t{i}", config)
        record.end_trial(f"t{i}", STOPPED, "scheduler")
    record.end_trial("t0", STOPPED, "scheduler")
    assert searcher._new_config(4)[SIZE] == design[2]  # owed past the start-up, it runs once it fits
    searcher.projection.flush()
    record.close("interrupted")
