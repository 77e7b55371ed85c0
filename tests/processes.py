"""Real processes for the tests and the chaos benchmark: free loopback ports, the process table,
killing a process tree, `launch.py` as a user runs it (to its end, or in the background in its
own process group), bounded polling, and a real `mlflow server`.

Every kill here names its targets (a PID, a process group, or the tree of the processes whose
command line holds a string only they have), never `ray stop` or a process name: other Ray
clusters and searches share this machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.specs import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry.name)] = (parent, cmdline)
    return found


def descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    """``roots`` and every process below them in ``table``."""
    found = set(roots)
    grew = True
    while grew:
        children = {pid for pid, (parent, _) in table.items() if parent in found}
        grew = not children <= found
        found |= children
    return found


def kill_tree(matching: str) -> set[int]:
    """SIGKILL every process whose command line holds `matching`, with all its descendants.
    Returns the PIDs signalled."""
    table = processes()
    doomed = descendants({pid for pid, (_, cmd) in table.items() if matching in cmd and pid != os.getpid()}, table)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return doomed


def launch_env(**extra: str) -> dict[str, str]:
    """The environment a launch runs in: this one, with the project first on PYTHONPATH (its
    Ray workers import this checkout's code and the tests' own models through it)."""
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def launch_py(*args: str) -> list[str]:
    """`python launch.py ARGS`, as a user types it: the one way the tests start the launcher
    (to its end with ``run_to_end``, or in the background with ``launch``)."""
    return [sys.executable, str(PROJECT_ROOT / "launch.py"), *args]


def launch_command(spec_file: Path, out: Path, *extra: str) -> list[str]:
    """A search's command: its spec file and output folder, without the live table."""
    return launch_py("--space", str(spec_file), "--out", str(out), "--quiet", *extra)


def run_to_end(command: list[str], timeout: float = 300, env: dict[str, str] | None = None,
               cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    """Run ``command`` from ``cwd`` to its end, its output captured as text."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or launch_env())


def launch(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``command`` as a terminal runs it in the background: in its own process group (what
    Ctrl-C and a killed shell reach), its output appended to ``log``."""
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log.open("a"), stderr=subprocess.STDOUT,
                            env=env or launch_env(), start_new_session=True)


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``condition`` (every 0.2 s) until it holds; fail after ``timeout`` seconds, or at
    once if ``process`` ends first, naming ``what`` with the tail of ``log``."""
    deadline = time.monotonic() + timeout
    tail = lambda: log.read_text()[-3000:] if log is not None and log.exists() else ""  # noqa: E731
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s\n{tail()}"
        assert process is None or process.poll() is None, f"{what}: the process ended first\n{tail()}"
        time.sleep(0.2)


def group_members(pgid: int) -> set[int]:
    """Live processes (not zombies) of process group ``pgid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.add(int(entry.name))
    return found


class MlflowServer:
    """`mlflow server` as a child process on a free loopback port, stopped and restarted at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        """Start it; with ``wait``, return once it answers its health check."""
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
                   "--default-artifact-root", str(self.folder / "artifacts"),
                   # One worker: the default four start for over a minute on 2 busy cores, and
                   # uvicorn's supervisor kills a worker that is slow to answer its ping.
                   "--workers", "1"]
        self.process = subprocess.Popen(command, stdout=(self.folder / "server.log").open("a"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_until_up()

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 240  # its workers import MLflow: over 90 s on a loaded machine
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError((self.folder / "server.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None


class TwoNodeCluster:
    """A real 2-node Ray cluster on this machine (`ray start --head`, then `ray start --address`),
    token authentication on, one CPU per node, each node with its own temp folder under ``root``
    (which names its processes) and its own ports: other clusters run beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root  # keep it short: Ray's socket paths under it must stay within 107 bytes
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head_dir, self.worker_dir = root / "head", root / "worker"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(PROJECT_ROOT)}

    def _ray_start(self, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", *args, "--num-cpus=1",
                               f"--dashboard-agent-listen-port={free_port()}",
                               f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                               f"--metrics-export-port={free_port()}", "--disable-usage-stats"],
                              capture_output=True, text=True, timeout=180, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")

    def start(self) -> None:
        self._ray_start("--head", f"--port={self.port}", f"--temp-dir={self.head_dir}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}")
        self.start_worker()

    def start_worker(self) -> None:
        self._ray_start(f"--address={self.address}", f"--temp-dir={self.worker_dir}")

    def kill_worker(self) -> set[int]:
        """The worker node's raylet with everything under it (its trial processes, its agents)."""
        return kill_tree(f"{self.worker_dir}/")

    def trial_processes(self, worker_only: bool = False) -> dict[int, str]:
        """pid -> process title of this cluster's Ray workers running a Tune function trial (on
        the worker node only, with ``worker_only``)."""
        table = processes()
        nodes = [self.worker_dir] if worker_only else [self.head_dir, self.worker_dir]
        raylets = {pid for pid, (_, cmd) in table.items()
                   if "raylet/raylet " in cmd and any(f"{node}/" in cmd for node in nodes)}
        return {pid: table[pid][1].strip() for pid in descendants(raylets, table)
                if table[pid][1].startswith("ray::ImplicitFunc.train")}

    def stop(self) -> None:
        # `ray stop` would stop every Ray on the machine; these processes name the temp folders or the port.
        kill_tree(f"{self.worker_dir}/")
        kill_tree(f"{self.head_dir}/")
        kill_tree(f":{self.port}")
