"""Real processes for the tests and the chaos benchmark: free loopback ports, the process table,
killing a process tree, `launch.py` in its own process group, and a real `mlflow server`.

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


def launch_command(spec_file: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "launch.py"), "--space", str(spec_file), "--out", str(out),
            "--quiet", *extra]


def launch(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`launch.py` as a terminal runs it: in its own process group (what Ctrl-C and a killed
    shell reach), its output appended to ``log``."""
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


class MlflowServer:
    """`mlflow server` as a child process on a free loopback port, stopped and restarted at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
                   "--default-artifact-root", str(self.folder / "artifacts")]
        self.process = subprocess.Popen(command, stdout=(self.folder / "server.log").open("a"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
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
