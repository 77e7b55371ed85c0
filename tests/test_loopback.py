"""An embedded search's Ray (the laptop default) listens on loopback only, checked with `ss -ltnp`.

Ray 2.60 binds its GCS, raylet, object manager and worker gRPC ports to every address unless the
node's IP is 127.0.0.1 (then to loopback), and `ray.init` turns `_node_ip_address="127.0.0.1"`
into the machine's outward IP. Its node IP is 127.0.0.1 only where Ray believes multi-node
clusters are off: `ray._private.ray_constants.ENABLE_RAY_CLUSTER` False, macOS' and Windows'
default, set on Linux by RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before `import ray`.

Each check starts Ray in a fresh Python process (the setting is read when Ray starts) and lists
the listening TCP sockets of that process and its descendants.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.specs import PROJECT_ROOT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")]


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process name) of the listening TCP sockets the given processes hold."""
    table = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in table.splitlines():
        if pids & {int(p) for p in re.findall(r"pid=(\d+)", line)}:
            names = re.findall(r'\("([^"]+)"', line)
            found.append((line.split()[3], names[0] if names else "?"))
    return found


def _is_loopback(local: str) -> bool:
    host = local.rsplit(":", 1)[0].strip("[]").split("%")[0]
    if host == "*":
        return False
    address = ipaddress.ip_address(host)
    mapped = getattr(address, "ipv4_mapped", None)  # [::ffff:127.0.0.1], as Ray's gRPC shows it
    return (mapped or address).is_loopback


def _ray_sockets(mode: str) -> list[tuple[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("RAY_ADDRESS", None)  # an embedded cluster, never one this session started
    done = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True, timeout=180,
                          env=env, cwd=PROJECT_ROOT)
    # Not assertions: the expected failure below is the loopback assertion, nothing else.
    if done.returncode != 0:
        raise RuntimeError((done.stdout + done.stderr)[-4000:])
    sockets = [tuple(pair) for pair in json.loads(done.stdout.strip().splitlines()[-1])]
    if not {"gcs_server", "raylet"} <= {name for _, name in sockets}:
        raise RuntimeError(f"Ray's GCS and raylet not found listening: {sockets}")
    return sockets


def test_embedded_search_ray_listens_on_loopback_only() -> None:
    sockets = _ray_sockets("connect")
    assert all(_is_loopback(local) for local, _ in sockets), sockets


def test_ray_listens_on_loopback_only_when_multi_node_clusters_are_off() -> None:
    """The setting itself, on the Ray this project pins: it keeps holding on an upgrade."""
    sockets = _ray_sockets("clusters-off")
    assert all(_is_loopback(local) for local, _ in sockets), sockets


def _child(mode: str) -> None:
    """Start Ray in this process as the mode says, run tasks, print its sockets as JSON."""
    import ray

    if mode == "connect":
        from trainables.search.cluster import connect

        connect(num_cpus=1)
    else:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(address="local", num_cpus=1, dashboard_host="127.0.0.1", logging_level="WARNING")

    @ray.remote
    def pid() -> int:
        return os.getpid()

    ray.get([pid.remote() for _ in range(2)])  # workers up, with their gRPC ports
    try:
        print(json.dumps(_listening(_descendants(os.getpid()))))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    _child(sys.argv[1])
