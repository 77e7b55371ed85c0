"""The Pareto front everywhere a user looks: summary.json's ``pareto``, the kept checkpoints
(best/ for the front's best quality, pareto/<trial>/ for the others, hard links), the report's
front chart and table; from a record of real files, and from one real two-objective search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.specs import tiny_mae_spec, write_spec
from trainables.objective import PARAMETERS, Objective
from trainables.outputs import BEST_DIR, BEST_TRIAL_FILE, CHECKPOINT_CONFIG_FILE, CHECKPOINT_STATE_FILE, PARETO_DIR
from trainables.results.front import front_entries, pareto_front
from trainables.results.record import BY_SCHEDULER, FAILED, FINISHED, STOPPED, SearchRecord, checkpoint_relpath
from trainables.results.summary import export_best, export_front, write_summary

LOSS, SIZE = Objective("val_mse", "min"), Objective(PARAMETERS, "min")
OBJECTIVES = [LOSS, SIZE]


def _record(folder: Path) -> SearchRecord:
    """Four trials: a (best loss, large), b (fair loss, small), c (dominated by a), d (failed,
    without a checkpoint: a non-finite loss)."""
    record = SearchRecord(folder, LOSS).open_for_writing()
    for trial, epochs, status in [("a", [(0.5, 100), (0.3, 100)], FINISHED), ("b", [(0.6, 10), (0.7, 10)], STOPPED),
                                  ("c", [(0.4, 200)], STOPPED), ("d", [(0.1, 1)], FAILED)]:
        record.add_trial(trial, {"model.args.size": "large" if trial != "b" else "small"})
        for epoch, (loss, size) in enumerate(epochs, 1):
            folder_name = checkpoint_relpath(trial, epoch) if status != FAILED else None
            if folder_name:
                (folder / folder_name).mkdir(parents=True)
                (folder / folder_name / CHECKPOINT_STATE_FILE).write_bytes(b"weights of " + trial.encode())
                (folder / folder_name / CHECKPOINT_CONFIG_FILE).write_text("{}")
            record.add_epoch(trial, epoch, {"val_mse": loss, PARAMETERS: size, "epoch": epoch}, folder_name)
        record.end_trial(trial, status, BY_SCHEDULER if status == STOPPED else "budget", rung=1 if status == STOPPED else None)
    return record


def test_the_front_is_every_trial_no_other_beats_at_its_point(tmp_path: Path) -> None:
    record = _record(tmp_path)
    # b's point is its best epoch by val_mse (epoch 1: 0.6, 10), not its last; d failed.
    assert [t.trial_id for t in pareto_front(record, OBJECTIVES)] == ["a", "b"]
    entries = front_entries(record, OBJECTIVES)
    assert entries[1] == {"trial_id": "b", "config": {"model.args.size": "small"},
                          "values": {"val_mse": 0.6, PARAMETERS: 10}, "epoch": 1, "status": STOPPED}
    assert [t.trial_id for t in pareto_front(record, [LOSS])] == ["a"]  # one objective: the best


def test_the_front_keeps_its_checkpoints_best_first_and_the_others_in_pareto(tmp_path: Path) -> None:
    record = _record(tmp_path)
    front = pareto_front(record, OBJECTIVES)
    record.prune(keep=1, also=[t.trial_id for t in front])
    assert record.trials["b"].checkpoints == {1: checkpoint_relpath("b", 1)}  # kept as the front's
    assert record.trials["c"].checkpoints == {}
    best = export_best(record)
    assert json.loads((best / BEST_TRIAL_FILE).read_text())["trial_id"] == "a"
    assert export_front(record, front) == [tmp_path / PARETO_DIR / "b"]
    kept = tmp_path / checkpoint_relpath("b", 1) / CHECKPOINT_STATE_FILE
    assert (tmp_path / PARETO_DIR / "b" / CHECKPOINT_STATE_FILE).stat().st_ino == kept.stat().st_ino  # a hard link
    summary = json.loads(write_summary(record, "x", best, {}, objectives=OBJECTIVES).read_text())
    assert [p["trial_id"] for p in summary["pareto"]] == ["a", "b"]
    assert summary["objectives"] == [{"metric": "val_mse", "mode": "min"}, {"metric": PARAMETERS, "mode": "min"}]
    assert (tmp_path / BEST_DIR).is_dir()


@pytest.mark.slow
def test_a_real_two_objective_search_ends_with_its_front_everywhere(ray_cluster, tmp_path: Path) -> None:
    from trainables.results.report import HTML_FILE, PARETO_CSV_FILE
    from trainables.search.run import SearchOptions, launch_search
    from trainables.spec.loading import load_spec

    raw = tiny_mae_spec("front")
    for key in ("metric", "mode"):
        raw.pop(key)
    raw["objectives"] = [{"metric": "val_mse", "mode": "min"}, {"metric": PARAMETERS, "mode": "min"}]
    raw["scheduler"] = {"type": "pareto", "grace_period": 1, "reduction_factor": 2}
    raw["budget"]["trials"] = 5
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    out = tmp_path / "out"
    summary = launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None)

    record = SearchRecord(out, spec.objective)
    assert all(t.ended for t in record.trials.values())
    for trial in record.trials.values():  # every stop keeps its reason and rung
        if trial.status == STOPPED:
            assert trial.reason == BY_SCHEDULER and trial.rung in (1, 2)
        for metrics in trial.epochs.values():
            assert metrics[PARAMETERS] > 0 and metrics["cost_accelerator_s"] > 0
    front = pareto_front(record, spec.objectives)
    assert [p["trial_id"] for p in summary["pareto"]] == [t.trial_id for t in front]
    for entry in summary["pareto"]:
        assert set(entry["values"]) == {"val_mse", PARAMETERS}
    assert summary["best"]["trial_id"] == front[0].trial_id  # best/ is the front's best val_mse
    exported = sorted(p.name for p in (out / PARETO_DIR).iterdir()) if (out / PARETO_DIR).exists() else []
    assert exported == sorted(t.trial_id for t in front[1:])
    for trial in front[1:]:
        source = out / trial.best_checkpoint(spec.objective) / CHECKPOINT_STATE_FILE
        assert (out / PARETO_DIR / trial.trial_id / CHECKPOINT_STATE_FILE).stat().st_ino == source.stat().st_ino
    # MLflow: the front's runs, and only theirs, carry the tag.
    from mlflow.tracking import MlflowClient

    from trainables.tracking.runs import PARETO_TAG, TRIAL_ID_TAG

    info = summary["mlflow"]
    runs = MlflowClient(info["tracking_uri"]).search_runs([info["experiment_id"]])
    tagged = {run.data.tags.get(TRIAL_ID_TAG) for run in runs if run.data.tags.get(PARETO_TAG) == "true"}
    assert tagged == {t.trial_id for t in front}
    print(f"front: {len(front)} of {len(record.trials)} trials")
    # Optuna is told the truth: one direction per objective, points for finished trials, no values for stopped.
    import optuna

    study = optuna.load_study(study_name=spec.experiment, storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.directions) == 2
    for frozen in study.trials:
        assert frozen.intermediate_values == {}
        if frozen.state == optuna.trial.TrialState.COMPLETE:
            assert len(frozen.values) == 2
    # The report: the front chart and table.
    report = out / "report"
    assert (report / "pareto_front.png").is_file()
    rows = (report / PARETO_CSV_FILE).read_text().splitlines()
    assert rows[0].startswith("trial_id,status,val_mse,cost_params") and len(rows) == 1 + len(front)
    assert "Pareto front" in (report / HTML_FILE).read_text()


def test_the_front_chart_names_only_the_sizes_some_trial_had(tmp_path: Path) -> None:
    """The flagship's chart listed `huge` in its legend though no trial was huge."""
    import yaml

    from trainables.outputs import SPEC_FILE
    from trainables.results import plots
    from trainables.results.search_data import gather

    _record(tmp_path)
    raw = tiny_mae_spec("chart")
    for key in ("metric", "mode"):
        raw.pop(key)
    raw["objectives"] = [{"metric": "val_mse", "mode": "min"}, {"metric": PARAMETERS, "mode": "min"}]
    raw["search"]["model.args.size"]["values"] = ["tiny", "small", "large", "huge"]
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(raw))
    figure = plots.pareto_front(gather(tmp_path))
    labels = [text.get_text() for text in figure.axes[-1].get_legend().get_texts()]
    assert [label for label in labels if label.startswith("model.args.size=")] == \
        ["model.args.size=small", "model.args.size=large"]
    assert "stopped" in figure._suptitle.get_text()
