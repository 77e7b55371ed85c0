"""A real `mlflow server` on 127.0.0.1 that is down at start or goes down mid-search: the search
goes on, keeps everything in its folder, and `launch.py sync` sends what MLflow missed."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.processes import MlflowServer, launch_py, run_to_end
from tests.specs import recorded_epochs, tiny_mae_spec, write_spec
from trainables import load_spec
from trainables.outputs import MLFLOW_RUNS_FILE
from trainables.search.run import SearchOptions, launch_search
from trainables.tracking.journal import JOURNAL_FILE
from trainables.tracking.runs import SEARCH_KEY, TRIAL_ID_TAG

pytestmark = pytest.mark.slow

TRIALS = 3
EPOCHS = 2


@pytest.fixture
def server(tmp_path: Path):
    server = MlflowServer(tmp_path)
    yield server
    server.stop()


def _spec(folder: Path):
    raw = tiny_mae_spec("offline")
    raw["budget"]["trials"] = TRIALS
    raw["training"]["epochs"] = EPOCHS
    raw["scheduler"] = {"type": "none"}
    return load_spec(str(write_spec(folder, raw)))[0]


def _sync(out: Path) -> subprocess.CompletedProcess:
    return run_to_end(launch_py("sync", str(out)), timeout=120)


def _assert_server_has_the_whole_search(uri: str, summary: dict) -> None:
    client = MlflowClient(uri)
    info = summary["mlflow"]
    parent = client.get_run(info["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(summary["best"]["value"])
    children = client.search_runs([info["experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    assert sorted(r.data.tags[TRIAL_ID_TAG] for r in children) == sorted(t["trial_id"] for t in summary["trials"])
    for run in children:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "val_mse")) == EPOCHS


def test_server_down_at_start(ray_cluster, server: MlflowServer, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    printed: list[str] = []
    summary = launch_search(spec, SearchOptions(out_dir=out, mlflow_uri=server.uri, verbose=0), echo=printed.append)
    assert len(summary["trials"]) == TRIALS and summary["best"] is not None
    assert summary["mlflow"]["parent_run_id"] is None and summary["mlflow"]["pending_writes"] > 0
    assert (out / JOURNAL_FILE).exists() and (out / "best" / "checkpoint.pt").exists()
    assert any("python launch.py sync" in line for line in printed)

    assert _sync(out).returncode == 1  # still down: says so, keeps the journal
    assert (out / JOURNAL_FILE).exists()
    server.start()
    result = _sync(out)
    assert result.returncode == 0, result.stderr
    assert not (out / JOURNAL_FILE).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mlflow"]["pending_writes"] == 0
    _assert_server_has_the_whole_search(server.uri, summary)


def test_server_goes_down_mid_search(ray_cluster, server: MlflowServer, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    server.start()

    def parent_made() -> bool:
        runs = out / MLFLOW_RUNS_FILE
        return runs.exists() and SEARCH_KEY in json.loads(runs.read_text())["runs"]  # written by rename

    def stop_after_first_result() -> None:
        # The parent run is made in the background: under load (two test workers on 2 cores)
        # the first epoch came before it, and the outage hit the search's start instead.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (any(recorded_epochs(out).values()) and parent_made()):
            time.sleep(0.2)
        server.stop()

    killer = threading.Thread(target=stop_after_first_result, daemon=True)
    killer.start()
    summary = launch_search(spec, SearchOptions(out_dir=out, mlflow_uri=server.uri, verbose=0), echo=lambda line: None)
    killer.join(timeout=5)
    assert len(summary["trials"]) == TRIALS and summary["best"] is not None
    assert summary["mlflow"]["parent_run_id"] is not None  # made before the outage
    assert summary["mlflow"]["pending_writes"] > 0

    server.start()
    result = _sync(out)
    assert result.returncode == 0, result.stderr
    _assert_server_has_the_whole_search(server.uri, json.loads((out / "summary.json").read_text()))
