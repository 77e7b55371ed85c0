"""MLflow's writer folds the logs that gather within a second into one `log_batch` per run, on a
real SQLite store: nothing is lost or reordered, MLflow's per-call limits hold, a flush does
not wait for the gathering to end, and the next launch sends what a killed one never did."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from trainables.background import BackgroundWriter
from trainables.objective import Objective
from trainables.outputs import MLFLOW_RUNS_FILE
from trainables.results.record import FINISHED, SearchRecord
from trainables.tracking.journal import RunWriter, merge_logs
from trainables.tracking.runs import END_TAG, SEARCH_KEY, TrialRuns


def _log(key: str, at: int, metrics=(), params=None, tags=None) -> dict:
    return {"op": "log", "key": key, "time": at, "metrics": list(metrics), "params": params or {}, "tags": tags or {}}


def test_each_runs_logs_between_two_other_writes_become_one_in_order() -> None:
    ops = [
        {"op": "create_run", "key": "a", "name": "a", "tags": {}, "parent": None},
        _log("a", 1, [("loss", 0.9, 1)], params={"lr": "0.1"}),
        _log("b", 2, [("loss", 0.8, 1)]),
        _log("a", 3, [("loss", 0.7, 2)], tags={"end": "x"}),
        {"op": "status", "key": "a", "status": "FINISHED", "time": 4},
        _log("a", 5, [("loss", 0.6, 3)], tags={"end": "y"}),
        _log("a", 6, [], tags={"end": "z"}),
    ]
    merged = merge_logs(ops)
    assert [(op["op"], op["key"]) for op in merged] == [
        ("create_run", "a"), ("log", "a"), ("log", "b"), ("status", "a"), ("log", "a")]
    first_a = merged[1]
    assert first_a["metrics"] == [("loss", 0.9, 1, 1), ("loss", 0.7, 2, 3)]  # each keeps its own time
    assert first_a["params"] == {"lr": "0.1"} and first_a["tags"] == {"end": "x"} and first_a["writes"] == 2
    assert merged[4]["tags"] == {"end": "z"} and merged[4]["writes"] == 2  # the later tag wins, as in turn
    assert merge_logs([]) == []


def test_a_flush_ends_the_gathering_at_once() -> None:
    applied: list[int] = []
    writer = BackgroundWriter("lingering", applied.append, print, combine=lambda batch: batch, linger_s=30.0)
    writer.submit(1)
    writer.submit(2)
    started = time.monotonic()
    assert writer.flush() is True and time.monotonic() - started < 2 and applied == [1, 2]
    writer.submit(3)
    assert writer.flush() is True and applied == [1, 2, 3]


def test_a_seconds_logs_reach_mlflow_whole_in_few_calls(tmp_path: Path) -> None:
    writer = RunWriter(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, "merged")
    writer.create_run("search", "search", {})
    writer.create_run("t1", "t1", {}, parent="search")
    assert writer.flush()
    calls = []
    store = writer.client._tracking_client.store  # each call into the store: MLflow's client splits big batches
    send = store.log_batch

    def counted(*args, **kwargs):  # the real call, counted
        calls.append(threading.current_thread().name)
        return send(*args, **kwargs)

    store.log_batch = counted
    # More metrics than one log_batch takes, sent within the gathering time.
    reports, names = 120, [f"m{i}" for i in range(10)]
    assert reports * len(names) > MAX_METRICS_PER_BATCH
    for step in range(1, reports + 1):
        writer.log("t1", metrics=[(name, float(step), step) for name in names])
    writer.log("t1", params={"lr": 0.1}, tags={"note": "end"})
    assert writer.flush()
    assert 2 <= len(calls) <= 4, len(calls)  # 1,200 metrics: two calls, not 121

    run = writer.client.get_run(writer.run_id("t1"))
    assert run.data.params == {"lr": "0.1"} and run.data.tags["note"] == "end"
    for name in names:
        history = writer.client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(1, reports + 1))
        assert all(m.value == m.step for m in history)
    assert writer.lost == 0


def test_a_continued_search_sends_what_mlflow_never_took_and_nothing_twice(tmp_path: Path) -> None:
    """A launcher killed while its writes gathered: the record has epochs and an end that MLflow
    never got. The next launch's runs catch up from the record, and what MLflow did get stays one row."""
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = SearchRecord(out, Objective("val_loss", "min")).open_for_writing()
    for epoch in range(1, 5):
        if epoch == 1:
            record.add_trial("t1", {"lr": 0.1})
        record.add_epoch("t1", epoch, {"val_loss": 1.0 / epoch, "epoch": epoch}, None)
    record.end_trial("t1", FINISHED, "budget")
    record.add_trial("t2", {"lr": 0.2})
    record.add_epoch("t2", 1, {"val_loss": 0.9, "epoch": 1}, None)

    # The first launch: MLflow took t1's run and its first two epochs, then the launcher died.
    first = RunWriter(uri, out, "caught")
    first.create_run(SEARCH_KEY, "search", {})
    delivered = TrialRuns(SimpleNamespace(writer=first, out_dir=out), record)
    delivered.on_trial(record.trials["t1"])
    delivered.on_epoch(record.trials["t1"], 1)
    delivered.on_epoch(record.trials["t1"], 2)
    assert first.flush() and first.logged_step("t1") == 2 and not first.closed("t1")

    # The next launch reads what MLflow took from the folder, and sends the rest.
    second = RunWriter(uri, out, "caught")
    assert second.logged_step("t1") == 2 and not second.has_run("t2")
    TrialRuns(SimpleNamespace(writer=second, out_dir=out), record).catch_up()
    assert second.flush()
    client = second.client
    t1, t2 = client.get_run(second.run_id("t1")), client.get_run(second.run_id("t2"))
    assert sorted(m.step for m in client.get_metric_history(t1.info.run_id, "val_loss")) == [1, 2, 3, 4]
    assert t1.info.status == "FINISHED" and t1.data.tags[END_TAG] == FINISHED and second.closed("t1")
    assert [m.step for m in client.get_metric_history(t2.info.run_id, "val_loss")] == [1]
    assert t2.info.status == "RUNNING" and t2.data.params == {"lr": "0.2"}
    record.close("interrupted")


def test_a_folder_that_does_not_say_what_mlflow_took_is_not_sent_again(tmp_path: Path) -> None:
    """A folder of an older version: its run-id file has no accepted steps, and its metrics were
    stamped with the time of sending, so sending them again would make each epoch two rows."""
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = SearchRecord(out, Objective("val_loss", "min")).open_for_writing()
    record.add_trial("t1", {"lr": 0.1})
    record.add_epoch("t1", 1, {"val_loss": 0.5, "epoch": 1}, None)
    first = RunWriter(uri, out, "older")
    first.create_run(SEARCH_KEY, "search", {})
    TrialRuns(SimpleNamespace(writer=first, out_dir=out), record).on_trial(record.trials["t1"])
    assert first.flush()
    state = json.loads((out / MLFLOW_RUNS_FILE).read_text())
    del state["logged_steps"]
    (out / MLFLOW_RUNS_FILE).write_text(json.dumps(state))

    second = RunWriter(uri, out, "older")
    assert not second.knows_accepted
    TrialRuns(SimpleNamespace(writer=second, out_dir=out), record).catch_up()
    assert second.flush()
    assert second.client.get_metric_history(second.run_id("t1"), "val_loss") == []
    record.close("interrupted")
