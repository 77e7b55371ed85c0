"""Every YAML shipped in search_spaces/ passes the dry run and runs a tiny real search."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.specs import SEARCH_SPACES, write_spec
from trainables import load_model, load_spec
from trainables.outputs import MODEL_EVALUATION_FILE
from trainables.prepare.preflight import dry_run_report
from trainables.search.run import SearchOptions, launch_search
from trainables.outputs import EXPERIMENT_SUMMARY_FILE

SPACES = sorted(path.name for path in SEARCH_SPACES.glob("*.yaml"))
# Shrink any search to seconds; the data settings stay as shipped. Two trials of a search (so
# the searcher and scheduler see more than one); a matrix's trials are per experiment: one each.
TINY = ["budget.max_concurrent=2", "training.epochs=2", "training.max_steps_per_epoch=2",
        "budget.time_limit_minutes=null"]
RUNGS = ["scheduler.grace_period=1"]  # for a scheduler with rungs (not `none`)
# The MAE's large and huge sizes take seconds a step and GiB of memory on a CPU.
SMALL_SIZES_ONLY = {"mae_sizes.yaml": ["search.model.args.size.values=[tiny, small]"]}


@pytest.mark.parametrize("name", SPACES)
def test_dry_run(name: str, tmp_path: Path) -> None:
    spec, path = load_spec(name)
    report = dry_run_report(spec, tmp_path)
    assert f"experiment: {spec.experiment}" in report and "Spec and data are valid" in report


@pytest.mark.slow
@pytest.mark.parametrize("name", SPACES)
def test_tiny_real_search(ray_cluster, name: str, tmp_path: Path) -> None:
    shipped = load_spec(name)[0]
    rungs = RUNGS if shipped.scheduler.type != "none" else []
    trials = 1 if shipped.experiments else 2
    spec, path = load_spec(name, [f"budget.trials={trials}", *TINY, *rungs, *SMALL_SIZES_ONLY.get(name, [])])
    out = tmp_path / "out"
    summary = launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None)
    assert len(summary["trials"]) == trials * max(1, len(spec.experiments))
    if spec.experiments:  # a matrix: every experiment ran, and the comparison table lists each
        with (out / EXPERIMENT_SUMMARY_FILE).open() as handle:
            rows = list(csv.DictReader(handle))
        assert sorted({row["experiment"] for row in rows}) == sorted(spec.experiments)
        assert all(row["status"] in ("finished", "stopped early") for row in rows)
    assert summary["best"] is not None and (out / "best" / "checkpoint.pt").exists()
    # Models with their own evaluation (classifiers: per-class scores, confusion matrix) leave it with the best.
    has_evaluation = hasattr(load_model(out / "best"), "evaluation")
    assert (out / "best" / MODEL_EVALUATION_FILE).exists() == has_evaluation
    if has_evaluation:
        assert json.loads((out / "best" / MODEL_EVALUATION_FILE).read_text())


@pytest.mark.slow
def test_grid_searcher_runs_every_combination_once(ray_cluster, tmp_path: Path) -> None:
    raw = yaml.safe_load((SEARCH_SPACES / "digits.yaml").read_text())
    raw["search"] = {"model.args.width": {"type": "choice", "values": [8, 16]},  # 2 x 2 combinations
                     "training.batch_size": {"type": "choice", "values": [16, 32]}}
    raw["searcher"] = {"type": "grid"}
    raw["scheduler"] = {"type": "none"}
    raw["budget"] = {"trials": 1, "max_concurrent": 2}
    raw["training"].update(epochs=1, max_steps_per_epoch=2)
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    out = tmp_path / "out"
    summary = launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None)
    combinations = sorted((t["config"]["model.args.width"], t["config"]["training.batch_size"])
                          for t in summary["trials"])
    assert combinations == [(8, 16), (8, 32), (16, 16), (16, 32)]
    assert all(t["status"] == "finished" for t in summary["trials"])
