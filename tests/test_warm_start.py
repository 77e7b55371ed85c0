"""Warm starts (searcher.warm_start): which earlier trials the sampler is told, which configurations
are tried first, and the one-line refusals of bad folders. The end-to-end search is at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import launch
from tests.specs import tiny_mae_spec, write_spec
from trainables.outputs import SPEC_FILE
from trainables.prepare.preflight import resolved_yaml
from trainables.results.record import FAILED, FINISHED, STOPPED, SearchRecord
from trainables.spec.loading import load_spec
from trainables.spec.schema import SpecError

LR, SIZE = "training.lr", "model.args.size"
METRIC = tiny_mae_spec()["metric"]  # val_mse, min


def _raw(experiment: str, warm_start: list[str]) -> dict:
    """A tiny spec searching the learning rate and the size; ASHA's rungs at epochs 1 and 2."""
    raw = tiny_mae_spec(experiment)
    raw["search"] = {LR: {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2},
                     SIZE: {"type": "choice", "values": ["tiny", "small"]}}
    raw["searcher"] = {"type": "optuna", "seed": 0, "startup_trials": 2, "warm_start": warm_start}
    raw["budget"]["trials"] = 6
    return raw


def _earlier_search(folder: Path, trials: list[tuple[str, dict, list[float], str | None]],
                    metric: str = METRIC, mode: str = "min", split_seed: int | None = None) -> Path:
    """An earlier search's folder: its resolved spec and a record written by the record's own
    writer. Each trial: id, config, its values by epoch, and how it ended (None: not ended).
    With ``split_seed``, the earlier search ran on another split of the data."""
    folder.mkdir()
    raw = {**_raw("earlier", []), "metric": metric, "mode": mode}
    if split_seed is not None:
        raw["data"]["split_seed"] = split_seed
    (folder / SPEC_FILE).write_text(resolved_yaml(load_spec(str(write_spec(folder.parent, raw, "earlier.yaml")))[0]))
    record = SearchRecord(folder, load_spec(str(folder.parent / "earlier.yaml"))[0].objective).open_for_writing()
    for trial_id, config, values, status in trials:
        record.add_trial(trial_id, config)
        for epoch, value in enumerate(values, 1):
            record.add_epoch(trial_id, epoch, {metric: value, "epoch": epoch}, None)
        if status is not None:
            record.end_trial(trial_id, status, "scheduler" if status == STOPPED else "budget",
                             rung=1 if status == STOPPED else None)
    record.close("finished")
    return folder


# The earlier trials, against the new space (lr in [1e-4, 1e-2], size tiny or small).
EARLIER = [
    ("a", {LR: 1e-3, SIZE: "tiny", "training.weight_decay": 0.01}, [0.9, 0.5, 0.4], FINISHED),  # a path not searched now
    ("b", {LR: 5e-2, SIZE: "tiny"}, [0.3, 0.2, 0.1], FINISHED),  # the best, but its lr is outside the new range
    ("c", {LR: 2e-3, SIZE: "base"}, [0.3], FINISHED),  # a size the new space does not choose
    ("d", {SIZE: "small"}, [0.3], FINISHED),  # lacks a searched path
    ("e", {LR: 3e-3, SIZE: "small"}, [0.8], STOPPED),  # stopped at rung 1: told as pruned there
    ("f", {LR: 4e-3, SIZE: "small"}, [], FAILED),
    ("g", {LR: 5e-3, SIZE: "tiny"}, [0.7], None),  # interrupted: nothing final to tell
    ("h", {LR: 6e-3, SIZE: "small"}, [0.6, 0.45, 0.42], FINISHED),
    ("i", {LR: 7e-3, SIZE: "tiny"}, [0.95, 0.9, 0.85], FINISHED),
    ("j", {LR: 8e-3, SIZE: "small"}, [0.99, 0.98, 0.97], FINISHED),  # finished, but not among the best three
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_trials_the_new_space_contains_are_told_and_the_others_counted(tmp_path: Path) -> None:
    from trainables.search.warm_start import read_warm_starts

    earlier = _earlier_search(tmp_path / "earlier", EARLIER)
    before = _snapshot(earlier)
    spec, _ = load_spec(str(write_spec(tmp_path, _raw("warm", [str(earlier)]))))
    [start] = read_warm_starts(spec)
    assert start.entry() == {"folder": str(earlier), "used": 5, "skipped": 5, "outside_space": 3, "tried_first": 3,
                             "rung_entries": 9}  # every trial with a value (f has none), in the space or not
    told = [(o.params, o.complete, o.value, o.rung_values) for o in start.observations]
    assert told == [
        ({LR: 1e-3, SIZE: "tiny"}, True, 0.4, {0: 0.9, 1: 0.5}),
        ({LR: 3e-3, SIZE: "small"}, False, 0.8, {0: 0.8}),
        ({LR: 6e-3, SIZE: "small"}, True, 0.42, {0: 0.6, 1: 0.45}),
        ({LR: 7e-3, SIZE: "tiny"}, True, 0.85, {0: 0.95, 1: 0.9}),
        ({LR: 8e-3, SIZE: "small"}, True, 0.97, {0: 0.99, 1: 0.98}),
    ]
    # The best finished ones within the space, best first, with the new space's paths only.
    assert start.best == [{LR: 1e-3, SIZE: "tiny"}, {LR: 6e-3, SIZE: "small"}, {LR: 7e-3, SIZE: "tiny"}]
    assert _snapshot(earlier) == before  # read only


def test_a_wider_space_takes_what_a_narrower_one_skipped(tmp_path: Path) -> None:
    from trainables.search.warm_start import read_warm_starts

    earlier = _earlier_search(tmp_path / "earlier", EARLIER)
    raw = _raw("wider", [str(earlier)])
    raw["search"][LR]["high"] = 0.1
    raw["search"][SIZE]["values"] = ["tiny", "small", "base"]
    [start] = read_warm_starts(load_spec(str(write_spec(tmp_path, raw)))[0])
    assert (start.used, start.outside) == (7, 1)  # b and c now inside; d still lacks the lr
    assert start.best == [{LR: 5e-2, SIZE: "tiny"}, {LR: 2e-3, SIZE: "base"}, {LR: 1e-3, SIZE: "tiny"}]


def test_each_folders_best_are_tried_first_once_in_the_specs_order(tmp_path: Path) -> None:
    from trainables.search.warm_start import first_trials, read_warm_starts

    one = _earlier_search(tmp_path / "one", EARLIER)
    two = _earlier_search(tmp_path / "two", [
        ("x", {LR: 6e-3, SIZE: "small"}, [0.1], FINISHED),  # tried first already, for folder one
        ("y", {LR: 2e-4, SIZE: "tiny"}, [0.3], FINISHED),
    ])
    spec, _ = load_spec(str(write_spec(tmp_path, _raw("warm", [str(one), str(two)]))))
    starts = read_warm_starts(spec)
    assert [s.entry()["tried_first"] for s in starts] == [3, 1]
    assert first_trials(starts) == [{LR: 1e-3, SIZE: "tiny"}, {LR: 6e-3, SIZE: "small"}, {LR: 7e-3, SIZE: "tiny"},
                                    {LR: 2e-4, SIZE: "tiny"}]
    assert first_trials(read_warm_starts(spec)) == first_trials(starts)  # decided by the folders alone


def _issue(spec, out: Path, trial_ids: list[str]) -> list[dict]:
    """New trials as the searcher issues them to Tune, in one launch (no Ray started)."""
    from trainables.search.schedulers import build_scheduler
    from trainables.search.searcher import StudySearcher
    from trainables.search.warm_start import read_warm_starts, rung_entries

    record = SearchRecord(out, spec.objective)
    starts = read_warm_starts(spec)
    policy = build_scheduler(spec, record, rung_entries(starts)).policy
    record.open_for_writing()
    searcher = StudySearcher(spec, out, record, policy, warm_starts=starts)
    configs = [searcher.suggest(trial_id) for trial_id in trial_ids]
    searcher.projection.flush()
    record.close("interrupted")
    return configs


@pytest.mark.parametrize("other_data", [False, True])
def test_an_earlier_search_of_the_same_problem_fills_the_rungs_so_a_good_trial_goes_on_at_once(
        tmp_path: Path, other_data: bool) -> None:
    """Promotion pauses the first arrival at an empty rung. Warm-started from the same problem,
    the rung already holds the earlier trials' values: a trial better than them goes on without
    a pause (the earlier best, tried first, no longer waits at each rung for new entries).
    Values measured on other data are not comparable: there the rungs start empty."""
    from trainables.search.schedulers import CONTINUE, PAUSE, build_scheduler
    from trainables.search.warm_start import read_warm_starts, rung_entries

    earlier = _earlier_search(tmp_path / "earlier", EARLIER, split_seed=7 if other_data else None)
    raw = _raw("warm", [str(earlier)])
    raw["scheduler"] = {"type": "promotion", "time_attr": "training_iteration", "grace_period": 1,
                        "reduction_factor": 2}  # rungs at epochs 1 and 2
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    entries = rung_entries(read_warm_starts(spec))
    assert len(entries) == (0 if other_data else 9)
    record = SearchRecord(tmp_path / "new", spec.objective)
    warm = build_scheduler(spec, record, entries).policy
    cold = build_scheduler(spec, record).policy
    assert cold.on_result("new", 1, 0.25) == PAUSE  # alone at its rung
    assert warm.on_result("new", 1, 0.25) == (PAUSE if other_data else CONTINUE)  # best of 10 at epoch 1
    if not other_data:
        assert warm.on_result("worse", 1, 0.65) == PAUSE  # 6th of 11: outside the top floor(11 / 2)
        assert warm.candidates(new_trials_left=True) == []  # and no earlier trial ever waits there
        assert set(warm.paused()) == {"worse"}


def test_the_best_come_first_and_a_continued_search_issues_the_same_trials(tmp_path: Path) -> None:
    from trainables.search.warm_start import first_trials, read_warm_starts

    earlier = _earlier_search(tmp_path / "earlier", EARLIER)
    spec, _ = load_spec(str(write_spec(tmp_path, _raw("warm", [str(earlier)]))))
    ids = [f"t{n}" for n in range(6)]
    whole = _issue(spec, tmp_path / "whole", ids)
    assert whole[:3] == first_trials(read_warm_starts(spec))
    # Then the start-up design counts from after them: each size once before any repeats.
    assert {whole[3][SIZE], whole[4][SIZE]} == {"tiny", "small"}
    assert all(1e-4 <= c[LR] <= 1e-2 for c in whole[3:]) and len({c[LR] for c in whole}) == 6
    continued = _issue(spec, tmp_path / "continued", ids[:2]) + _issue(spec, tmp_path / "continued", ids[2:])
    assert continued == whole
    assert [t.config for t in SearchRecord(tmp_path / "continued", spec.objective).trials.values()] == whole


def _other_search(tmp_path: Path, name: str, **changes) -> Path:
    return _earlier_search(tmp_path / name, EARLIER[:1], **changes)


BAD = {
    "missing": (lambda tmp: tmp / "nowhere", "no such folder: {folder}"),
    "not a search": (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",
                     "{folder} is not the output folder of a search (no record.jsonl in it)"),
    "another metric": (lambda tmp: _other_search(tmp, "loss", metric="val_loss"),
                       "the search in {folder} ranks trials by val_loss (min), this spec by val_mse (min); "
                       "warm start from a search with the same metric and mode"),
    "another mode": (lambda tmp: _other_search(tmp, "max", mode="max"),
                     "the search in {folder} ranks trials by val_mse (max), this spec by val_mse (min); "
                     "warm start from a search with the same metric and mode"),
    "its own folder": (lambda tmp: _other_search(tmp, "out"),
                       "{folder} is this search's own output folder; name an earlier search's "
                       "(or choose another folder with --out)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_warm_start_folder_is_one_line_and_exit_2(case: str, tmp_path: Path, capsys) -> None:
    make, problem = BAD[case]
    folder = make(tmp_path)
    before = _snapshot(folder) if folder.exists() else None
    raw = _raw("warm", ["x", str(folder)])  # the second entry: the key names its index
    raw["searcher"]["warm_start"][0] = str(_other_search(tmp_path, "fine"))
    spec_file = write_spec(tmp_path, raw, "warm.yaml")
    out = tmp_path / "out"
    assert launch.main(["--space", str(spec_file), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "warm.yaml: " in err, err
    assert err.rstrip("\n").endswith(f": searcher.warm_start.1: {problem.format(folder=folder)}"), err
    assert (_snapshot(folder) if folder.exists() else None) == before  # nothing lost or written there
    assert case == "its own folder" or not out.exists()


def test_warm_start_needs_the_tpe_searcher(tmp_path: Path) -> None:
    raw = _raw("warm", [str(_other_search(tmp_path, "fine"))])
    raw["searcher"]["type"] = "random"
    with pytest.raises(SpecError, match=r"searcher\.warm_start: needs searcher\.type optuna"):
        load_spec(str(write_spec(tmp_path, raw)))


def test_a_relative_folder_is_saved_absolute(tmp_path: Path, monkeypatch) -> None:
    fine = _other_search(tmp_path, "fine")
    monkeypatch.chdir(tmp_path)
    raw = _raw("warm", "fine")  # one folder may be given without a list
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    assert spec.searcher.warm_start == [str(fine)]
    assert yaml.safe_load(resolved_yaml(spec))["searcher"]["warm_start"] == [str(fine)]


@pytest.mark.slow
def test_a_warm_started_search_begins_with_the_earlier_best(ray_cluster, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from trainables.search.run import SearchOptions, launch_search
    from trainables.tracking.runs import WARM_START_TAG

    raw = _raw("earlier", [])
    raw["searcher"]["seed"] = 1
    raw["budget"]["trials"] = 4
    raw["scheduler"] = {"type": "none"}  # every earlier trial finishes: the best are known
    spec, _ = load_spec(str(write_spec(tmp_path, raw, "earlier.yaml")))
    earlier = tmp_path / "earlier"
    launch_search(spec, SearchOptions(out_dir=earlier, verbose=0), echo=lambda line: None)
    before = _snapshot(earlier)
    done = SearchRecord(earlier, spec.objective)
    finished = [t for t in done.ranked() if t.status == FINISHED and t.best_value(spec.objective) is not None]
    expected = [{path: t.config[path] for path in spec.search} for t in finished[:3]]
    told = [t for t in done.trials.values() if t.status in (FINISHED, STOPPED)]
    assert expected and told

    raw = _raw("warm", [str(earlier)])
    raw["budget"]["trials"] = len(expected)  # the earlier best, tried first, are what is checked
    spec_file = write_spec(tmp_path, raw, "warm.yaml")
    spec, _ = load_spec(str(spec_file))
    out = tmp_path / "warm"
    printed: list[str] = []
    summary = launch_search(spec, SearchOptions(out_dir=out, verbose=0), where=spec_file.name, echo=printed.append)

    issued = sorted(SearchRecord(out, spec.objective).trials.values(), key=lambda t: t.number)
    assert [t.config for t in issued[:len(expected)]] == expected
    measured = sum(1 for t in done.trials.values() if t.epochs)  # the same problem: all fill the rungs
    entry = {"folder": str(earlier), "used": len(told), "skipped": 4 - len(told), "outside_space": 0,
             "tried_first": len(expected), "rung_entries": measured}
    assert summary["warm_start"] == [entry]
    assert json.loads((out / "summary.json").read_text())["warm_start"] == [entry]
    line = (f"Warm start from {earlier}: {len(told)} trials used, {4 - len(told)} skipped (0 outside this search "
            f"space, {4 - len(told)} failed, unfinished or without a value at its rungs); its best {len(expected)} "
            f"configuration(s) are tried first; {measured} of its trials fill the rungs (the same problem).")
    assert line in "\n".join(printed).splitlines()
    parent = MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(summary["mlflow"]["parent_run_id"])
    assert json.loads(parent.data.tags[WARM_START_TAG]) == [entry]
    assert str(earlier) in parent.data.params["searcher.warm_start"]
    assert _snapshot(earlier) == before  # the earlier search, byte for byte


def test_a_folder_named_twice_is_one_line(tmp_path: Path) -> None:
    fine = str(_other_search(tmp_path, "fine"))
    spec_file = write_spec(tmp_path, _raw("warm", [fine, fine]))
    with pytest.raises(SpecError) as caught:
        load_spec(str(spec_file))
    assert str(caught.value) == f"{spec_file}: searcher.warm_start.1: {fine} is named twice"
