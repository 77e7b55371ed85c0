"""A real search end to end: local Ray, Optuna TPE + ASHA, a real MLflow store, real HDF5 data."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from data import build_splits
from tests.specs import recorded_epochs, tiny_mae_spec, write_spec
from trainables import load_config, load_model, load_spec
from trainables.trial.checkpoints import load_state
from trainables.trial.loop import evaluate
from trainables.search.run import SearchOptions, launch_search
from trainables.spec.schema import SearchSpec
from trainables.tracking.runs import END_TAG, TRIAL_ID_TAG, SearchTracker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_search(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str, str]:
    """The search's summary, its folder, the lines it echoed, and Tune's live table as printed."""
    folder = tmp_path_factory.mktemp("search")
    raw = tiny_mae_spec("itest")
    raw["budget"]["keep_checkpoints"] = 2  # the best two trials keep their best epoch
    spec, path = load_spec(str(write_spec(folder, raw)))
    out = folder / "out"
    printed: list[str] = []
    with contextlib.redirect_stdout(io.StringIO()) as live:
        summary = launch_search(spec, SearchOptions(out_dir=out, verbose=1), echo=printed.append)
    return summary, out, "\n".join(printed), live.getvalue()


def test_summary_lists_every_trial_with_its_best_epoch(finished_search) -> None:
    summary, out, _, _ = finished_search
    assert json.loads((out / "summary.json").read_text()) == summary
    trials = summary["trials"]
    assert len(trials) == 4
    for trial in trials:
        assert set(trial) >= {"trial_id", "config", "status", "best_value", "best_epoch", "checkpoint"}
        assert trial["status"] in ("finished", "stopped early")
        assert set(trial["config"]) == {"model.args.size", "training.lr", "training.weight_decay",
                                        "model.args.loss_weights.sam", "model.args.loss_weights.variance",
                                        "model.args.loss_weights.range"}
        assert 1 <= trial["best_epoch"] <= trial["epochs"] <= 3
        assert trial["checkpoint"] is None or Path(trial["checkpoint"]).is_dir()
    # ASHA (grace 1, reduction 2, max_t 3) stops some trials early, and those end before the budget.
    stopped = [t for t in trials if t["status"] == "stopped early"]
    assert stopped and all(t["epochs"] < 3 for t in stopped)
    best = summary["best"]
    values = [t["best_value"] for t in trials]
    assert best["value"] == min(values)
    assert best["trial_id"] == next(t["trial_id"] for t in trials if t["best_value"] == min(values))


def test_output_folder_holds_spec_tune_mlflow_and_best(finished_search) -> None:
    _, out, printed, _ = finished_search
    assert (out / "spec.yaml").is_file() and (out / "record.jsonl").is_file() and (out / "mlflow.db").is_file()
    assert (out / "best" / "checkpoint.pt").is_file() and (out / "best" / "config.yaml").is_file()
    split = json.loads((out / "split.json").read_text())
    assert split["train"] and split["val"] and not {tuple(w) for w in split["train"]} & {tuple(w) for w in split["val"]}
    assert "stopped early" in printed and "Best checkpoint:" in printed and str(out / "best") in printed


def test_the_live_table_counts_trials_without_tunes_sample_total(finished_search) -> None:
    summary, _, _, live = finished_search
    counts = [line for line in live.splitlines() if line.startswith("Number of trials:")]
    # Tune's total would be its sample allowance (every trial issued again at each rung), not
    # the search's 4 configurations.
    assert counts and counts[-1].startswith(f"Number of trials: {len(summary['trials'])} ("), counts
    assert not any("/" in line.split("(")[0] for line in counts), counts


def test_the_best_line_says_how_far_from_the_trivial_baseline(finished_search) -> None:
    summary, out, printed, _ = finished_search
    best = summary["best"]
    at_best = next(row for row in recorded_epochs(out)[best["trial_id"]] if row["epoch"] == best["epoch"])
    baseline = at_best["val_baseline_mse"]
    assert (f"val_mse={best['value']:.5g} at epoch {best['epoch']}  "
            f"({best['value'] / baseline:.2f}x the trivial val_baseline_mse={baseline:.5g})") in printed


def test_only_the_best_trials_keep_their_best_checkpoint(finished_search) -> None:
    summary, out, _, _ = finished_search
    # While a trial ran it kept its best and its latest; once the search ended, the best
    # epoch of the budget.keep_checkpoints (2) best trials is kept, and nothing else.
    ranked = sorted(summary["trials"], key=lambda t: t["best_value"])
    for rank, trial in enumerate(ranked):
        kept = {p.name for p in (out / "trials" / trial["trial_id"]).glob("epoch_*")}
        if rank < 2:
            assert kept == {f"epoch_{trial['best_epoch']:03d}"}, trial["trial_id"]
            assert Path(trial["checkpoint"]).name == f"epoch_{trial['best_epoch']:03d}"
            assert set(load_state(trial["checkpoint"])) == {"model", "epoch", "metrics", "best_value"}
        else:
            assert kept == set() and trial["checkpoint"] is None, trial["trial_id"]
    # best/ shares the first one's files (hard links), and so does MLflow's local copy of it:
    # the best weights cost their size once.
    inode = (Path(ranked[0]["checkpoint"]) / "checkpoint.pt").stat().st_ino
    assert (out / "best" / "checkpoint.pt").stat().st_ino == inode
    assert [p.stat().st_ino for p in (out / "mlflow-artifacts").rglob("best_checkpoint/checkpoint.pt")] == [inode]


def test_mlflow_has_a_parent_run_and_one_child_per_trial(finished_search) -> None:
    summary, _, _, _ = finished_search
    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    parent = client.get_run(info["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(summary["best"]["value"])
    assert parent.data.params["experiment"] == "itest"
    children = client.search_runs([info["experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    by_trial = {run.data.tags[TRIAL_ID_TAG]: run for run in children}
    assert sorted(by_trial) == sorted(t["trial_id"] for t in summary["trials"])
    for trial in summary["trials"]:
        run = by_trial[trial["trial_id"]]
        assert run.data.tags[END_TAG] == trial["status"]
        assert run.data.params["training.lr"] == str(trial["config"]["training.lr"])
        history = client.get_metric_history(run.info.run_id, "val_mse")
        assert [m.step for m in history] == list(range(1, trial["epochs"] + 1))
        assert min(m.value for m in history) == pytest.approx(trial["best_value"])
    artifacts = [a.path for a in client.list_artifacts(info["parent_run_id"], "best_checkpoint")]
    assert "best_checkpoint/checkpoint.pt" in artifacts


def test_best_checkpoint_is_registered_as_a_model_version(finished_search, tmp_path: Path) -> None:
    summary, out, _, _ = finished_search
    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    (version,) = client.search_model_versions("name='itest'")  # registry name: the experiment's
    assert (str(version.version), version.run_id) == ("1", info["parent_run_id"])
    assert info["model_versions"] == {"itest": "1"}
    registered = Path(client.download_artifacts(info["parent_run_id"], "best_checkpoint", str(tmp_path)))
    assert version.source.endswith("/best_checkpoint")
    assert isinstance(load_model(registered), torch.nn.Module)
    # The next search's end, on the same store: its parent run becomes version 2.
    second = SearchTracker(info["tracking_uri"], "itest", tmp_path)
    second.start("second search", {"experiment": "itest"}, out / "spec.yaml")
    second.finish({"trial_id": "x", "value": 1.0, "epoch": 1}, out / "best", registered_model="itest")
    assert second.info()["model_versions"] == {"itest": "2"}
    versions = {str(v.version): v.run_id for v in client.search_model_versions("name='itest'")}
    assert versions == {"1": info["parent_run_id"], "2": second.parent_run_id}


def test_optuna_is_told_early_stopped_trials_were_pruned(finished_search) -> None:
    summary, out, _, _ = finished_search
    study = optuna.load_study(study_name="itest", storage=f"sqlite:///{out / 'optuna.db'}")
    states = sorted(t.state.name for t in study.trials)
    expected = sorted("PRUNED" if t["status"] == "stopped early" else "COMPLETE" for t in summary["trials"])
    assert states == expected
    completed = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    finished_best = [t["best_value"] for t in summary["trials"] if t["status"] == "finished"]
    assert sorted(completed) == pytest.approx(sorted(finished_best))  # best epoch, not the last one


def test_exported_checkpoint_loads_and_reproduces_its_metric(finished_search) -> None:
    summary, out, _, _ = finished_search
    model = load_model(out / "best")
    spec = SearchSpec.model_validate(load_config(out / "best"))
    loader = torch.utils.data.DataLoader(build_splits(spec.data).val, batch_size=spec.training.batch_size)
    torch.set_num_threads(1)
    metrics = evaluate(model, loader, torch.device("cpu"))
    assert metrics["mse"] == pytest.approx(summary["best"]["value"], rel=1e-4)
    assert spec.model.args["size"] == summary["best"]["config"]["model.args.size"]


def test_epochs_tied_on_the_best_value_still_export_a_checkpoint(ray_cluster, tmp_path: Path) -> None:
    raw = tiny_mae_spec("ties")
    # A model and a data kind of the user's own, both through `imports`: the trial process
    # (and the driver's end of search) validate the spec, so they must import them first.
    raw["imports"] = ["tests.fault_models", "tests.user_data_kinds"]
    raw["data"] = {"kind": "noise_cubes", "bands": 10, "size": 8}
    raw["model"] = {"name": "faulty_autoencoder",
                    "args": {"in_chans": 10, "fault": "constant_metric", "marker_dir": str(tmp_path)}}
    raw["metric"] = "val_mse"
    raw["search"] = {"training.lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2}}
    raw["scheduler"] = {"type": "none"}
    raw["resources"] = {"workers": 1, "cpus_per_worker": 1}
    raw["budget"] = {"trials": 1}
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    out = tmp_path / "out"
    summary = launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None)
    (trial,) = summary["trials"]
    assert trial["best_value"] == 1.0 and trial["checkpoint"] is not None
    # The first of the tied epochs is the best, and its checkpoint is the one kept.
    assert load_state(Path(trial["checkpoint"]))["epoch"] == trial["best_epoch"]
    assert summary["best"]["trial_id"] == trial["trial_id"] and (out / "best" / "checkpoint.pt").exists()
    assert load_config(out / "best")["data"]["kind"] == "noise_cubes"
