"""Interruptions, for real: kill -9 of the launcher, Ctrl-C (SIGINT to its process group), SIGTERM
(to the launcher alone and to its process group: a preempted node), and a second launch on a
running folder. The same command continues a search where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.processes import launch, launch_command
from tests.specs import PROJECT_ROOT, recorded_epochs, tiny_mae_spec, write_spec
from trainables.tracking.runs import END_TAG, TRIAL_ID_TAG

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def _run(spec_file: Path, out: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(launch_command(spec_file, out), cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _wait_for(first: subprocess.Popen, log: Path, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        assert first.poll() is None, "the search ended before it could be interrupted:\n" + log.read_text()[-3000:]
        time.sleep(0.2)


def _ended(out: Path) -> set[str]:
    path = out / "record.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {e["id"] for e in (json.loads(line) for line in lines[:-1]) if e["e"] == "end"}


SCHEDULERS = {"none": {"type": "none"},
              "asha": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
              "promotion": {"type": "promotion", "grace_period": 1, "reduction_factor": 2}}


def _paused(out: Path) -> set[str]:
    """Trials paused at a rung and not yet promoted, by the record's events."""
    path = out / "record.jsonl"
    events = [json.loads(line) for line in (path.read_text().splitlines()[:-1] if path.exists() else [])]
    paused: set[str] = set()
    for e in events:
        if e["e"] == "pause":
            paused.add(e["id"])
        elif e["e"] == "promote":
            paused.discard(e["id"])
    return paused


def _spec(tmp_path: Path, name: str, trials: int, epochs: int, scheduler: str, concurrency: int) -> Path:
    raw = tiny_mae_spec(name)
    raw["search"]["model.args.size"] = {"type": "choice", "values": ["small"]}
    raw["training"].update(epochs=epochs, max_steps_per_epoch=6)
    raw["scheduler"] = SCHEDULERS[scheduler]
    raw["searcher"] = {"type": "optuna", "seed": 3, "startup_trials": 2}
    raw["budget"] = {"trials": trials, "max_concurrent": concurrency}
    return write_spec(tmp_path, raw, f"{name}.yaml")


def _assert_every_epoch_once(out: Path, epochs_of: dict[str, int]) -> None:
    for trial_id, rows in recorded_epochs(out).items():
        assert [r["epoch"] for r in rows] == list(range(1, epochs_of[trial_id] + 1)), (trial_id, rows)


def test_killed_search_resumes_where_it_stopped(tmp_path: Path) -> None:
    trials, epochs = 6, 4
    spec_file = _spec(tmp_path, "resume", trials, epochs, scheduler="none", concurrency=2)
    out = tmp_path / "out"
    first = launch(launch_command(spec_file, out), tmp_path / "first.log", ENV)

    def two_done_one_running() -> bool:
        rows = recorded_epochs(out)
        return len(_ended(out)) >= 2 and any(r and r[-1]["epoch"] < epochs for r in rows.values())

    _wait_for(first, tmp_path / "first.log", two_done_one_running)
    done_before = _ended(out)
    os.killpg(first.pid, signal.SIGKILL)  # the launcher and its embedded Ray, with no warning
    first.wait(timeout=30)
    time.sleep(2)  # let the killed Ray processes go
    interrupted = {t for t, rows in recorded_epochs(out).items() if t not in done_before and rows}

    second = _run(spec_file, out)  # the same command; the dead launch's lock does not block it
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Resuming the search" in second.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "finished" and len(summary["trials"]) == trials
    assert all(t["status"] == "finished" and t["epochs"] == epochs for t in summary["trials"])
    _assert_every_epoch_once(out, {t["trial_id"]: epochs for t in summary["trials"]})
    rows = recorded_epochs(out)
    for trial_id in done_before:  # ended trials were kept, not run again
        assert all(r["resumed_from_epoch"] == 0 for r in rows[trial_id])
    for trial_id in interrupted:  # unfinished ones continued from their last checkpoint
        assert rows[trial_id][-1]["resumed_from_epoch"] >= 1, rows[trial_id]

    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]],
                              filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    assert sorted(r.data.tags[TRIAL_ID_TAG] for r in runs) == sorted(t["trial_id"] for t in summary["trials"])
    assert len(client.search_runs([info["experiment_id"]], filter_string="tags.`hpsearch.role` = 'search'")) == 1

    # The persisted study (what optuna-dashboard reads) was continued: one trial per search
    # trial, none asked twice, every epoch an intermediate value.
    stored = optuna.load_study(study_name="resume", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(stored.trials) == trials and {t.state.name for t in stored.trials} == {"COMPLETE"}
    assert all(sorted(t.intermediate_values) == list(range(1, epochs + 1)) for t in stored.trials)


def _launch_until(tmp_path: Path, name: str, trials: int, epochs: int,
                  reports: int) -> tuple[Path, Path, Path, subprocess.Popen]:
    """A search without a scheduler, 2 trials at a time, launched and running until it has
    recorded ``reports`` epochs: its spec file, output folder, log and process."""
    spec_file = _spec(tmp_path, name, trials, epochs, scheduler="none", concurrency=2)
    out, log = tmp_path / "out", tmp_path / "first.log"
    first = launch(launch_command(spec_file, out), log, ENV)
    _wait_for(first, log, lambda: sum(len(r) for r in recorded_epochs(out).values()) >= reports)
    return spec_file, out, log, first


def test_ctrl_c_interrupts_truthfully_and_the_same_command_continues(tmp_path: Path) -> None:
    trials, epochs = 4, 5
    spec_file, out, log, first = _launch_until(tmp_path, "ctrlc", trials, epochs, reports=3)

    # A second launch on the running folder: refused at once, in one line naming the search.
    started = time.monotonic()
    busy = _run(spec_file, out, timeout=60)
    assert busy.returncode == 2 and time.monotonic() - started < 15
    lines = busy.stderr.strip().splitlines()
    assert len(lines) == 1 and "a search is running there" in lines[0] and f"process {first.pid}" in lines[0]

    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
    assert first.wait(timeout=60) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert "Interrupted" in text and "same command" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "interrupted"
    assert {t["status"] for t in summary["trials"]} <= {"finished", "interrupted"}
    cut = [t for t in summary["trials"] if t["status"] == "interrupted"]
    assert cut and not (out / "best").exists()
    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    assert client.get_run(info["parent_run_id"]).info.status == "KILLED"
    for run in client.search_runs([info["experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'"):
        if run.data.tags[TRIAL_ID_TAG] in {t["trial_id"] for t in cut}:
            assert run.info.status == "KILLED" and run.data.tags[END_TAG] == "interrupted"

    second = _run(spec_file, out)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "finished" and len(summary["trials"]) == trials
    assert all(t["status"] == "finished" for t in summary["trials"])
    _assert_every_epoch_once(out, {t["trial_id"]: epochs for t in summary["trials"]})
    runs = client.search_runs([info["experiment_id"]],
                              filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == trials


@pytest.mark.parametrize("to_group", [False, True], ids=["launcher", "process-group"])
def test_sigterm_interrupts_like_ctrl_c_and_the_same_command_continues(tmp_path: Path, to_group: bool) -> None:
    """What a preempting scheduler sends: SIGTERM, then SIGKILL after a grace period (30 s here)."""
    trials, epochs = 3, 4
    spec_file, out, log, first = _launch_until(tmp_path, "sigterm", trials, epochs, reports=2)

    if to_group:
        os.killpg(first.pid, signal.SIGTERM)
    else:
        os.kill(first.pid, signal.SIGTERM)
    assert first.wait(timeout=30) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    text = log.read_text()
    assert "Interrupted (SIGTERM)" in text and "same command" in text and "Traceback" not in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    cut = {t["trial_id"] for t in summary["trials"] if t["status"] == "interrupted"}
    assert cut and all(t["epochs"] >= 1 for t in summary["trials"] if t["trial_id"] in cut)
    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    assert client.get_run(info["parent_run_id"]).info.status == "KILLED"
    runs = client.search_runs([info["experiment_id"]],
                              filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    assert {r.data.tags[TRIAL_ID_TAG] for r in runs if r.info.status == "KILLED"} == cut

    second = _run(spec_file, out, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Resuming the search" in second.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["interrupted_by"] is None and len(summary["trials"]) == trials
    _assert_every_epoch_once(out, {t["trial_id"]: epochs for t in summary["trials"]})


def _decisions(out: Path) -> list[tuple]:
    """Trial by trial, in the order they were issued: configuration, how it ended, epochs, values."""
    summary = json.loads((out / "summary.json").read_text())
    by_id = {t["trial_id"]: t for t in summary["trials"]}
    rows = recorded_epochs(out)
    order = [json.loads(line)["id"] for line in (out / "record.jsonl").read_text().splitlines()
             if json.loads(line)["e"] == "trial"]
    return [(json.dumps(by_id[t]["config"], sort_keys=True), by_id[t]["status"], by_id[t]["rung"],
             [round(r["val_mse"], 5) for r in rows[t]]) for t in order]


@pytest.mark.parametrize("scheduler", ["asha", "promotion"])
def test_continued_search_makes_the_stop_decisions_of_an_uninterrupted_one(tmp_path: Path, scheduler: str) -> None:
    """The same seeded TPE + ASHA search, once straight through and once interrupted (Ctrl-C,
    then the same command): the same configurations, stopped (or paused and promoted) at the
    same rungs, with the same values."""
    spec_file = _spec(tmp_path, "decide", trials=7, epochs=4, scheduler=scheduler, concurrency=1)
    straight = _run(spec_file, tmp_path / "straight")
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]

    out = tmp_path / "interrupted"
    log = tmp_path / "first.log"
    first = launch(launch_command(spec_file, out), log, ENV)
    if scheduler == "promotion":  # its trials end late (paused ones only at the search's end)
        _wait_for(first, log, lambda: len(recorded_epochs(out)) >= 3 and len(_paused(out)) >= 2)
    else:
        _wait_for(first, log, lambda: len(_ended(out)) >= 3 and len(recorded_epochs(out)) > len(_ended(out)))
    os.killpg(first.pid, signal.SIGINT)
    assert first.wait(timeout=60) == 130, log.read_text()[-3000:]
    continued = _run(spec_file, out)
    assert continued.returncode == 0, continued.stdout[-3000:] + continued.stderr[-3000:]

    expected = _decisions(tmp_path / "straight")
    assert any(status == "stopped early" for _, status, _, _ in expected)  # ASHA had decisions to make
    if scheduler == "promotion":  # and some trial was paused, then promoted
        events = [json.loads(line) for line in (tmp_path / "straight" / "record.jsonl").read_text().splitlines()]
        assert any(e["e"] == "promote" for e in events)
    assert _decisions(out) == expected
