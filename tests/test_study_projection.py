"""The Optuna study written behind the record (searcher.StudyProjection): each new trial is
created by the study's writer under the number the record gave it, and a study left behind by
a killed launch is brought up to the record by the next one. A real SQLite study; no Ray."""

from __future__ import annotations

from pathlib import Path

import optuna

from tests.specs import tiny_mae_spec, write_spec
from trainables.results.record import FINISHED, STOPPED, SearchRecord
from trainables.search.schedulers import build_scheduler
from trainables.search.searcher import StudySearcher
from trainables.spec.loading import load_spec

LR = "training.lr"


def _spec(tmp_path: Path):
    raw = tiny_mae_spec("projection")
    raw["search"] = {LR: {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2},
                     "model.args.size": {"type": "choice", "values": ["tiny", "small"]}}
    raw["searcher"] = {"type": "optuna", "seed": 1, "startup_trials": 2}
    raw["scheduler"] = {"type": "none"}
    raw["budget"]["trials"] = 10
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    return spec


def _launch(spec, out: Path) -> tuple[StudySearcher, SearchRecord]:
    """What run_search builds, without Ray: the record, the searcher, its study as a listener."""
    out.mkdir(exist_ok=True)
    record = SearchRecord(out, spec.objective)
    searcher = StudySearcher(spec, out, record, build_scheduler(spec, record).policy)
    record.add_listener(searcher.projection)
    record.open_for_writing()
    return searcher, record


def _stored(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="projection", storage=f"sqlite:///{out / 'optuna.db'}").trials


def _run(record: SearchRecord, trial_id: str, values: list[float], status: str | None) -> None:
    for epoch, value in enumerate(values, start=1):
        record.add_epoch(trial_id, epoch, {"val_mse": value, "training_iteration": epoch}, None)
    if status is not None:
        record.end_trial(trial_id, status, "test")


def test_each_new_trial_is_created_behind_the_record_under_its_recorded_number(tmp_path):
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    searcher, record = _launch(spec, out)
    ids = [f"t{i}" for i in range(3)]
    for trial_id, status in zip(ids, (FINISHED, STOPPED, None)):
        searcher.suggest(trial_id)
        _run(record, trial_id, [0.9, 0.5], status)
    assert searcher.projection.flush()

    stored = _stored(out)
    assert [t.number for t in stored] == [record.trials[i].study_number for i in ids] == [0, 1, 2]
    for frozen, trial_id in zip(stored, ids):
        trial = record.trials[trial_id]
        assert frozen.user_attrs["trial_id"] == trial_id
        assert frozen.params[LR] == trial.config[LR]
        assert frozen.params["model.args.size"] == trial.config["model.args.size"]
        assert frozen.intermediate_values == {1: 0.9, 2: 0.5}
    assert [t.state.name for t in stored] == ["COMPLETE", "PRUNED", "RUNNING"]
    assert stored[0].value == 0.5


def test_a_study_behind_its_record_is_brought_up_to_it_by_the_next_launch(tmp_path):
    """A launch killed after recording trials and before its study's writer created them."""
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    searcher, record = _launch(spec, out)
    searcher.suggest("a")
    _run(record, "a", [0.8], FINISHED)
    assert searcher.projection.flush()
    # The writer is kept from the next trials, as a kill -9 would: the record has them, the study not.
    record._listeners.remove(searcher.projection)
    for trial_id, status in (("b", FINISHED), ("c", None)):
        searcher.suggest(trial_id)
        _run(record, trial_id, [0.7, 0.6], status)
    record.close_quietly()
    assert [t.number for t in _stored(out)] == [0]

    searcher, record = _launch(spec, out)  # the next launch
    searcher.suggest("d")
    assert searcher.projection.flush()
    stored = _stored(out)
    assert [(t.number, t.user_attrs["trial_id"]) for t in stored] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    assert [t.state.name for t in stored] == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"]
    assert stored[1].intermediate_values == {1: 0.7, 2: 0.6} and stored[1].value == 0.6
    assert stored[2].intermediate_values == {1: 0.7, 2: 0.6}
    assert record.trials["d"].study_number == 3
