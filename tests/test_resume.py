"""Interruptions, for real: kill -9 of the launcher, Ctrl-C (SIGINT to its process group), SIGTERM
(to the launcher alone and to its process group: a preempted node), and a second launch on a
running folder. The same command continues a search where it stopped, and makes the decisions
an uninterrupted search makes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.processes import group_members, launch, launch_command, run_to_end, wait_until
from tests.specs import read_record, recorded_epochs, tiny_mae_spec, write_spec
from trainables.outputs import study_storage_url
from trainables.results.record import INTERRUPTED, PAUSED
from trainables.tracking.runs import END_TAG, TRIAL_ID_TAG

pytestmark = pytest.mark.slow


def _run(spec_file: Path, out: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """The search's command, run to its end; it must succeed."""
    done = run_to_end(launch_command(spec_file, out), timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _ended(out: Path) -> set[str]:
    record = read_record(out)
    return {t.trial_id for t in record.trials.values() if t.ended} if record else set()


def _paused(out: Path) -> set[str]:
    """Trials paused at a rung and not yet promoted."""
    record = read_record(out)
    return {t.trial_id for t in record.trials.values() if t.paused} if record else set()


SCHEDULERS = {"none": {"type": "none"},
              "asha": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
              "promotion": {"type": "promotion", "grace_period": 1, "reduction_factor": 2}}


def _spec(tmp_path: Path, name: str, trials: int, epochs: int, scheduler: str, concurrency: int) -> Path:
    raw = tiny_mae_spec(name)
    raw["search"]["model.args.size"] = {"type": "choice", "values": ["small"]}
    raw["training"].update(epochs=epochs, max_steps_per_epoch=6)
    raw["scheduler"] = SCHEDULERS[scheduler]
    raw["searcher"] = {"type": "optuna", "seed": 3, "startup_trials": 2}
    raw["budget"] = {"trials": trials, "max_concurrent": concurrency}
    return write_spec(tmp_path, raw, f"{name}.yaml")


def _assert_every_epoch_once(out: Path, summary: dict) -> None:
    """Every trial's epochs recorded 1..its last, none skipped."""
    rows = recorded_epochs(out)
    for trial in summary["trials"]:
        assert [r["epoch"] for r in rows[trial["trial_id"]]] == list(range(1, trial["epochs"] + 1)), trial


def _child_runs(summary: dict) -> list:
    info = summary["mlflow"]
    return MlflowClient(info["tracking_uri"]).search_runs(
        [info["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")


def _parent_run(summary: dict):
    return MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(summary["mlflow"]["parent_run_id"])


def test_killed_search_resumes_where_it_stopped(tmp_path: Path) -> None:
    trials, epochs = 4, 4
    spec_file = _spec(tmp_path, "resume", trials, epochs, scheduler="none", concurrency=2)
    out, log = tmp_path / "out", tmp_path / "first.log"
    first = launch(launch_command(spec_file, out), log)

    def two_done_one_running() -> bool:
        rows = recorded_epochs(out)
        return len(_ended(out)) >= 2 and any(r and r[-1]["epoch"] < epochs for r in rows.values())

    wait_until(two_done_one_running, 240, "two trials ended and one running", first, log)
    done_before = _ended(out)
    os.killpg(first.pid, signal.SIGKILL)  # the launcher and its embedded Ray, with no warning
    first.wait(timeout=30)
    wait_until(lambda: not group_members(first.pid), 60, "the killed launch's Ray processes gone")
    interrupted = {t for t, rows in recorded_epochs(out).items() if t not in done_before and rows}

    second = _run(spec_file, out)  # the same command; the dead launch's lock does not block it
    assert "Resuming the search" in second.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "finished" and len(summary["trials"]) == trials
    assert all(t["status"] == "finished" and t["epochs"] == epochs for t in summary["trials"])
    _assert_every_epoch_once(out, summary)
    rows = recorded_epochs(out)
    for trial_id in done_before:  # ended trials were kept, not run again
        assert all(r["resumed_from_epoch"] == 0 for r in rows[trial_id])
    for trial_id in interrupted:  # unfinished ones continued from their last checkpoint
        assert rows[trial_id][-1]["resumed_from_epoch"] >= 1, rows[trial_id]

    assert sorted(r.data.tags[TRIAL_ID_TAG] for r in _child_runs(summary)) == \
        sorted(t["trial_id"] for t in summary["trials"])
    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    assert len(client.search_runs([info["experiment_id"]], filter_string="tags.`hpsearch.role` = 'search'")) == 1
    # Every recorded epoch reached MLflow once, those the killed launcher never sent too
    # (its writes gather for a second; TrialRuns.catch_up sends them from the record).
    for run in _child_runs(summary):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, summary["metric"]))
        assert steps == list(range(1, epochs + 1)), run.data.tags[TRIAL_ID_TAG]

    # The persisted study (what optuna-dashboard reads) was continued: one trial per search
    # trial, none asked twice, every epoch an intermediate value.
    stored = optuna.load_study(study_name="resume", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(stored.trials) == trials and {t.state.name for t in stored.trials} == {"COMPLETE"}
    assert all(sorted(t.intermediate_values) == list(range(1, epochs + 1)) for t in stored.trials)


def test_sigterm_to_the_launcher_alone_interrupts_like_ctrl_c(tmp_path: Path) -> None:
    """What a batch scheduler sends the job's main process (Slurm's --signal): SIGTERM, then
    SIGKILL after a grace period (30 s here). The process group's case, and the continuation,
    are in the decision test below."""
    spec_file = _spec(tmp_path, "sigterm", trials=3, epochs=4, scheduler="none", concurrency=2)
    out, log = tmp_path / "out", tmp_path / "first.log"
    first = launch(launch_command(spec_file, out), log)
    wait_until(lambda: sum(len(r) for r in recorded_epochs(out).values()) >= 2, 240, "two epochs recorded",
               first, log)

    before = {trial_id: len(epochs) for trial_id, epochs in recorded_epochs(out).items()}
    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(timeout=30) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    text = log.read_text()
    assert "Interrupted (SIGTERM)" in text and "same command" in text and "Traceback" not in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    cut = {t["trial_id"]: t["epochs"] for t in summary["trials"] if t["status"] == INTERRUPTED}
    # Every epoch completed before the signal is kept. A trial the signal caught before its
    # first epoch (the second slot starts later on a loaded machine) has none to keep.
    assert cut and max(cut.values()) >= 1
    assert all(epochs >= before.get(trial_id, 0) for trial_id, epochs in cut.items()), (before, cut)
    assert _parent_run(summary).info.status == "KILLED"
    assert {r.data.tags[TRIAL_ID_TAG] for r in _child_runs(summary) if r.info.status == "KILLED"} == set(cut)
    # The embedded cluster went with it (its processes, SIGTERM blocked, are killed at once).
    wait_until(lambda: not group_members(first.pid), 30, "the search's Ray processes gone")


def test_sigterm_while_the_search_starts_interrupts_it_too(tmp_path: Path) -> None:
    """SIGTERM once Ray is connected but before the first trial (MLflow and the study being set
    up, slow on a loaded machine): ray.init's own handler used to end the launcher with status
    15, without a word (found by the chaos soak). It is an interruption like any other."""
    spec_file = _spec(tmp_path, "sigterm_start", trials=2, epochs=2, scheduler="none", concurrency=1)
    out, log = tmp_path / "out", tmp_path / "first.log"
    first = launch(launch_command(spec_file, out), log)
    wait_until(lambda: log.exists() and "MLflow: tracking URI" in log.read_text(), 240, "Ray connected", first, log)

    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    text = log.read_text()
    assert "Interrupted (SIGTERM)" in text and "same command" in text and "Traceback" not in text, text[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"


def _decisions(out: Path) -> list[tuple]:
    """Trial by trial, in the order they were issued: configuration, how it ended, epochs, values."""
    summary = json.loads((out / "summary.json").read_text())
    by_id = {t["trial_id"]: t for t in summary["trials"]}
    rows = recorded_epochs(out)
    order = sorted(read_record(out).trials.values(), key=lambda t: t.number)
    return [(json.dumps(by_id[t.trial_id]["config"], sort_keys=True), by_id[t.trial_id]["status"],
             by_id[t.trial_id]["rung"], [round(r["val_mse"], 5) for r in rows[t.trial_id]]) for t in order]


@pytest.mark.parametrize("scheduler,interruption", [("asha", "Ctrl-C"), ("promotion", "SIGTERM to the group")])
def test_continued_search_makes_the_stop_decisions_of_an_uninterrupted_one(tmp_path: Path, scheduler: str,
                                                                           interruption: str) -> None:
    """The same seeded TPE + ASHA search, once straight through and once interrupted (Ctrl-C,
    or SIGTERM to the process group as a preempted node gets), then the same command: the same
    configurations, stopped (or paused and promoted) at the same rungs, with the same values.
    The interruption is truthful (summary.json, MLflow), and the continued search ends whole."""
    trials = 7
    spec_file = _spec(tmp_path, "decide", trials=trials, epochs=4, scheduler=scheduler, concurrency=1)
    _run(spec_file, tmp_path / "straight")

    out, log = tmp_path / "interrupted", tmp_path / "first.log"
    first = launch(launch_command(spec_file, out), log)
    if scheduler == "promotion":  # its trials end late (paused ones only at the search's end)
        wait_until(lambda: len(recorded_epochs(out)) >= 3 and len(_paused(out)) >= 2, 240,
                   "three trials recorded, two paused", first, log)
    else:
        wait_until(lambda: len(_ended(out)) >= 3 and len(recorded_epochs(out)) > len(_ended(out)), 240,
                   "three trials ended and one running", first, log)

    if interruption == "Ctrl-C":
        # A second launch on the running folder: refused before it starts Ray, in one line naming
        # the search (no time bound: on a loaded machine its imports alone took 45 s).
        busy = run_to_end(launch_command(spec_file, out), timeout=300)
        assert busy.returncode == 2 and "Ray cluster" not in busy.stdout
        lines = busy.stderr.strip().splitlines()
        assert len(lines) == 1 and "a search is running there" in lines[0] and f"process {first.pid}" in lines[0]
        os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert first.wait(timeout=60) == 130, log.read_text()[-3000:]
        said, by = "Interrupted", "SIGINT"
    else:
        os.killpg(first.pid, signal.SIGTERM)
        assert first.wait(timeout=30) == 128 + signal.SIGTERM, log.read_text()[-3000:]
        said, by = "Interrupted (SIGTERM)", "SIGTERM"
    text = log.read_text()
    assert said in text and "same command" in text and "Traceback" not in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["interrupted_by"] == by
    assert not (out / "best").exists()  # nothing is exported from an interrupted search
    cut = {t["trial_id"] for t in summary["trials"] if t["status"] == INTERRUPTED}
    assert interruption != "Ctrl-C" or cut
    # The runs of trials not ended (cut, or paused at a rung) are KILLED until the search continues.
    unfinished = cut | {t["trial_id"] for t in summary["trials"] if t["status"] == PAUSED}
    assert _parent_run(summary).info.status == "KILLED"
    for run in _child_runs(summary):
        assert (run.info.status == "KILLED") == (run.data.tags[TRIAL_ID_TAG] in unfinished), run.data.tags
        assert run.data.tags[TRIAL_ID_TAG] not in unfinished or run.data.tags[END_TAG] == INTERRUPTED

    continued = _run(spec_file, out)
    assert "Resuming the search" in continued.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["interrupted_by"] is None and len(summary["trials"]) == trials
    _assert_every_epoch_once(out, summary)
    runs = _child_runs(summary)
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == trials

    # The study is told every end before the launch exits, those end_search makes too (a trial
    # still paused at the end is PRUNED): none is left RUNNING by its daemon writer.
    for folder in (tmp_path / "straight", out):
        stored = optuna.load_study(study_name="decide", storage=study_storage_url(None, folder))
        assert len(stored.trials) == trials and all(t.state.is_finished() for t in stored.trials), folder

    expected = _decisions(tmp_path / "straight")
    assert any(status == "stopped early" for _, status, _, _ in expected)  # ASHA had decisions to make
    if scheduler == "promotion":  # and some trial was promoted: each pauses at the first rung (epoch 1)
        assert any(len(rows) > 1 for rows in recorded_epochs(tmp_path / "straight").values())
    assert _decisions(out) == expected
