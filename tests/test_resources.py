"""Resources that follow the sampled model size, and how many trials run at once: the
arithmetic, on the resources a cluster reports (4 GPUs declared, as in test_job_submission)."""

from __future__ import annotations

import pytest

from tests.specs import tiny_mae_spec
from trainables.spec.resources import DDP_TRIAL_BUNDLE, placement_for, plan_concurrency, room_beside, trial_resources
from trainables.spec.schema import SpecError
from trainables.spec.loading import validate_spec

CLUSTER = {"CPU": 2.0, "GPU": 4.0}
SIZE = "model.args.size"


def _spec(max_concurrent: int | None = None):
    raw = tiny_mae_spec("sizes")
    raw["search"][SIZE] = {"type": "choice", "values": ["tiny", "small", "large"]}
    raw["model"]["args"]["size"] = "tiny"
    raw["resources"] = {"workers": 1, "cpus_per_worker": 0.5, "gpus_per_worker": 0.5, "depends_on": SIZE,
                        "per_value": {"large": {"workers": 2, "gpus_per_worker": 1}}}
    raw["budget"]["max_concurrent"] = max_concurrent
    return validate_spec(raw, "sizes.yaml")


def test_small_sizes_take_half_a_gpu_and_large_ones_two_gpus_with_ddp() -> None:
    spec = _spec()
    placement = placement_for(spec, gpus=True)
    for size in ("tiny", "small"):
        assert placement({SIZE: size}).bundles == [{"CPU": 0.5, "GPU": 0.5}]
    large = trial_resources(spec, {SIZE: "large"}, gpus=True)
    assert (large.workers, large.total) == (2, {"CPU": 1.0, "GPU": 2.0})
    # The DDP trial's process holds a token bundle; its TorchTrainer reserves the two GPU workers.
    assert placement({SIZE: "large"}).bundles == [DDP_TRIAL_BUNDLE]


def test_an_embedded_cluster_runs_what_fits_for_the_largest_request() -> None:
    plan = plan_concurrency(_spec(), CLUSTER, [CLUSTER], existing=False, grows_to=None)
    # small: min(2 / 0.5 CPU, 4 / 0.5 GPU) = 4; large: min(2 / 1 CPU, 4 / 2 GPU) = 2.
    assert plan.gpus and plan.concurrency == 2


def test_without_gpus_the_gpu_figures_are_ignored() -> None:
    plan = plan_concurrency(_spec(), {"CPU": 2.0}, [{"CPU": 2.0}], existing=False, grows_to=None)
    assert not plan.gpus and plan.concurrency == 4  # every size: one worker of 0.5 CPU
    large = trial_resources(_spec(), {SIZE: "large"}, gpus=False)
    assert (large.workers, large.total) == (1, {"CPU": 0.5, "GPU": 0.0})


def test_an_existing_cluster_grows_to_what_its_autoscaler_reports() -> None:
    # Head with no CPU (no training there), no worker up yet, room for 4 nodes of 8 CPU / 4 GPU.
    head = {"memory": 1e9}
    plan = plan_concurrency(_spec(), head, [head], existing=True, grows_to={"CPU": 32.0, "GPU": 16.0})
    assert plan.gpus and plan.concurrency == 8  # large: min(32 / 1, 16 / 2)
    assert "autoscaler" in plan.note


def test_an_existing_cluster_takes_budget_max_concurrent_as_its_bound() -> None:
    head = {"memory": 1e9}
    plan = plan_concurrency(_spec(max_concurrent=6), head, [head], existing=True, grows_to=None)
    assert plan.concurrency == 6 and "budget.max_concurrent" in plan.note


def test_a_cluster_that_cannot_grow_refuses_a_trial_no_node_fits() -> None:
    head = {"memory": 1e9}  # an existing cluster that reports no growth and has no CPU
    with pytest.raises(SpecError, match="no trial can ever start"):
        plan_concurrency(_spec(), head, [head], existing=True, grows_to=None)
    with pytest.raises(SpecError, match="no trial can ever start"):
        plan_concurrency(_spec(), {"CPU": 0.0}, [{"CPU": 0.0}], existing=False, grows_to=None)


def _memory_spec(huge_memory_gb: float):
    raw = tiny_mae_spec("memory")
    raw["search"][SIZE] = {"type": "choice", "values": ["tiny", "huge"]}
    raw["resources"] = {"workers": 1, "cpus_per_worker": 1, "depends_on": SIZE,
                        "per_value": {"huge": {"workers": 4, "gpus_per_worker": 1, "memory_gb": huge_memory_gb}}}
    return validate_spec(raw, "memory.yaml")


def test_a_model_needing_most_of_the_memory_reserves_it_and_small_trials_still_run_side_by_side() -> None:
    laptop = {"CPU": 2.0, "memory": 16.0 * 2**30}
    spec = _memory_spec(11)
    plan = plan_concurrency(spec, laptop, [laptop], existing=False, grows_to=None)
    assert not plan.gpus and plan.concurrency == 2  # two tiny trials at once; a second huge one waits
    huge = trial_resources(spec, {SIZE: "huge"}, gpus=False)
    assert placement_for(spec, gpus=False)({SIZE: "huge"}).bundles == [{"CPU": 1.0, "memory": 11 * 2**30}]
    assert (huge.workers, huge.total["memory"]) == (1, 11 * 2**30)
    with pytest.raises(SpecError, match="a worker needs 1 CPU and 0 GPU and 40 GiB of memory, but the largest "
                                        "node has 2 CPU and 0 GPU and 16 GiB of memory"):
        plan_concurrency(_memory_spec(40), laptop, [laptop], existing=False, grows_to=None)


def test_room_beside_the_running_trials_counts_their_whole_requests() -> None:
    """What the searcher asks before issuing a trial into a cluster that cannot grow: a DDP
    trial counts all its workers' GPUs (not its token bundle), and a trial still pending counts."""
    spec = _spec()
    nothing_runs = room_beside(spec, CLUSTER, True, [])
    assert nothing_runs({SIZE: "large"}) and nothing_runs({SIZE: "tiny"})
    beside_large_and_tiny = room_beside(spec, CLUSTER, True, [{SIZE: "large"}, {SIZE: "tiny"}])
    assert not beside_large_and_tiny({SIZE: "large"})  # 0.5 CPU and 1.5 GPUs left: not 2 workers' 1 and 2
    assert beside_large_and_tiny({SIZE: "small"})
    beside_two_large = room_beside(spec, CLUSTER, True, [{SIZE: "large"}, {SIZE: "large"}])
    assert not beside_two_large({SIZE: "tiny"})
    without_gpus = room_beside(spec, CLUSTER, False, [{SIZE: "large"}, {SIZE: "tiny"}, {SIZE: "small"}])
    assert without_gpus({SIZE: "large"})  # one CPU worker of 0.5 each: 0.5 CPU left
    assert not room_beside(spec, CLUSTER, False, [{SIZE: "tiny"}] * 4)({SIZE: "tiny"})
