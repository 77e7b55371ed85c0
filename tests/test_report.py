"""The search report and the per-trial figures, on one tiny real search (local Ray, Optuna TPE +
ASHA, a real MLflow store), and `launch.py report` on finished, running and wrong folders."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

import launch
from tests.specs import recorded_epochs, tiny_mae_spec, write_spec
from trainables import load_spec
from trainables.results.plots import best_so_far, learning_curves
from trainables.prepare.folder_lock import FolderLock
from trainables.objective import Objective
from trainables.outputs import RECORD_FILE, REPORT_DIR
from trainables.results.record import SearchRecord
from trainables.results.record import TRIAL_SECONDS
from trainables.results.report import CSV_FILE, HTML_FILE, IMPORTANCES_FILE, MIN_BUDGET_TRIALS, common_budget
from trainables.results.search_data import asha_rungs, gather
from trainables.search.run import SearchOptions, launch_search
from trainables.search.searcher import build_scheduler
from trainables.tracking.runs import TRIAL_ID_TAG

CHARTS = ("learning_curves", "best_so_far", "parallel_coordinates", "param_importances")
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def searched(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("report")
    raw = tiny_mae_spec("report")
    raw["training"]["figures_every"] = 1  # figures at every epoch, so every trial's run gets some
    spec, _ = load_spec(str(write_spec(folder, raw)))
    out = folder / "out"
    summary = launch_search(spec, SearchOptions(out_dir=out, verbose=0), echo=lambda line: None)
    return summary, out


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


@pytest.mark.slow
def test_report_charts_table_and_html_reflect_the_trials(searched) -> None:
    summary, out = searched
    report = out / REPORT_DIR
    assert all(_is_png(report / f"{name}.png") for name in CHARTS)
    with (report / CSV_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["trial_id"] for r in rows) == sorted(t["trial_id"] for t in summary["trials"])
    assert rows[0]["trial_id"] == summary["best"]["trial_id"]  # best first
    assert {r["status"] for r in rows} == {t["status"] for t in summary["trials"]}
    search = gather(out)
    curves = [line for line in learning_curves(search).axes[0].get_lines() if (line.get_gid() or "").startswith("trial:")]
    assert len(curves) == len(summary["trials"])
    for line in curves:  # a stopped trial's curve ends where it stopped
        trial = next(t for t in summary["trials"] if line.get_gid() == f"trial:{t['trial_id']}")
        assert len(line.get_xdata()) == trial["epochs"]
    page = (report / HTML_FILE).read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == len(CHARTS) + 3  # the charts and the best trial's three MAE figures
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert page.count("<tr") == len(summary["trials"]) + 1


@pytest.mark.slow
def test_importances_cover_every_searched_hyperparameter_at_the_highest_common_rung(searched) -> None:
    _, out = searched
    search = gather(out)
    epochs = recorded_epochs(out)
    reached = [rows[-1]["epoch"] for rows in epochs.values() if rows]
    # The highest rung that at least half of the trials with a value (and at least 3) reached.
    need = max(MIN_BUDGET_TRIALS, -(-len(reached) // 2))
    expected = max(r for r in search.rungs if sum(last >= r for last in reached) >= need)
    budget = common_budget(search)
    assert (budget.key, budget.at, budget.trials) == ("epoch", expected, sum(last >= expected for last in reached))
    with (out / REPORT_DIR / IMPORTANCES_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["hyperparameter"] for r in rows} == set(search.spec.search)
    assert {r["budget"] for r in rows} == {f"epoch {expected:g}"}
    assert all(float(r["importance"]) >= 0 for r in rows) and abs(sum(float(r["importance"]) for r in rows) - 1) < 1e-6


@pytest.mark.slow
def test_curves_and_table_show_the_trivial_baseline(searched) -> None:
    _, out = searched
    search = gather(out)
    baselines = [row["val_baseline_mse"] for rows in recorded_epochs(out).values() for row in rows]
    for chart in (learning_curves, best_so_far):
        line = next(line for line in chart(search).axes[0].get_lines() if line.get_gid() == "baseline")
        assert line.get_ydata()[0] == pytest.approx(float(np.median(baselines)))
    with (out / REPORT_DIR / CSV_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        trial = recorded_epochs(out)[row["trial_id"]]
        at_best = next(r for r in trial if str(r["epoch"]) == row["best_epoch"])
        assert float(row["val_baseline_mse_at_best_epoch"]) == pytest.approx(at_best["val_baseline_mse"])


def test_a_budget_in_training_seconds_compares_each_trial_where_it_crossed_the_rung() -> None:
    # Rows as the record holds them: ASHA by time_total_s counts the loop's training seconds.
    def trial(*seconds_and_values):
        return SimpleNamespace(rows=[{"epoch": i + 1, TRIAL_SECONDS: t, "val_mse": v}
                                     for i, (t, v) in enumerate(seconds_and_values)])

    trials = [trial((30, 0.9), (70, 0.8), (190, 0.5)), trial((50, 0.95), (65, 0.7)),
              trial((100, 1.0)), trial((20, 1.1))]
    search = SimpleNamespace(trials=trials, rungs=[60, 180, 540], time_attr=TRIAL_SECONDS)
    budget = common_budget(search)
    assert (budget.key, budget.at, budget.trials, budget.name) == (TRIAL_SECONDS, 60, 3, "60 s of training")
    assert [budget.value(t.rows, "val_mse") for t in trials] == [0.8, 0.7, 1.0, None]
    # Too few trials at the first rung (60 s: 2 of 4): the highest epoch enough of them reached.
    few = SimpleNamespace(trials=[*trials[:2], trial((40, 1.0), (55, 0.9)), trial((45, 1.2))],
                          rungs=[60, 180, 540], time_attr=TRIAL_SECONDS)
    budget = common_budget(few)
    assert (budget.key, budget.at, budget.trials, budget.name) == ("epoch", 2, 3, "epoch 2")
    assert [budget.value(t.rows, "val_mse") for t in few.trials] == [0.8, 0.7, 0.9, None]


@pytest.mark.slow
def test_figures_reach_every_trials_run_and_the_parent_run(searched) -> None:
    summary, out = searched
    info = summary["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    children = client.search_runs([info["experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    epochs = {t["trial_id"]: t["epochs"] for t in summary["trials"]}
    for run in children:
        folders = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
        expected = [f"figures/epoch_{e:03d}" for e in range(1, epochs[run.data.tags[TRIAL_ID_TAG]] + 1)]
        assert folders == expected
        files = {a.path.rsplit("/", 1)[1] for a in client.list_artifacts(run.info.run_id, expected[-1])}
        assert files == {"mae_reconstruction.png", "mae_band_error.png", "mae_spectra.png"}
    parent = info["parent_run_id"]
    assert {a.path for a in client.list_artifacts(parent, "report")} >= {
        f"report/{name}.png" for name in CHARTS} | {f"report/{CSV_FILE}", f"report/{HTML_FILE}"}
    assert "best_checkpoint/figures/mae_reconstruction.png" in {
        a.path for a in client.list_artifacts(parent, "best_checkpoint/figures")}


@pytest.mark.slow
def test_report_of_a_running_search_uses_what_the_trials_wrote_so_far(searched, tmp_path: Path) -> None:
    _, out = searched
    running = tmp_path / "running"  # a search caught mid-way: one epoch each, a record line half written
    running.mkdir()
    shutil.copy(out / "spec.yaml", running / "spec.yaml")
    shutil.copy(out / "optuna.db", running / "optuna.db")
    kept, seen = [], set()
    for line in (out / RECORD_FILE).read_text().splitlines():
        event = json.loads(line)
        if event["e"] in ("session", "trial") or (event["e"] == "epoch" and event["id"] not in seen):
            kept.append(line)
            if event["e"] == "epoch":
                seen.add(event["id"])
    (running / RECORD_FILE).write_text("\n".join(kept) + "\n" + kept[-1][: len(kept[-1]) // 2])
    lock = FolderLock(running).acquire()  # its launch is still running
    try:
        assert launch.main(["report", str(running)]) == 0
        search = gather(running)
    finally:
        lock.release()
    assert all(len(t.rows) == 1 for t in search.trials)
    assert {t.status for t in search.trials} == {"running"}
    assert {t.status for t in gather(running).trials} == {"interrupted"}  # no launch holds it any more
    assert all(_is_png(running / REPORT_DIR / f"{name}.png") for name in CHARTS)


@pytest.mark.slow
def test_launch_report_redraws_and_refuses_a_folder_that_is_no_search(searched, tmp_path: Path, capsys) -> None:
    _, out = searched
    (out / REPORT_DIR / CSV_FILE).unlink()
    assert launch.main(["report", str(out)]) == 0
    assert (out / REPORT_DIR / CSV_FILE).is_file()
    assert "Logged to the search's MLflow parent run" in capsys.readouterr().out
    assert launch.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not the output folder of a search" in err[0]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)")
def test_report_renders_in_a_headless_browser(searched, tmp_path: Path) -> None:
    _, out = searched
    shot = tmp_path / "report.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,3000",
                    (out / REPORT_DIR / HTML_FILE).as_uri()], check=True, timeout=120, capture_output=True)
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 100  # charts and images, not a blank page


def test_asha_rungs_are_the_milestones_ray_uses(tmp_path: Path) -> None:
    for grace, factor, epochs in [(1, 2, 3), (1, 3, 9), (2, 2, 20), (1, 4, 100)]:
        raw = tiny_mae_spec("rungs")
        raw["training"]["epochs"] = epochs
        raw["scheduler"].update(grace_period=grace, reduction_factor=factor)
        spec, _ = load_spec(str(write_spec(tmp_path, raw)))
        scheduler = build_scheduler(spec, SearchRecord(tmp_path, Objective(spec.metric, spec.mode)))
        ray_rungs = sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)
        assert asha_rungs(spec) == ray_rungs
