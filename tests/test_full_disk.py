"""A full disk, for real (a tmpfs of a few MB as the output folder's file system): refused before
Ray starts when it clearly cannot hold the search; filled mid-search by another job, it ends
the search as interrupted (one line, exit 74), no trial failed and Optuna told no FAIL; once
the file system is grown, the same command continues the search to its end."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from bench.trial_overhead import Workload, service_spec
from tests.processes import launch, launch_command
from tests.small_disk import fill, resize, small_disk
from tests.specs import PROJECT_ROOT, recorded_epochs, write_spec
from trainables.objective import Objective
from trainables.outputs import OPTUNA_DB, RECORD_FILE, SUMMARY_FILE, TUNE_DIR
from trainables.results.record import FAILED, SearchRecord

pytestmark = pytest.mark.slow
EXIT_DISK_FULL = 74
TRIALS, EPOCHS = 5, 4


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HPSEARCH_DATA_DIR": str(tmp_path / "data")}


def _spec(tmp_path: Path) -> Path:
    raw = service_spec(Workload(trials=TRIALS, reports=EPOCHS, work_s=0.4))
    raw["experiment"] = "full_disk"
    raw["searcher"] = {"type": "optuna", "seed": 0, "startup_trials": 2}
    return write_spec(tmp_path, raw)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_a_disk_too_small_for_the_search_is_refused_before_ray_starts(tmp_path: Path) -> None:
    spec_file = _spec(tmp_path)
    with small_disk(tmp_path / "disk", 512) as disk:
        out = disk / "out"
        started = time.monotonic()
        done = subprocess.run(launch_command(spec_file, out), cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=300, env=_env(tmp_path))
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and "needs about" in lines[0] and "free" in lines[0], lines
        assert not (out / TUNE_DIR).exists() and not (out / RECORD_FILE).exists()  # Ray never started
        assert time.monotonic() - started < 60


def test_a_disk_that_fills_mid_search_interrupts_it_and_the_same_command_continues(tmp_path: Path) -> None:
    spec_file = _spec(tmp_path)
    env = _env(tmp_path)
    log = tmp_path / "first.log"
    with small_disk(tmp_path / "disk", 16 * 1024) as disk:
        out = disk / "out"
        first = launch(launch_command(spec_file, out), log, env)
        deadline = time.monotonic() + 240
        while sum(len(rows) for rows in recorded_epochs(out).values()) < 3:
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        fill(disk)  # another job takes every free byte
        filled = time.monotonic()
        code = first.wait(timeout=120)
        text = log.read_text()
        assert code == EXIT_DISK_FULL, text[-3000:]
        assert time.monotonic() - filled < 60, "not ended within seconds"
        errors = _error_lines(text)
        assert len(errors) == 1 and str(out) in errors[0] and "could not write" in errors[0], text[-3000:]
        assert "needs about" in errors[0] and "same command" in errors[0]
        assert "Traceback" not in text, text[-5000:]

        # Nothing is blamed on a configuration: no trial failed, none retried, Optuna told no FAIL.
        record = SearchRecord(out, Objective("val_score", "max"))
        assert record.trials and all(t.status != FAILED and not t.failures for t in record.trials.values())
        assert record.unfinished(), "the fault should have cut some trial short"
        study = optuna.load_study(study_name="full_disk", storage=f"sqlite:///{out / OPTUNA_DB}")
        assert all(t.state != optuna.trial.TrialState.FAIL for t in study.trials)

        resize(disk, 64 * 1024)  # the quota raised: the same command continues
        second = subprocess.run(launch_command(spec_file, out), cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=600, env=env)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "Resuming the search" in second.stdout
        summary = json.loads((out / SUMMARY_FILE).read_text())
        assert summary["state"] == "finished" and len(summary["trials"]) == TRIALS
        assert all(t["status"] == "finished" and t["failures"] == 0 for t in summary["trials"]), summary["trials"]
        for trial_id, rows in recorded_epochs(out).items():  # each epoch once, none lost to the fault
            assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1)), (trial_id, rows)
        study = optuna.load_study(study_name="full_disk", storage=f"sqlite:///{out / OPTUNA_DB}")
        assert len(study.trials) == TRIALS and {t.state.name for t in study.trials} == {"COMPLETE"}
        info = summary["mlflow"]
        runs = MlflowClient(info["tracking_uri"]).search_runs(
            [info["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
        assert len(runs) == TRIALS and {r.info.status for r in runs} == {"FINISHED"}
