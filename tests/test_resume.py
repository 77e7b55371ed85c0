"""kill -9 the launch process mid-search, run the same command again: the search continues."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.specs import PROJECT_ROOT, tiny_mae_spec, write_spec
from trainables.snapshots import SnapshotBackup, repair
from trainables.tracking import TRIAL_ID_TAG


TRIALS = 6
EPOCHS = 4


def _results(out: Path) -> dict[str, list[dict]]:
    """Every trial's reported results so far, from Tune's result.json files."""
    found = {}
    for path in (out / "tune").glob("trial_*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        found[path.parent.name.removeprefix("trial_")] = [json.loads(line) for line in lines]
    return found


def _study_trials(out: Path) -> int:
    """Trials in the search's persisted Optuna study, read from this (another) process."""
    if not (out / "optuna.db").exists():  # reading would create it, racing the search's own creation
        return 0
    try:
        return len(optuna.load_study(study_name="resume", storage=f"sqlite:///{out / 'optuna.db'}").trials)
    except (KeyError, ValueError, RuntimeError):  # not created yet
        return 0


def _launch(spec_file: Path, out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "launch.py"), "--space", str(spec_file), "--out", str(out), "--quiet"],
        cwd=PROJECT_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True,  # its own process group: kill -9 takes the embedded Ray with it
    )


@pytest.mark.slow
def test_killed_search_resumes_where_it_stopped(tmp_path: Path) -> None:
    raw = tiny_mae_spec("resume")
    raw["search"]["model.args.size"] = {"type": "choice", "values": ["small"]}
    raw["training"].update(epochs=EPOCHS, max_steps_per_epoch=6)
    raw["scheduler"] = {"type": "none"}  # every trial runs its full budget: a clean count
    raw["budget"] = {"trials": TRIALS, "max_concurrent": 2}
    spec_file = write_spec(tmp_path, raw)
    out = tmp_path / "out"

    first = _launch(spec_file, out, tmp_path / "first.log")
    deadline = time.monotonic() + 240
    seen_live = 0  # trials this (second) process read from the study while the search ran
    while True:
        seen_live = max(seen_live, _study_trials(out))
        assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        assert first.poll() is None, "the search ended before it could be killed"
        results = _results(out)
        finished = [t for t, rows in results.items() if rows and rows[-1].get("finished")]
        running = [t for t, rows in results.items() if rows and not rows[-1].get("finished")]
        if len(finished) >= 2 and running:
            break
        time.sleep(0.2)
    assert seen_live >= 2, "the persisted Optuna study was not readable while the search ran"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    interrupted = set(running)
    done_before = set(finished)
    time.sleep(2)  # let the killed Ray processes go

    second = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "launch.py"), "--space", str(spec_file), "--out", str(out), "--quiet"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Resuming the search" in second.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == TRIALS
    assert all(t["status"] == "finished" and t["epochs"] == EPOCHS for t in summary["trials"])
    results = _results(out)
    for trial_id in done_before:  # finished trials were kept, not run again
        assert [r["epoch"] for r in results[trial_id]] == list(range(1, EPOCHS + 1))
    for trial_id in interrupted:  # unfinished ones continued from their last checkpoint
        last = results[trial_id][-1]
        assert last["epoch"] == EPOCHS
        assert last["resumed_from_epoch"] >= 1, results[trial_id]

    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]],
                              filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    assert sorted(r.data.tags[TRIAL_ID_TAG] for r in runs) == sorted(t["trial_id"] for t in summary["trials"])
    assert len(client.search_runs([info["experiment_id"]], filter_string="tags.`hpsearch.role` = 'search'")) == 1

    # The persisted study (what optuna-dashboard reads) was continued, not started again.
    stored = optuna.load_study(study_name="resume", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(stored.trials) == TRIALS and {t.state.name for t in stored.trials} == {"COMPLETE"}

    # Optuna kept its history: one study trial per search trial, none asked twice.
    state_file = sorted((out / "tune").glob("searcher-state-*.pkl"))[-1]  # names carry the start time
    study = pickle.loads(state_file.read_bytes())["_ot_study"]
    assert len(study.trials) == TRIALS
    assert {t.state.name for t in study.trials} == {"COMPLETE"}


def test_snapshot_cut_short_by_a_kill_is_repaired_from_its_last_complete_copy(tmp_path: Path) -> None:
    state = tmp_path / "experiment_state-2026-01-01_00-00-00.json"
    state.write_text(json.dumps({"trial_data": ["a", "b"]}))
    backup = SnapshotBackup(tmp_path)
    backup.on_step_end(iteration=1, trials=[])
    state.write_text('{"trial_data": ["a", "b", "c"')  # a kill -9 in the middle of Tune's write
    backup._last_check = 0.0
    backup.on_step_end(iteration=2, trials=[])  # an incomplete file is never backed up
    assert repair(tmp_path) == [state.name]
    assert json.loads(state.read_text()) == {"trial_data": ["a", "b"]}
    assert repair(tmp_path) == []  # whole files are left alone

