"""The output folder: never written over, resumed only with the same spec, unwritable named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.specs import tiny_mae_spec, write_spec
from trainables.outputs import RECORD_FILE, SPEC_FILE
from trainables.prepare.preflight import prepare_output
from trainables.spec.schema import SpecError
from trainables.spec.loading import load_spec


@pytest.fixture
def spec(tmp_path: Path):
    return load_spec(str(write_spec(tmp_path, tiny_mae_spec())))[0]


def test_new_folder_gets_the_resolved_spec(spec, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert prepare_output(spec, out, resume=False) is False
    assert "experiment: tiny" in (out / SPEC_FILE).read_text()


def test_interrupted_search_is_continued_and_kept(spec, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_output(spec, out, resume=False)
    started = '{"e": "session", "t": 1.0}\n'  # a launch began it and never ended it (Ctrl-C, kill -9)
    (out / RECORD_FILE).write_text(started)
    assert prepare_output(spec, out, resume=False) is True
    assert (out / RECORD_FILE).read_text() == started


def test_finished_search_is_reopened_only_with_resume(spec, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_output(spec, out, resume=False)
    finished = '{"e": "session", "t": 1.0}\n{"e": "session_end", "how": "finished", "t": 2.0}\n'
    (out / RECORD_FILE).write_text(finished)
    with pytest.raises(SpecError, match="holds a finished search .*pass --resume"):
        prepare_output(spec, out, resume=False)
    assert prepare_output(spec, out, resume=True) is True
    assert (out / RECORD_FILE).read_text() == finished


def test_resume_with_a_different_spec_is_refused(spec, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_output(spec, out, resume=False)
    (out / RECORD_FILE).write_text('{"e": "session", "t": 1.0}\n')
    other = spec.model_copy(update={"description": "changed"})
    for resume in (False, True):
        with pytest.raises(SpecError, match="holds a search with a different spec"):
            prepare_output(other, out, resume=resume)
    assert "changed" not in (out / SPEC_FILE).read_text()


def test_folder_of_a_search_that_never_started_is_taken_over(spec, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_output(spec, out, resume=False)
    other = spec.model_copy(update={"description": "second try"})
    assert prepare_output(other, out, resume=False) is False
    assert "second try" in (out / SPEC_FILE).read_text()


def test_unwritable_folder_is_one_line(spec, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses even root new folders
        locked = Path("/sys/hpsearch-test")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
    with pytest.raises(SpecError, match=f"{locked}/out: output folder is not writable"):
        prepare_output(spec, locked / "out", resume=False)


def test_output_under_a_file_is_one_line(spec, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SpecError, match="a-file/out: output folder is not writable"):
        prepare_output(spec, blocker / "out", resume=False)
