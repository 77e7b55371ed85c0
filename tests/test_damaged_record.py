"""A damaged record (a line before the last cut short or not JSON, as a full disk or a crash on a
network file system leaves it) is named in one line, never a traceback, and nothing is changed;
`launch.py report` draws what comes before it. A cut-short last line (a killed writer) is
still dropped silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import launch_command, launch_py, run_to_end
from tests.specs import tiny_mae_spec, write_spec
from trainables.outputs import RECORD_FILE, REPORT_DIR, SPEC_FILE
from trainables.folder_lock import FolderLock
from trainables.prepare.preflight import resolved_yaml, sample_configs
from trainables.results.record import FINISHED, TRIAL_SECONDS, DamagedRecordError, SearchRecord
from trainables.spec.loading import load_spec

TRIALS, EPOCHS = 3, 3
# Line 1 is the session; each trial then writes its trial line, its epochs and its end.
DAMAGED_LINE = 1 + (1 + EPOCHS + 1) + 2  # trial 2's second line: its first epoch


def _search(tmp_path: Path) -> tuple[Path, Path]:
    """A spec file and the output folder of a search of it with TRIALS finished trials, written
    through the record's own writer under the folder's lock, as a launch writes it (no Ray needed)."""
    spec_file = write_spec(tmp_path, tiny_mae_spec("damaged"))
    spec, _ = load_spec(str(spec_file))
    out = tmp_path / "out"
    out.mkdir()
    (out / SPEC_FILE).write_text(resolved_yaml(spec))
    lock = FolderLock(out).acquire()
    record = SearchRecord(out, spec.objective).open_for_writing()
    for number, config in enumerate(sample_configs(spec, TRIALS)):
        trial_id = f"trial{number}"
        record.add_trial(trial_id, config)
        for epoch in range(1, EPOCHS + 1):
            record.add_epoch(trial_id, epoch, {spec.metric: 1.0 / (epoch + number), TRIAL_SECONDS: float(epoch)}, None)
        record.end_trial(trial_id, FINISHED, "budget")
    record.close_quietly()
    lock.release()
    return spec_file, out


def _damage(out: Path, line: int, how: str) -> None:
    lines = (out / RECORD_FILE).read_bytes().splitlines(keepends=True)
    lines[line - 1] = {"cut short": lines[line - 1][:20] + b"\n",  # the start of an event, then the next one
                       "not JSON": b"\0" * 64 + b"\n"}[how]  # a crash on NFS leaves zeros
    (out / RECORD_FILE).write_bytes(b"".join(lines))


@pytest.mark.parametrize("how", ["cut short", "not JSON"])
def test_a_damaged_line_before_the_last_is_named_by_file_and_line(tmp_path: Path, how: str) -> None:
    spec_file, out = _search(tmp_path)
    _damage(out, DAMAGED_LINE, how)
    objective = load_spec(str(spec_file))[0].objective
    with pytest.raises(DamagedRecordError) as raised:
        SearchRecord(out, objective)
    assert raised.value.path == out / RECORD_FILE and raised.value.line == DAMAGED_LINE
    message = str(raised.value)
    assert str(out / RECORD_FILE) in message and f"line {DAMAGED_LINE} " in message and "\n" not in message

    # A reader that draws what it can folds everything before the damaged line.
    before = SearchRecord(out, objective, up_to_damage=True)
    assert before.damage is not None and before.damage.line == DAMAGED_LINE
    assert sorted(before.trials) == ["trial0", "trial1"]
    assert before.trials["trial0"].ended and not before.trials["trial1"].epochs


def test_a_cut_short_last_line_is_still_dropped_silently(tmp_path: Path) -> None:
    spec_file, out = _search(tmp_path)
    data = (out / RECORD_FILE).read_bytes()
    (out / RECORD_FILE).write_bytes(data[:-10])  # the last event (trial2's end) loses its tail
    record = SearchRecord(out, load_spec(str(spec_file))[0].objective)
    assert record.damage is None and len(record.trials) == TRIALS
    assert not record.trials["trial2"].ended and len(record.trials["trial2"].epochs) == EPOCHS


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_launch_on_a_damaged_record_says_so_in_one_line_and_changes_nothing(tmp_path: Path) -> None:
    spec_file, out = _search(tmp_path)
    _damage(out, DAMAGED_LINE, "cut short")
    before = _files(out)
    done = run_to_end(launch_command(spec_file, out))
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out / RECORD_FILE) in lines[0] and f"line {DAMAGED_LINE} " in lines[0], lines
    assert "Ray cluster" not in done.stdout  # refused before Ray started
    assert _files(out) == before  # the record byte for byte, and no lock or anything else left


@pytest.mark.slow
def test_launch_report_draws_what_comes_before_the_damage(tmp_path: Path) -> None:
    _, out = _search(tmp_path)
    _damage(out, DAMAGED_LINE, "not JSON")
    record = (out / RECORD_FILE).read_bytes()
    done = run_to_end(launch_py("report", str(out)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # (Optuna's own log line for the in-memory study it builds may come too.)
    said = [line for line in done.stderr.splitlines() if "damaged" in line]
    assert said == [f"{out / RECORD_FILE}: line {DAMAGED_LINE} is damaged; the report shows the search up to "
                    f"line {DAMAGED_LINE - 1}."], done.stderr
    table = (out / REPORT_DIR / "trials.csv").read_text()
    assert "trial0" in table and "trial1" in table and "trial2" not in table
    assert (out / RECORD_FILE).read_bytes() == record
