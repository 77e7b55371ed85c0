"""No resource leak: 40 trials with ASHA stopping most of them run through 2 CPUs without a
hang and without the wait between trials growing."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.specs import recorded_epochs, tiny_mae_spec, write_spec
from trainables import load_spec
from trainables.search.run import SearchOptions, launch_search

pytestmark = pytest.mark.slow

TRIALS = 40


def test_forty_trials_with_asha_do_not_leak(ray_cluster, tmp_path: Path) -> None:
    raw = tiny_mae_spec("many")
    raw["search"]["model.args.size"] = {"type": "choice", "values": ["tiny"]}
    raw["training"].update(epochs=4, max_steps_per_epoch=1)
    raw["scheduler"] = {"type": "asha", "grace_period": 1, "reduction_factor": 3}
    raw["budget"] = {"trials": TRIALS, "max_concurrent": 2}
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    out = tmp_path / "out"
    summary = launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None)

    trials = summary["trials"]
    assert len(trials) == TRIALS
    assert all(t["status"] in ("finished", "stopped early") for t in trials)
    assert sum(t["status"] == "stopped early" for t in trials) >= TRIALS // 2

    # Each trial's first report, in start order: the gaps between them must not grow (a
    # trial holding its CPU after ASHA stopped it would make later ones wait longer).
    firsts = []
    recorded = recorded_epochs(out)
    for trial in trials:
        firsts.append(recorded[trial["trial_id"]][0]["time"])
    gaps = [b - a for a, b in zip(sorted(firsts), sorted(firsts)[1:])]
    early, late = statistics.median(gaps[:10]), statistics.median(gaps[-10:])
    assert late <= 3 * early + 2, (early, late, gaps)
