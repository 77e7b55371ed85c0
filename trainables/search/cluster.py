"""Connecting to Ray: the embedded local cluster by default, an existing one with an address."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

# Set before Ray starts, so every worker process inherits them.
RAY_ENV = {
    # Trials must not change directory: relative paths in user code keep working.
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    # The legacy console engine takes a CLIReporter with short column names; the new one
    # prints every config key in full and a result box per finished trial.
    "RAY_AIR_NEW_OUTPUT": "0",
    # Keeping one best checkpoint forces a state snapshot at every checkpoint; cheap here.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # How long Tune waits for a stopped trial's thread before reusing its actor; past it the
    # next trial fails ("requires reset_config()"). The loop stops within one optimizer
    # step, and a step of a large model on CPU (or a checkpoint write) can exceed the 2 s default.
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "120",
}


@contextmanager
def _sigterm_blocked_in_children(embedded: bool) -> Iterator[None]:
    """An embedded cluster's processes (GCS, raylet, their workers) inherit SIGTERM blocked, as
    Ray already blocks SIGINT in them: a SIGTERM to the launcher's process group (a preempted
    node, a Slurm job step) then reaches the launcher alone, which ends the search as
    interrupted and stops the cluster itself. Unblocked again here; one that came meanwhile is
    delivered then."""
    if not embedded:
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def connect(address: str | None = None, num_cpus: int | None = None) -> tuple[str | None, bool]:
    """Start or join Ray; returns (dashboard address or None, whether this call started it).

    A Ray already initialised in this process (a notebook, the test session) is used as is
    and left running.
    """
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return _dashboard_url(), False
    # `ray job submit` runs the driver with RAY_ADDRESS naming the job's cluster. Ray reads it
    # only for address None or "auto", and None would also join any stale cluster on this
    # machine, so it is read here and "local" is passed otherwise.
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None and "RAY_AUTH_MODE" not in os.environ and _token_available():
        # Clusters started by `ray start` use token authentication (Ray's default since 2.60);
        # a client must opt in to send the token, or the cluster refuses it.
        os.environ["RAY_AUTH_MODE"] = "token"
    # The dashboard listens on 127.0.0.1 only; token authentication (Ray's default) stays on.
    # On an existing cluster the workers were started by `ray start`, not by us: the job's
    # runtime_env carries the settings to every trial and Train worker. An embedded cluster's
    # workers inherit them from this process, and a job without a runtime_env gets the worker
    # processes Ray starts with the cluster: the first trials then start about 2 s sooner
    # (a runtime_env, even of env_vars alone, makes Ray start new workers for it).
    # "local" starts a new embedded cluster even when another search's cluster runs on this
    # machine (address=None would join it).
    embedded = address is None
    with _loopback_only(embedded), _sigterm_blocked_in_children(embedded):
        context = ray.init(address=address or "local", num_cpus=num_cpus, dashboard_host="127.0.0.1",
                           logging_level="WARNING", configure_logging=True,
                           runtime_env=None if embedded else {"env_vars": dict(RAY_ENV)})
    return getattr(context, "dashboard_url", None) or None, True


@contextmanager
def _loopback_only(embedded: bool) -> Iterator[None]:
    """An embedded cluster's ports on loopback only. Ray 2.60 binds its GCS, raylet, object
    manager and worker ports to every address unless the node's address is 127.0.0.1, which
    ray.init picks only with multi-node clusters off (its default on macOS and Windows; no
    public option). Off for this ray.init alone: the environment variable that does the same
    would reach child processes and break a `ray start --address` there."""
    from ray._private import ray_constants

    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = previous and not embedded
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def disconnect(started_here: bool) -> None:
    """Leave Ray at the end of a launch, and stop the embedded cluster this launch started.

    ``ray.shutdown()`` sends each of the cluster's processes SIGTERM and waits a second for it
    to exit. An embedded cluster's processes have SIGTERM blocked (``_sigterm_blocked_in_children``),
    so every wait ran out: 4.5 s at the end of every launch. By now the search has ended (the
    record, summary and MLflow written, every trial stopped by Tune), so nothing in the cluster
    remains to be saved: the driver disconnects, then the whole process tree Ray started is
    killed, the raylet's own children included (its dashboard and runtime-env agents outlive a
    killed raylet by 40 s and more). Ray offers no public call to skip the graceful wait, hence
    the private node handle, guarded: if it cannot be read, ``ray.shutdown()`` as before.
    """
    import ray

    if not started_here:
        return
    try:
        node = ray._private.worker._global_node
        direct = [psutil.Process(info.process.pid) for infos in node.all_processes.values() for info in infos]
        family = direct + [child for process in direct for child in process.children(recursive=True)]
    except Exception:  # noqa: BLE001 - a private API that may move: Ray's own, slower stop
        ray.shutdown()
        return
    ray._private.worker._global_node = None  # ray.shutdown() now disconnects the driver only
    try:
        ray.shutdown()
        if node.is_head():
            node.destroy_external_storage()  # what ray.shutdown() would have done before the kill
    finally:
        for process in family:
            with suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(direct, timeout=5)  # reaps Ray's direct children, which are this process's


def autoscaler_max_resources() -> dict[str, float] | None:
    """The largest resources the cluster's autoscaler may grow to, when it reports them to Ray
    (autoscaler v2, KubeRay); None otherwise, as with `ray start` or Ray's default autoscaler.

    Ray Train 2.60 reads the same record to refuse worker groups that could never fit; Ray
    offers no public call for it, hence the private one, guarded.
    """
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API that may move: no report, no growth
        return None
    return {name: float(amount) for name, amount in found.items()} if found else None


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").exists())


def _dashboard_url() -> str | None:
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return getattr(node, "webui_url", None) if node is not None else None
