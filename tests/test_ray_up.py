"""`ray up cluster-onprem.yaml` for real on this machine: sshd on 127.0.0.1 and 127.0.0.2, a head
and a worker started by Ray's cluster launcher with the shipped commands, a search submitted with
`ray job submit --working-dir`, the worker's raylet killed while a trial runs on it (the
autoscaler restarts the worker, the trial is retried and the search completes), the best
checkpoint fetched with `ray rsync-down` and loaded, then `ray down` leaving nothing running.

All of it runs in tests/ray_up_cluster.py inside its own PID, mount and network namespaces:
`ray stop` (in the head's start command and in `ray down`) stops every Ray process it can see,
and Ray's ports listen on every address; there they reach only the test's own cluster and
loopback, and whatever survives dies with the namespace's first process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.specs import PROJECT_ROOT
from trainables import load_model

pytestmark = pytest.mark.slow

NEEDED = ("unshare", "ip", "mount", "ssh", "ssh-keygen", "rsync", "/usr/sbin/sshd")


@pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(tool) for tool in NEEDED),
                    reason="needs root and " + ", ".join(NEEDED) + " (.ci/run installs them)")
def test_ray_up_runs_a_search_that_survives_a_worker_restart(tmp_path: Path) -> None:
    # PID 1 of the namespace is bash, which reaps the processes orphaned there; --kill-child
    # takes the namespace down if this test is interrupted or times out.
    done = subprocess.run(
        ["unshare", "--fork", "--pid", "--mount-proc", "--net", "--mount", "--kill-child", "--",
         "bash", "-c", '"$@"; exit $?', "bash",
         sys.executable, str(PROJECT_ROOT / "tests" / "ray_up_cluster.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-6000:]
    figures = json.loads(lines[-1])
    assert "error" not in figures, figures["error"][-12000:]
    print("ray up on-prem figures:", {k: v for k, v in figures.items() if k != "left_running"})

    # The cluster that ran was the shipped file with this machine's addresses and user only.
    shipped = yaml.safe_load((PROJECT_ROOT / "cluster-onprem.yaml").read_text())
    ran = yaml.safe_load((tmp_path / "cluster.yaml").read_text())
    assert ran["provider"] == {**shipped["provider"], "head_ip": "127.0.0.1", "worker_ips": ["127.0.0.2"]}
    assert ran["auth"] == {**shipped["auth"], "ssh_user": "root"}
    assert {k: v for k, v in ran.items() if k not in ("provider", "auth")} == \
        {k: v for k, v in shipped.items() if k not in ("provider", "auth")}

    summary = json.loads((tmp_path / "fetched" / "summary.json").read_text())
    assert len(summary["trials"]) == 2
    assert all(t["status"] == "finished" for t in summary["trials"]), summary["trials"]
    assert any(t["failures"] >= 1 for t in summary["trials"]), "no trial saw the worker die"
    assert summary["best"]["trial_id"] in {t["trial_id"] for t in summary["trials"]}
    model = load_model(tmp_path / "fetched" / "best")
    assert sum(p.numel() for p in model.parameters()) > 0

    assert figures["token_mode"] == "0o600"  # readable by its owner only, on every node
    # `ray down` (after the MLflow server's stop) left no process of the cluster running.
    assert figures["left_running"] == [], figures["left_running"]
