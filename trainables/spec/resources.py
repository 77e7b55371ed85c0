"""Per-trial resources (which may follow a sampled value) and how many trials fit at once.

A one-worker trial trains inside the Tune trial process, so the trial's own bundle holds the
worker's CPUs and GPUs. A DDP trial's own process (its Tune trial actor) only starts a
``TorchTrainer``, whose worker group reserves its own placement group; that process therefore
asks for almost nothing, and ``max_concurrent_trials`` (computed here) keeps extra ones from
starting and waiting. ("The driver" is only ever the process that runs the search.)

How many trials run at once depends on whether the cluster can grow. An embedded cluster
keeps the size it started with, so the cap is what fits in it. An existing cluster may have
an autoscaler, which adds nodes for the placement groups of pending trials: a cap computed
from the nodes present at start (none, on a fresh `ray up` cluster whose head runs no
training) would never let it grow. There the cap is ``budget.max_concurrent`` when set,
else what fits in the largest size the autoscaler reports to Ray, else (no report: Ray's
default autoscaler publishes none) what fits now, with a hint to set ``budget.max_concurrent``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from trainables.spec.schema import SearchSpec, SpecError

# A DDP trial's process needs a non-empty bundle (Tune refuses all-zero requests) but must not
# hold a CPU that its own workers need: 64 MiB of Ray's `memory` resource is a token amount.
DDP_TRIAL_BUNDLE = {"memory": 64 * 1024 * 1024}


GIB = 2**30  # Ray counts its `memory` resource in bytes


@dataclass(frozen=True)
class TrialResources:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    memory_gb: float = 0.0  # per worker; 0 = no reservation

    @property
    def worker(self) -> dict[str, float]:
        """One worker's bundle, in Ray's units."""
        bundle = {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker}
        if self.memory_gb:
            bundle["memory"] = self.memory_gb * GIB
        return bundle

    @property
    def total(self) -> dict[str, float]:
        return {name: self.workers * amount for name, amount in self.worker.items()}

    def describe(self) -> str:
        memory = f", {self.memory_gb:g} GiB" if self.memory_gb else ""
        return f"{self.cpus_per_worker:g} CPU, {self.gpus_per_worker:g} GPU{memory}"


def use_gpus(spec: SearchSpec, cluster: dict[str, float]) -> bool:
    """Whether trials ask for GPUs: `auto` means exactly when the cluster has some."""
    choice = spec.resources.use_gpu
    return choice == "yes" or (choice == "auto" and cluster.get("GPU", 0) > 0)


def trial_resources(spec: SearchSpec, sampled: dict[str, Any], gpus: bool) -> TrialResources:
    """What one trial with these sampled values asks for.

    Without GPUs a ``per_value`` entry's ``workers`` and ``gpus_per_worker`` are ignored: they
    describe a GPU placement (DDP over several GPUs for a large model), and DDP over processes
    sharing one machine's cores would only split the same cores. Its ``cpus_per_worker``
    applies either way (a huge model on a laptop takes every core, and runs alone).
    """
    res = spec.resources
    override = res.per_value.get(str(sampled.get(res.depends_on))) if res.depends_on else None
    cpus = (override and override.cpus_per_worker) or res.cpus_per_worker
    memory = (override and override.memory_gb) or res.memory_gb or 0.0
    if not gpus:
        return TrialResources(workers=res.workers, cpus_per_worker=cpus, gpus_per_worker=0.0, memory_gb=memory)
    workers = (override and override.workers) or res.workers
    gpu_value = override.gpus_per_worker if override and override.gpus_per_worker is not None else res.gpus_per_worker
    return TrialResources(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpu_value, memory_gb=memory)


def possible_resources(spec: SearchSpec, gpus: bool) -> list[TrialResources]:
    """Every distinct request a trial of this spec can make."""
    res = spec.resources
    values: list[Any] = [None]
    if res.depends_on:
        values = list(spec.search[res.depends_on].values)  # type: ignore[union-attr]
    return sorted({trial_resources(spec, {res.depends_on: v}, gpus) for v in values}, key=repr)


def room_beside(spec: SearchSpec, cluster: dict[str, float], gpus: bool,
                running: Iterable[dict[str, Any]]) -> Callable[[dict[str, Any]], bool]:
    """Whether a trial of a config can be placed now beside the ``running`` trials' configs
    (placed or still pending), in a cluster of fixed size ``cluster``. Summed over the
    cluster, not per node: on one machine (the embedded cluster) that is exact."""
    free = dict(cluster)
    for config in running:
        for name, amount in trial_resources(spec, config, gpus).total.items():
            free[name] = free.get(name, 0.0) - amount

    def fits(config: dict[str, Any]) -> bool:
        request = trial_resources(spec, config, gpus).total
        return all(free.get(name, 0.0) >= amount - 1e-9 for name, amount in request.items() if amount > 0)

    return fits


def placement_for(spec: SearchSpec, gpus: bool) -> Callable[[dict[str, Any]], Any]:
    """The callable ``tune.with_resources`` takes: sampled config -> PlacementGroupFactory."""

    def placement(config: dict[str, Any]) -> Any:
        from ray.tune import PlacementGroupFactory

        request = trial_resources(spec, config, gpus)
        if request.workers == 1:
            return PlacementGroupFactory([request.worker])
        return PlacementGroupFactory([DDP_TRIAL_BUNDLE])

    return placement


def max_concurrent_trials(spec: SearchSpec, cluster: dict[str, float], gpus: bool) -> int:
    """How many trials may be live at once (at least 1).

    A one-worker trial holds its own bundle, so a trial beyond what fits waits to be placed
    and takes nothing: the cap is what fits of the smallest one-worker request (a huge
    model's trial then waits for the room it needs while small ones run). A DDP trial's
    process holds only a token bundle while its TorchTrainer waits for workers, so one
    beyond what fits would start and wait: DDP requests cap it at what fits of each.
    """
    if spec.budget.max_concurrent:
        return spec.budget.max_concurrent
    one_worker, ddp = [], []
    for request in possible_resources(spec, gpus):
        counts = [cluster.get(name, 0) / need for name, need in request.total.items() if need > 0]
        (one_worker if request.workers == 1 else ddp).append(math.floor(min(counts)) if counts else 1)
    return max(1, min(([max(one_worker)] if one_worker else []) + ddp))


@dataclass(frozen=True)
class ConcurrencyPlan:
    gpus: bool  # whether trials ask for GPUs
    concurrency: int  # Tune's max_concurrent_trials
    note: str  # how the cap was reached, for the launch output


def plan_concurrency(spec: SearchSpec, present: dict[str, float], nodes: list[dict[str, float]],
                     existing: bool, grows_to: dict[str, float] | None) -> ConcurrencyPlan:
    """GPU use and the concurrency cap (see the module docstring for the rule).

    ``present``: the cluster's resources now; ``nodes``: each live node's; ``existing``: the
    cluster was not started by this search (it may autoscale); ``grows_to``: the largest
    resources its autoscaler reports, when it reports any.
    """
    capacity = dict(present)
    for name, amount in (grows_to or {}).items():
        capacity[name] = max(capacity.get(name, 0), amount)
    gpus = use_gpus(spec, capacity)
    bounded_by_user = existing and spec.budget.max_concurrent is not None
    if not (bounded_by_user or (existing and grows_to)):
        # Nothing will grow (or nobody said it would): a request no node fits would wait forever.
        problem = unsatisfiable(spec, nodes, gpus)
        if problem:
            raise SpecError(f"resources: no trial can ever start: {problem}")
    concurrency = max_concurrent_trials(spec, capacity, gpus)
    if bounded_by_user:
        note = (f"budget.max_concurrent={concurrency} bounds the trials at once; pending trials make the "
                f"autoscaler add nodes")
    elif existing and grows_to:
        note = (f"the autoscaler can grow the cluster to {capacity.get('CPU', 0):g} CPU, "
                f"{capacity.get('GPU', 0):g} GPU; pending trials make it add nodes")
    elif existing:
        note = ("the cap follows the nodes present now; on an autoscaling cluster set budget.max_concurrent "
                "so that it grows with the cluster")
    else:
        note = "an embedded cluster: the cap is what fits in it"
    return ConcurrencyPlan(gpus=gpus, concurrency=concurrency, note=note)


def unsatisfiable(spec: SearchSpec, cluster_nodes: list[dict[str, float]], gpus: bool) -> str | None:
    """A reason no trial can ever start (a worker needs more than any node has), else None."""
    for request in possible_resources(spec, gpus):
        worker = request.worker
        if not any(all(node.get(k, 0) >= v for k, v in worker.items() if v > 0) for node in cluster_nodes):
            biggest = max(cluster_nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            return f"a worker needs {_amounts(worker)}, but the largest node has {_amounts(biggest, worker)}"
        total = request.total
        cluster_total = {k: sum(n.get(k, 0) for n in cluster_nodes) for k in total}
        if any(cluster_total[k] < v for k, v in total.items() if v > 0):
            return f"a trial needs {_amounts(total)} in all, but the cluster has {_amounts(cluster_total, total)}"
    return None


def _amounts(resources: dict[str, float], like: dict[str, float] | None = None) -> str:
    """'2 CPU and 1 GPU' (and GiB of memory where ``like`` asks for memory)."""
    names = like or resources
    text = f"{resources.get('CPU', 0):g} CPU and {resources.get('GPU', 0):g} GPU"
    if names.get("memory"):
        text += f" and {resources.get('memory', 0) / GIB:.3g} GiB of memory"
    return text
