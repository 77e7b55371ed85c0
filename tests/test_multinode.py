"""A real 2-node Ray cluster on this machine (`ray start --head`, then `ray start --address`):
`launch.py --address` runs the search on it, and when the second node dies mid-trial the
trial is retried on the head node and the search completes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import free_port, kill_tree, launch, launch_command, launch_env, wait_until
from tests.specs import recorded_epochs, tiny_mae_spec, write_spec

pytestmark = pytest.mark.slow

TRIALS = 4


def _ray(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args, "--disable-usage-stats"],
                   check=True, capture_output=True, text=True, timeout=120, env=env)


def test_search_survives_losing_a_node(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = launch_env(RAY_AUTH_MODE="token")
    try:
        _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--dashboard-host=127.0.0.1", env=env)
        _ray("start", f"--address={address}", "--num-cpus=1", '--resources={"second_node": 1}', env=env)

        raw = tiny_mae_spec("two-nodes")
        raw["search"]["model.args.size"] = {"type": "choice", "values": ["small"]}
        raw["training"].update(epochs=4, max_steps_per_epoch=6)
        raw["scheduler"] = {"type": "none"}
        raw["budget"] = {"trials": TRIALS, "max_concurrent": 2, "max_failures": 3}
        spec_file = write_spec(tmp_path, raw)
        out = tmp_path / "out"
        log = tmp_path / "launch.log"
        launcher = launch(launch_command(spec_file, out, "--address", address), log, env)

        # With one CPU per node and two trials at a time, one running trial is on the second node.
        def two_running() -> bool:
            return sum(1 for rows in recorded_epochs(out).values() if rows and not rows[-1]["finished"]) == 2

        wait_until(two_running, 240, "two trials running", launcher, log)
        kill_tree("second_node")  # the second node's raylet, with its workers and agents

        assert launcher.wait(timeout=400) == 0, log.read_text()[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert len(summary["trials"]) == TRIALS
        assert all(t["status"] == "finished" for t in summary["trials"]), summary["trials"]
        retried = [t for t in summary["trials"] if t["failures"] >= 1]
        assert retried, "no trial saw the node die"
        results = recorded_epochs(out)
        for trial in retried:  # continued from its checkpoint on the surviving node
            assert results[trial["trial_id"]][-1]["resumed_from_epoch"] >= 1
    finally:
        # Ray writes the node's own IP into its processes' --gcs-address, not 127.0.0.1.
        kill_tree(f":{port}")
        kill_tree(f"gcs_server_port={port}")
