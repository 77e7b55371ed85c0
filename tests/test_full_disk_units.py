"""A full disk met by each writer on its own, on a real small file system (tmpfs), and every wait
on a background writer bounded (a real blocked server, a real full journal). No Ray here;
tests/test_full_disk.py runs whole searches. The tmpfs tests are slow-marked: mounting runs `mount`."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.small_disk import fill, resize, small_disk
from trainables.background import BackgroundWriter
from trainables.disk_space import MARKER, DiskFault, DiskFullError, in_error_text
from trainables.objective import Objective
from trainables.outputs import RECORD_FILE
from trainables.results.record import SearchRecord
from trainables.tracking.journal import JOURNAL_FILE, RunWriter
from trainables.tracking.runs import _info
from trainables.trial.checkpoints import save_checkpoint

OBJECTIVE = Objective("val_loss", "min")


@pytest.mark.slow  # mounts a tmpfs (a `mount` subprocess)
def test_record_writer_cuts_a_failed_write_back_and_refuses_the_next(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 64) as disk:
        record = SearchRecord(disk, OBJECTIVE).open_for_writing()
        big = {"padding": "x" * 9000}  # a line of several pages: the write that fails is partial
        with pytest.raises(DiskFullError) as raised:
            for number in range(100):
                record.add_trial(f"trial{number}", big)
        assert str(disk) in str(raised.value) and RECORD_FILE in str(raised.value)
        written = (disk / RECORD_FILE).read_bytes()
        assert written.endswith(b"\n") and all(json.loads(line) for line in written.splitlines())
        issued = len(record.trials)
        assert issued == len(written.splitlines()) - 1  # the session line, then one per trial

        # Space again (another job's file deleted): the writer that failed still refuses, so no
        # whole line can follow the one it could not finish.
        resize(disk, 1024)
        with pytest.raises(DiskFullError):
            record.add_trial("after", {"small": 1})
        record.close("interrupted")
        assert (disk / RECORD_FILE).read_bytes() == written and len(record.trials) == issued

        # The next launch reads every whole line and writes on.
        again = SearchRecord(disk, OBJECTIVE)
        assert len(again.trials) == issued
        again.open_for_writing().add_trial("after", {"small": 1})
        again.close("finished")
        assert len(SearchRecord(disk, OBJECTIVE).trials) == issued + 1


@pytest.mark.slow  # mounts a tmpfs (a `mount` subprocess)
def test_a_checkpoint_that_does_not_fit_is_a_disk_fault_and_leaves_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 256) as disk:
        folder = disk / "trials" / "t1"
        state = {"model": {"w": torch.zeros(200_000)}}  # 800 kB
        with pytest.raises(DiskFullError) as raised:
            save_checkpoint(folder, 3, state, "config: 1\n")
        assert str(folder) in str(raised.value) and "epoch 3" in str(raised.value)
        assert list(folder.iterdir()) == []  # the partial folder was removed: its space is free again
        # What a trial's error text carries to the driver is read back as the same fault.
        found = in_error_text(f"Traceback ...\ntrainables.disk_space.DiskFullError: {raised.value}")
        assert found is not None and found.folder == folder and found.what == raised.value.what
        assert in_error_text("RuntimeError: CUDA out of memory") is None and MARKER in str(raised.value)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread killed on purpose
def test_a_blocked_writer_is_waited_for_a_bounded_time_and_a_failing_one_goes_on() -> None:
    release = threading.Event()
    errors: list[Exception] = []

    def apply(item: int) -> None:
        if item == 0:
            release.wait(30)  # a store that does not answer
        if item == 1:
            raise ValueError("the store refused")

    writer = BackgroundWriter("test-writer", apply, errors.append, stall_s=0.5)
    for item in range(3):
        writer.submit(item)
    started = time.monotonic()
    assert writer.flush() is False and time.monotonic() - started < 3
    release.set()
    assert writer.flush() is True and [str(e) for e in errors] == ["the store refused"]

    def die(item: int) -> None:
        raise SystemExit  # not an Exception: the thread ends, and the next write is never applied
    dead = BackgroundWriter("dead-writer", die, errors.append, stall_s=30)
    dead.submit(1)
    dead.submit(2)
    time.sleep(0.2)
    started = time.monotonic()
    assert dead.flush() is False and time.monotonic() - started < 2 and not dead.alive


def _silent_server() -> tuple[socket.socket, str]:
    """A real server that accepts connections and never answers (a hung tracking server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


def test_mlflow_writer_on_a_hung_server_is_not_waited_for_without_bound(tmp_path: Path, capsys) -> None:
    server, uri = _silent_server()
    try:
        writer = RunWriter(uri, tmp_path, "hung")
        writer._thread.stall_s = 1.0
        writer.create_run("search", "search", {})
        started = time.monotonic()
        assert writer.flush() is False and time.monotonic() - started < 5
        lines = [line for line in capsys.readouterr().err.splitlines() if "has written nothing" in line]
        assert len(lines) == 1 and uri in lines[0]
    finally:
        server.close()


@pytest.mark.slow  # mounts a tmpfs (a `mount` subprocess)
def test_mlflow_journal_on_a_full_disk_never_hangs_and_ends_the_search(tmp_path: Path, capsys) -> None:
    """The issue's hang: the server unreachable, and its journal on a full disk."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    uri = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nothing listens there: refused at once
    with small_disk(tmp_path / "disk", 64) as disk:
        writer = RunWriter(uri, disk, "full")
        fault = DiskFault()
        writer.disk = fault
        fill(disk)
        writer.create_run("search", "search", {})
        writer.log("search", metrics=[("loss", 1.0, 1)])
        started = time.monotonic()
        assert writer.flush() is True and time.monotonic() - started < 30
        assert fault.error is not None and JOURNAL_FILE in str(fault.error) and str(disk) in str(fault.error)
        assert writer.lost == 2 and writer._thread.alive
        assert _info(writer)["lost_writes"] == 2  # summary.json says so
        journal = disk / JOURNAL_FILE
        assert not journal.exists() or journal.read_bytes() == b""  # no partial line left behind
        told = [line for line in capsys.readouterr().err.splitlines() if "search ends as interrupted" in line]
        assert len(told) == 1


def test_a_time_limited_search_is_refused_only_for_the_trials_that_certainly_start(tmp_path: Path) -> None:
    """`trials: 10000` with a time limit means "as many as fit": its estimate is an upper bound,
    and the refusal counts only the first running trials; without the limit every trial counts."""
    from bench.trial_overhead import Workload, service_spec
    from tests.specs import write_spec
    from trainables.prepare.space import space_needed
    from trainables.spec.loading import load_spec

    raw = service_spec(Workload(trials=10_000, reports=4, work_s=0.1))
    raw["budget"] = {**raw["budget"], "max_concurrent": 2, "time_limit_minutes": 5}
    limited = space_needed(load_spec(str(write_spec(tmp_path, raw, "limited.yaml")))[0], tmp_path / "a")
    raw["budget"].pop("time_limit_minutes")
    unlimited = space_needed(load_spec(str(write_spec(tmp_path, raw, "unlimited.yaml")))[0], tmp_path / "b")

    assert limited.estimate == unlimited.estimate  # the same upper bound
    assert limited.minimum == limited.checkpoint * 4 + limited.certain_stores  # 2 running, 2 being written
    assert unlimited.minimum > 5000 * unlimited.checkpoint
    assert "up to 10000 trials" in limited.describe() and "time limit" in limited.describe()
    assert "up to" not in unlimited.describe().split("x up to")[0]
