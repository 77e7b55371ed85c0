"""Trials that raise, lose their process, or diverge: retried from the last checkpoint where
that makes sense (a NaN is not retried), and the search goes on and says what happened."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.specs import recorded_epochs, tiny_mae_spec, write_spec
from trainables import load_spec
from trainables.search.run import SearchOptions, launch_search
from trainables.tracking.runs import END_TAG, REASON_TAG, RETRIES_TAG, TRIAL_ID_TAG

pytestmark = pytest.mark.slow


def _faulty_search(folder: Path, markers: Path, faults: list[str], workers: int) -> tuple[dict, Path]:
    """A real search of the fault-injecting model, one trial per fault (failing at epoch 2)."""
    raw = tiny_mae_spec("faults")
    raw["imports"] = ["tests.fault_models"]
    raw["model"] = {"name": "faulty_autoencoder",
                    "args": {"in_chans": 10, "fail_epoch": 2, "marker_dir": str(markers)}}
    raw["metric"] = "val_mse"
    raw["search"] = {"model.args.fault": {"type": "grid", "values": faults}}
    raw["searcher"] = {"type": "random", "seed": 0}
    raw["scheduler"] = {"type": "none"}
    raw["resources"] = {"workers": workers, "cpus_per_worker": 1}
    raw["budget"] = {"trials": 1, "max_failures": 2}
    raw["training"]["epochs"] = 3
    spec, _ = load_spec(str(write_spec(folder, raw)))
    out = folder / "out"
    return launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None), out


@pytest.fixture(scope="module")
def faulty_search(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    folder = tmp_path_factory.mktemp("faults")
    summary, out = _faulty_search(folder, folder / "markers", ["raise", "kill", "nan", "always_raise"], workers=1)
    return summary, out, folder / "markers"


def _trial(summary: dict, fault: str) -> dict:
    return next(t for t in summary["trials"] if t["config"]["model.args.fault"] == fault)


def _last_result(out: Path, trial_id: str) -> dict:
    return recorded_epochs(out)[trial_id][-1]


def _attempts(markers: Path, fault: str) -> int:
    return len((markers / fault / "attempts").read_text().splitlines())


@pytest.mark.parametrize("fault", ["raise", "kill"])
def test_crashed_trial_is_retried_from_its_last_checkpoint(faulty_search, fault: str) -> None:
    summary, out, markers = faulty_search
    trial = _trial(summary, fault)
    assert trial["status"] == "finished" and trial["epochs"] == 3
    assert trial["failures"] == 1 and trial["last_failure"]
    assert _attempts(markers, fault) == 2
    # The retry continued after epoch 1 (its last checkpoint) instead of starting again.
    assert _last_result(out, trial["trial_id"])["resumed_from_epoch"] == 1


def test_diverged_trial_ends_failed_with_its_reason_and_no_retry(faulty_search) -> None:
    summary, out, markers = faulty_search
    trial = _trial(summary, "nan")
    assert trial["status"] == "failed"
    assert "loss became nan at epoch 2" in trial["reason"]
    assert _attempts(markers, "nan") == 1
    assert trial["best_epoch"] == 1  # its healthy epoch still counts
    assert summary["best"] is not None


def test_trial_failing_at_every_retry_ends_failed_after_max_failures_and_the_search_goes_on(faulty_search) -> None:
    summary, _, markers = faulty_search
    trial = _trial(summary, "always_raise")
    assert trial["status"] == "failed" and "injected failure, at every attempt" in trial["reason"]
    assert _attempts(markers, "always_raise") == 3  # the first attempt and budget.max_failures = 2 retries
    assert trial["failures"] == 3 and trial["best_epoch"] == 1
    assert _trial(summary, "raise")["status"] == "finished"


def test_mlflow_records_what_happened(faulty_search) -> None:
    summary, out, _ = faulty_search
    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]],
                              filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    by_trial = {r.data.tags[TRIAL_ID_TAG]: r for r in runs}
    assert len(runs) == 4 == len(by_trial)  # a retried trial keeps its one child run
    nan_run = by_trial[_trial(summary, "nan")["trial_id"]]
    assert nan_run.info.status == "FAILED" and nan_run.data.tags[END_TAG] == "failed"
    assert "loss became nan" in nan_run.data.tags[REASON_TAG]
    gave_up = by_trial[_trial(summary, "always_raise")["trial_id"]]
    assert gave_up.info.status == "FAILED" and "injected failure" in gave_up.data.tags[REASON_TAG]
    for fault in ("raise", "kill"):
        run = by_trial[_trial(summary, fault)["trial_id"]]
        assert run.info.status == "FINISHED" and run.data.tags[END_TAG] == "finished"
        assert run.data.tags[RETRIES_TAG] == "1"


def test_killed_ddp_worker_restarts_from_the_latest_checkpoint(ray_cluster, tmp_path: Path) -> None:
    summary, out = _faulty_search(tmp_path, tmp_path / "m", ["kill"], workers=2)
    (trial,) = summary["trials"]
    assert trial["status"] == "finished" and trial["epochs"] >= 3
    # Rank 0 killed its own process at epoch 2; each rank logs an attempt: 2 ranks x 2 starts.
    assert _attempts(tmp_path / "m", "kill") == 4
    assert _last_result(out, trial["trial_id"])["resumed_from_epoch"] == 1
