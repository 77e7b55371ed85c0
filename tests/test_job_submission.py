"""The cluster workflow on a real local cluster (`ray start --head`, token authentication on,
4 GPUs declared on a machine that has none): a search submitted with
`ray job submit --working-dir <repo> -- python launch.py ...`, its result fetched from the
storage folder it was told to use, its resources as Tune placed them, and the search's own
metrics scraped from the cluster's Prometheus endpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.processes import free_port, kill_tree
from tests.specs import PROJECT_ROOT, recorded_epochs, tiny_mae_spec, write_spec
from trainables import load_model
from trainables.outputs import RECORD_FILE, SPEC_FILE
from trainables.results.record import (
    FAILED,
    INTERRUPTED,
    SEARCH_INTERRUPTED,
    SearchRecord,
)
from trainables.spec.loading import load_spec

pytestmark = pytest.mark.slow

TRIALS = 2
GPUS = 4  # declared: Ray schedules them, torch sees no CUDA and trains on CPU
JOB_ID = "hpsearch-job-test"


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.dashboard_port, self.metrics_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            # The job's entrypoint runs in a shell of the cluster's processes: `python` is the
            # first on the PATH that `ray start` had, so the venv's goes first.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            # Metrics reach the exporter every second instead of every ten.
            "RAY_metrics_report_interval_ms": "1000",
        }

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env)

    def api(self, path: str) -> dict:
        """The dashboard's REST API, with the cluster's token (token authentication is on)."""
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        request = urllib.request.Request(self.dashboard + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def start(self) -> None:
        # Its own temp dir and ports: the session's embedded cluster runs beside it.
        started = self.ray("start", "--head", f"--port={self.port}", "--num-cpus=2", f"--num-gpus={GPUS}",
                           f"--temp-dir={self.root / 'ray'}", "--dashboard-host=127.0.0.1",
                           f"--dashboard-port={self.dashboard_port}", f"--metrics-export-port={self.metrics_port}",
                           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                           f"--runtime-env-agent-port={free_port()}", f"--ray-client-server-port={free_port()}",
                           "--disable-usage-stats")
        assert started.returncode == 0, started.stderr[-3000:]

    def stop(self) -> None:
        # `ray stop` would stop every Ray on the machine; these processes name the temp dir or port.
        kill_tree(str(self.root / "ray"))
        kill_tree(f":{self.port}")


@pytest.fixture(scope="module")
def cluster():
    # A short root: Ray's socket paths under it must stay within the 107-byte limit.
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="hpjob-", dir="/tmp")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="module")
def submitted(cluster: Cluster) -> dict:
    """Submit the search, watch it (placement groups, metrics) until it ends, fetch its result."""
    raw = tiny_mae_spec("jobs")
    raw["budget"] = {"trials": TRIALS}
    # The small sizes take half a GPU and half a CPU each; a large one (not sampled here) would
    # take 2 DDP workers of one GPU each.
    raw["resources"] = {"workers": 1, "cpus_per_worker": 0.5, "gpus_per_worker": 0.5, "use_gpu": "auto",
                        "depends_on": "model.args.size",
                        "per_value": {"large": {"workers": 2, "gpus_per_worker": 1}}}
    spec_file = write_spec(cluster.root, raw)
    out = cluster.root / "storage" / "jobs"  # the storage folder: the job's side and ours reach it
    result = cluster.ray("job", "submit", f"--address={cluster.dashboard}", f"--submission-id={JOB_ID}",
                         "--no-wait", f"--working-dir={PROJECT_ROOT}", "--",
                         "python", "launch.py", "--space", str(spec_file), "--out", str(out), "--quiet")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # Ray drops a process's metrics when it exits, so they are read while the driver runs.
    bundles, samples = [], {}
    deadline = time.monotonic() + 240
    while (status := cluster.api(f"/api/jobs/{JOB_ID}")["status"]) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, "the job did not end"
        groups = cluster.api("/api/v0/placement_groups?detail=1&limit=1000")["data"]["result"]["result"]
        bundles += [b["unit_resources"] for g in groups if g["state"] == "CREATED" for b in g["bundles"]]
        samples = _scrape(cluster.metrics_port) or samples
        time.sleep(0.5)
    logs = cluster.ray("job", "logs", f"--address={cluster.dashboard}", JOB_ID)
    assert status == "SUCCEEDED", (logs.stdout + logs.stderr)[-4000:]
    return {"summary": json.loads((out / "summary.json").read_text()), "out": out, "logs": logs.stdout,
            "bundles": bundles, "samples": samples}


def test_submitted_search_succeeds_and_its_best_checkpoint_loads(cluster: Cluster, submitted: dict) -> None:
    summary, out, logs = submitted["summary"], submitted["out"], submitted["logs"]
    status = cluster.ray("job", "status", f"--address={cluster.dashboard}", JOB_ID)
    assert f"Job '{JOB_ID}' succeeded" in status.stdout + status.stderr, status.stdout + status.stderr
    assert len(summary["trials"]) == TRIALS and summary["best"] is not None
    model = load_model(out / "best")
    assert sum(p.numel() for p in model.parameters()) > 0
    # The search ran on the submitted-to cluster (4 GPUs declared), not on one of its own.
    assert f"{GPUS:g} GPU" in logs and "up to 4 trial(s) at once" in logs, logs[-3000:]
    # The working dir uploaded was the project without .venv, results/ and .git (.gitignore
    # and Ray's default excludes).
    packages = [p for p in (cluster.root / "ray").glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]
    assert any((package / "launch.py").is_file() for package in packages), packages
    for package in packages:
        assert not {".venv", "results", ".git"} & {p.name for p in package.iterdir()}, package


def test_trials_got_the_resources_their_size_asks_for(submitted: dict) -> None:
    # Every trial's placement group: one bundle of half a CPU and half a GPU.
    trial_bundles = [b for b in submitted["bundles"] if "GPU" in b]
    assert trial_bundles, submitted["bundles"]
    assert all(b == {"CPU": 0.5, "GPU": 0.5} for b in trial_bundles), trial_bundles


def _scrape(port: int) -> dict[tuple[str, str], float]:
    """hpsearch samples of Prometheus text: (metric name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^(ray_hpsearch_\w+)\{(.*)\} (\S+)$", line)
        if match:
            samples[(match.group(1), match.group(2))] = float(match.group(3))
    return samples


def test_search_metrics_reach_the_cluster_metrics_endpoint(submitted: dict) -> None:
    summary, samples = submitted["summary"], submitted["samples"]
    expected = {state: float(sum(t["status"] == state for t in summary["trials"]))
                for state in ("running", "finished", "stopped early", "failed")}
    trials = {re.search(r'state="([^"]+)"', labels).group(1): value for (name, labels), value in samples.items()
              if name == "ray_hpsearch_trials" and 'experiment="jobs"' in labels}
    assert trials == expected, sorted(samples)  # the last values seen before the driver ended
    best = [v for (name, labels), v in samples.items() if name == "ray_hpsearch_best_value" and 'metric="val_mse"' in labels]
    assert best == [pytest.approx(summary["best"]["value"])]
    rate = [v for (name, _), v in samples.items() if name == "ray_hpsearch_trials_per_hour"]
    assert len(rate) == 1 and rate[0] > 0


def test_ray_job_stop_interrupts_the_search_like_sigterm(cluster: Cluster, submitted: dict) -> None:
    """`ray job stop` sends SIGTERM to the entrypoint and, after RAY_JOB_STOP_WAIT_TIME_S (3 s by
    default: too short for a clean end), SIGKILL; the README tells users to submit with 30."""
    raw = tiny_mae_spec("stopped")
    raw["search"]["model.args.size"] = {"type": "choice", "values": ["small"]}
    raw["training"].update(epochs=40, max_steps_per_epoch=4)
    raw["budget"] = {"trials": 2}
    raw["scheduler"] = {"type": "none"}
    spec_file = write_spec(cluster.root, raw, "stopped.yaml")
    out = cluster.root / "storage" / "stopped"
    job = "hpsearch-job-stop"
    result = cluster.ray("job", "submit", f"--address={cluster.dashboard}", f"--submission-id={job}", "--no-wait",
                         f"--working-dir={PROJECT_ROOT}",
                         "--runtime-env-json", json.dumps({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "30"}}), "--",
                         "python", "launch.py", "--space", str(spec_file), "--out", str(out), "--quiet")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    deadline = time.monotonic() + 240
    while not (out / RECORD_FILE).exists() or not any(recorded_epochs(out).values()):
        assert time.monotonic() < deadline, cluster.ray("job", "logs", f"--address={cluster.dashboard}", job).stdout[-3000:]
        assert cluster.api(f"/api/jobs/{job}")["status"] in ("PENDING", "RUNNING")
        time.sleep(0.5)

    started = time.monotonic()
    stop = cluster.ray("job", "stop", f"--address={cluster.dashboard}", job, timeout=60)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    while cluster.api(f"/api/jobs/{job}")["status"] != "STOPPED":
        assert time.monotonic() - started < 40, "the stopped job did not end within its grace period"
        time.sleep(0.5)
    logs = cluster.ray("job", "logs", f"--address={cluster.dashboard}", job).stdout
    assert "Interrupted (SIGTERM)" in logs and "Traceback" not in logs, logs[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    record = SearchRecord(out, load_spec(str(out / SPEC_FILE))[0].objective)
    assert record.state == SEARCH_INTERRUPTED
    assert not [t for t in record.trials.values() if t.status == FAILED]
    cut = [t for t in record.trials.values() if record.status(t) == INTERRUPTED]
    assert cut and all(t.epochs for t in cut)
