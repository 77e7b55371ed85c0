"""The search report and the per-trial figures, on one tiny real search (local Ray, Optuna TPE +
ASHA, a real MLflow store), and `launch.py report` on finished, running and wrong folders."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.processes import launch_py, run_to_end
from tests.specs import read_record, recorded_epochs, tiny_mae_spec, write_spec
from trainables import load_spec
from trainables.results.plots import best_so_far, learning_curves
from trainables.folder_lock import FolderLock
from trainables.objective import Objective
from trainables.outputs import RECORD_FILE, REPORT_DIR
from trainables.results.record import BY_SCHEDULER, FAILED, FINISHED, PAUSED, STOPPED, SearchRecord
from trainables.results.record import TRIAL_SECONDS
from trainables.results.report import (
    CONFOUNDED_RHO,
    CSV_FILE,
    HTML_FILE,
    IMPORTANCES_FILE,
    MIN_BUDGET_TRIALS,
    MIN_IMPORTANCE_TRIALS,
    budget_study,
    choice_at_budgets,
    confounded_pairs,
    common_budget,
    equal_training_budgets,
    importance_budget,
    trial_table,
    write_report,
)
from trainables.results.search_data import gather
from trainables.spec.distributions import Choice
from trainables.search.run import SearchOptions, launch_search
from trainables.tracking.runs import TRIAL_ID_TAG

# The tiny search's charts: its one choice parameter (size) at equal training; no importances,
# since its 4 trials are fewer than MIN_IMPORTANCE_TRIALS.
CHARTS = ("learning_curves", "best_so_far", "choice_model.args.size", "parallel_coordinates")
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
    assert "search finished." in page and "provisional" not in page  # the search's own last report


@pytest.mark.slow
def test_the_common_rung_is_the_highest_most_trials_reached_and_four_trials_get_no_importances(searched) -> None:
    _, out = searched
    search = gather(out)
    epochs = recorded_epochs(out)
    reached = [rows[-1]["epoch"] for rows in epochs.values() if rows]
    # The highest rung that at least half of the trials with a value (and at least 3) reached.
    need = max(MIN_BUDGET_TRIALS, -(-len(reached) // 2))
    expected = max(r for r in search.rungs if sum(last >= r for last in reached) >= need)
    budget = common_budget(search)
    assert (budget.key, budget.at, budget.trials) == ("epoch", expected, sum(last >= expected for last in reached))
    # 4 trials: fewer than MIN_IMPORTANCE_TRIALS share any budget, so no importances, and the page says why.
    with (out / REPORT_DIR / IMPORTANCES_FILE).open() as handle:
        assert list(csv.DictReader(handle)) == []
    assert not (out / REPORT_DIR / "param_importances.png").exists()
    assert f"only {len(reached)} trials have a value" in (out / REPORT_DIR / HTML_FILE).read_text()


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

    # The last trial's one epoch passed both 60 and 180 s: it was never measured at 60 s.
    trials = [trial((30, 0.9), (70, 0.8), (190, 0.5)), trial((50, 0.95), (65, 0.7)),
              trial((100, 1.0)), trial((20, 1.1)), trial((200, 0.6))]
    search = SimpleNamespace(trials=trials, rungs=[60, 180, 540], time_attr=TRIAL_SECONDS, metric="val_mse",
                             spec=SimpleNamespace(max_t=1620))
    budget = common_budget(search)
    assert (budget.key, budget.at, budget.trials, budget.name) == (TRIAL_SECONDS, 60, 3, "60 s of training")
    assert [budget.value(t.rows, "val_mse") for t in trials] == [0.8, 0.7, 1.0, None, None]
    # Too few trials at the first rung (60 s: 2 of 4): the highest epoch enough of them reached.
    few = SimpleNamespace(trials=[*trials[:2], trial((40, 1.0), (55, 0.9)), trial((45, 1.2))],
                          rungs=[60, 180, 540], time_attr=TRIAL_SECONDS, metric="val_mse",
                          spec=SimpleNamespace(max_t=1620))
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
    finished = read_record(out)
    record = SearchRecord(running, finished.objective).open_for_writing()
    for trial in sorted(finished.trials.values(), key=lambda t: t.number):
        record.add_trial(trial.trial_id, trial.config, trial.study_number)
        first = min(trial.epochs)
        metrics = {k: v for k, v in trial.epochs[first].items() if k != "time"}
        record.add_epoch(trial.trial_id, first, metrics, None)
    record.close_quietly()  # its launch is still running ...
    with (running / RECORD_FILE).open("a") as handle:  # ... and writing its next line
        handle.write('{"e": "epoch", "id": "' + trial.trial_id + '", "epoch": 2, "metr')
    lock = FolderLock(running).acquire()
    try:
        drawn = run_to_end(launch_py("report", str(running)))
        assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
        search = gather(running)
    finally:
        lock.release()
    assert all(len(t.rows) == 1 for t in search.trials)
    assert {t.status for t in search.trials} == {"running"}
    assert {t.status for t in gather(running).trials} == {"interrupted"}  # no launch holds it any more
    assert all(_is_png(running / REPORT_DIR / f"{name}.png") for name in CHARTS)


@pytest.mark.slow
def test_launch_report_redraws_and_refuses_a_folder_that_is_no_search(searched, tmp_path: Path) -> None:
    _, out = searched
    (out / REPORT_DIR / CSV_FILE).unlink()
    drawn = run_to_end(launch_py("report", str(out)))
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    assert (out / REPORT_DIR / CSV_FILE).is_file()
    assert "Logged to the search's MLflow parent run" in drawn.stdout
    assert drawn.stderr.strip() == "", drawn.stderr  # no library's chatter (Optuna logs every study it makes)
    refused = run_to_end(launch_py("report", str(tmp_path)))
    err = refused.stderr.strip().splitlines()
    assert refused.returncode == 2
    assert len(err) == 1 and err[0].startswith("error:") and "not the output folder of a search" in err[0]


@pytest.mark.slow
def test_a_copied_folder_reports_into_itself_and_never_into_the_folder_it_was_copied_from(
        searched, tmp_path: Path) -> None:
    _, out = searched
    copy = tmp_path / "copied"  # as a folder copied from a cluster's storage to a laptop
    shutil.copytree(out, copy)
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    drawn = run_to_end(launch_py("report", str(copy)))
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    assert (copy / REPORT_DIR / HTML_FILE).is_file()
    said = [line for line in drawn.stdout.splitlines() if "MLflow" in line]
    assert len(said) == 1 and said[0].startswith("Not logged to MLflow") and str(out) in said[0]
    synced = run_to_end(launch_py("sync", str(copy)))  # the copy's own store, not the original's
    assert synced.returncode == 0 and str(copy / "mlflow.db") in synced.stdout, synced.stdout + synced.stderr
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before


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


# ----- the report answers its search's question (issue 18, item 8), on records written without Ray -----

SIZES = ["tiny", "small", "base", "medium"]


def _seconds_spec(mode: str = "min") -> dict:
    """The tiny MAE spec judged by training seconds: rungs at 60 and 180 s, its end at 540 s."""
    raw = tiny_mae_spec("equal_training")
    raw["mode"] = mode
    raw["search"]["model.args.size"] = {"type": "choice", "values": SIZES}
    raw["scheduler"] = {"type": "asha", "time_attr": "time_total_s", "grace_period": 60, "reduction_factor": 3,
                        "max_t": 540}
    return raw


def _config(raw: dict, size: str, index: int) -> dict:
    """A configuration of every searched parameter: ``size``, the others spread over their ranges."""
    config = {}
    for path, dist in raw["search"].items():
        if dist["type"] == "choice":
            config[path] = size if path == "model.args.size" else dist["values"][index % len(dist["values"])]
        else:
            fraction = ((index * 0.618034) % 1.0 + 0.05) / 1.1
            config[path] = dist["low"] + (dist["high"] - dist["low"]) * fraction
    return config


def _write_search(folder: Path, raw: dict, trials: list[tuple[str, list[tuple[float, float]], str, float | None]]) -> Path:
    """An output folder as a search leaves it: spec.yaml and the record, written by the record's own
    writer. Each trial: (size, [(training seconds, val_mse) per epoch], how it ended, its rung)."""
    out = folder / "out"
    out.mkdir(parents=True)
    write_spec(out, raw)
    record = SearchRecord(out, Objective(raw["metric"], raw["mode"])).open_for_writing()
    for index, (size, rows, status, rung) in enumerate(trials):
        trial_id = f"trial_{index:02d}"
        record.add_trial(trial_id, _config(raw, size, index))
        for epoch, (seconds, value) in enumerate(rows, start=1):
            record.add_epoch(trial_id, epoch, {raw["metric"]: value, TRIAL_SECONDS: seconds}, None)
        if status == PAUSED:
            record.pause_trial(trial_id, rung)
        elif status == STOPPED:
            record.end_trial(trial_id, STOPPED, BY_SCHEDULER, rung)
        elif status in (FINISHED, FAILED):
            record.end_trial(trial_id, status, "budget" if status == FINISHED else "boom")
    record.close("finished")
    return out


# Rows that skip past the rungs: the value at a rung is that of the first epoch at or past it.
SIZE_TRIALS = [
    ("tiny", [(50, 0.9), (70, 0.8), (150, 0.6), (200, 0.5)], STOPPED, 180),
    ("tiny", [(40, 1.0), (65, 0.7)], STOPPED, 60),
    ("small", [(30, 0.95), (61, 0.85), (190, 0.4), (560, 0.3)], FINISHED, None),
    ("base", [(20, 1.1)], FAILED, None),  # sampled, but reached no rung
    # medium: never sampled
]


def test_each_choice_is_compared_at_each_rung_by_its_value_when_it_first_reached_it(tmp_path: Path) -> None:
    search = gather(_write_search(tmp_path, _seconds_spec("min"), SIZE_TRIALS))
    budgets = equal_training_budgets(search)
    assert [(b.key, b.at, b.trials) for b in budgets] == [(TRIAL_SECONDS, 60, 3), (TRIAL_SECONDS, 180, 2),
                                                           (TRIAL_SECONDS, 540, 1)]  # the rungs, then max_t
    table = choice_at_budgets(search, "model.args.size")
    assert table.values == SIZES and table.sampled == [2, 1, 1, 0]
    tiny, small, base, medium = range(4)
    assert table.points[tiny] == [[("trial_00", 0.8), ("trial_01", 0.7)], [("trial_00", 0.5)], []]
    assert table.points[small] == [[("trial_02", 0.85)], [("trial_02", 0.4)], [("trial_02", 0.3)]]
    assert table.best == [[0.7, 0.5, None], [0.85, 0.4, 0.3], [None] * 3, [None] * 3]  # min: the lowest
    assert [table.reached(i) for i in range(4)] == [True, True, False, False]
    # The same trials with mode max: each value's best is its highest value at the rung.
    search_max = gather(_write_search(tmp_path / "max", _seconds_spec("max"), SIZE_TRIALS))
    assert choice_at_budgets(search_max, "model.args.size").best[tiny] == [0.8, 0.5, None]


def test_a_trial_that_finished_its_epochs_before_max_t_counts_at_the_end(tmp_path: Path) -> None:
    """The flagship's best trial (tiny, its 320 epochs in 217 of max_t's 360 s) was on no
    budget of the choice chart, whose legend said no tiny trial reached the end. A finished
    trial counts at the end with its last value; one stopped early before max_t does not."""
    trials = [*SIZE_TRIALS, ("tiny", [(50, 0.9), (70, 0.6), (200, 0.45), (300, 0.35)], FINISHED, None)]
    search = gather(_write_search(tmp_path, _seconds_spec("min"), trials))
    assert [b.trials for b in equal_training_budgets(search)] == [4, 3, 2]
    table = choice_at_budgets(search, "model.args.size")
    assert table.points[0] == [[("trial_00", 0.8), ("trial_01", 0.7), ("trial_04", 0.6)],
                               [("trial_00", 0.5), ("trial_04", 0.45)], [("trial_04", 0.35)]]
    assert table.best[0] == [0.6, 0.45, 0.35]


def test_the_choice_chart_draws_the_table_and_names_values_that_reached_no_rung(tmp_path: Path) -> None:
    from trainables.results import plots

    search = gather(_write_search(tmp_path, _seconds_spec("min"), SIZE_TRIALS))
    table = choice_at_budgets(search, "model.args.size")
    ax = plots.choice_at_budgets(table, search.metric, search.mode, "training seconds").axes[0]
    best = {line.get_gid(): list(line.get_ydata()) for line in ax.get_lines()}
    assert best == {"best:0": [0.7, 0.5], "best:1": [0.85, 0.4, 0.3]}
    dots = {c.get_gid(): sorted(c.get_offsets()[:, 1]) for c in ax.collections}
    assert dots["point:0:0"] == [0.7, 0.8] and "point:2:0" not in dots
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["tiny: 2 trials, none reached 540", "small: 1 trial",
                      "base: not reached (1 trial, none reached 60)", "medium: not sampled"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["60\n3 trials", "180\n2 trials", "540\n1 trial"]


def test_a_search_without_rungs_compares_choices_at_fractions_of_its_epochs(tmp_path: Path) -> None:
    raw = _seconds_spec("min")
    raw["scheduler"] = {"type": "none"}
    raw["training"]["epochs"] = 4
    search = gather(_write_search(tmp_path, raw, SIZE_TRIALS))
    assert [(b.key, b.at, b.trials) for b in equal_training_budgets(search)] == [("epoch", 1, 4), ("epoch", 2, 3),
                                                                                ("epoch", 4, 2)]
    assert choice_at_budgets(search, "model.args.size").best[0] == [0.9, 0.7, 0.5]


def _many(count: int) -> list:
    """``count`` trials over two sizes, each past the first rung (60 s), every third to the end."""
    trials = []
    for n in range(count):
        rows = [(30, 1.0 - 0.01 * n), (70, 0.9 - 0.02 * n)]
        if n % 3 == 0:
            rows += [(200, 0.6 - 0.01 * n), (600, 0.5 - 0.01 * n)]
        trials.append((SIZES[n % 2], rows, FINISHED if n % 3 == 0 else STOPPED, None if n % 3 == 0 else 60))
    return trials


def test_importances_need_eight_trials_at_one_budget_and_the_report_says_why_not(tmp_path: Path) -> None:
    assert MIN_IMPORTANCE_TRIALS == 8
    few = _write_search(tmp_path / "few", _seconds_spec(), _many(MIN_IMPORTANCE_TRIALS - 1))
    assert importance_budget(gather(few))[0] is None
    report = write_report(few)
    with (report / IMPORTANCES_FILE).open() as handle:
        assert list(csv.DictReader(handle)) == []
    assert not (report / "param_importances.png").exists()
    assert _is_png(report / "choice_model.args.size.png")
    page = (report / HTML_FILE).read_text()
    assert ("No importances: they need at least 8 trials measured at one budget (with fewer, fANOVA ranks noise); "
            "only 7 trials have a value, 7 of them reached the first rung (60 s of training).") in page
    assert "alt='param_importances'" not in page and "alt='choice_model.args.size'" in page

    enough = _write_search(tmp_path / "enough", _seconds_spec(), _many(MIN_IMPORTANCE_TRIALS))
    search = gather(enough)
    budget, why = importance_budget(search)
    assert (budget.key, budget.at, budget.trials, why) == (TRIAL_SECONDS, 60, 8, "")  # 180 s: 3 of 8
    report = write_report(enough)
    with (report / IMPORTANCES_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["hyperparameter"] for r in rows} == set(search.spec.search)
    assert {r["budget"] for r in rows} == {"60 s of training"}
    assert _is_png(report / "param_importances.png")
    page = (report / HTML_FILE).read_text()
    assert "No importances" not in page
    # _config spreads every continuous parameter by the same fraction: they rose and fell
    # together, and the page says that fANOVA cannot tell them apart.
    continuous = sorted(path for path, dist in search.spec.search.items() if not isinstance(dist, Choice))
    pairs = confounded_pairs(budget_study(search, budget))
    assert {(a, b) for a, b, _ in pairs} == {(a, b) for i, a in enumerate(continuous) for b in continuous[i + 1:]}
    assert all(rho > 0.99 for *_, rho in pairs)
    assert "Read with care: in these 8 trials, model.args.loss_weights.range and model.args.loss_weights.sam " \
           "(rho +1.00)" in page


def test_without_a_scored_trial_there_are_no_parallel_coordinates_and_the_report_says_why(
        tmp_path: Path) -> None:
    # Two trials paused at the first rung when a short search ended: nothing to draw a line for.
    out = _write_search(tmp_path, _seconds_spec(), [("tiny", [(70, 0.9)], STOPPED, 60),
                                                    ("small", [(65, 0.8)], STOPPED, 60)])
    drawn = run_to_end(launch_py("report", str(out)))
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    assert drawn.stderr.strip() == "", drawn.stderr  # Optuna warned of a study without completed trials
    assert not (out / REPORT_DIR / "parallel_coordinates.png").exists()
    page = (out / REPORT_DIR / HTML_FILE).read_text()
    assert "No parallel coordinates: fewer than 3 trials reached one budget" in page
    assert "alt='parallel_coordinates'" not in page


def test_on_a_tie_the_table_puts_first_the_trial_the_search_calls_best(tmp_path: Path) -> None:
    raw = _seconds_spec()
    out = tmp_path / "out"
    out.mkdir()
    write_spec(out, raw)
    record = SearchRecord(out, Objective(raw["metric"], raw["mode"])).open_for_writing()
    for trial_id in ("trial_b", "trial_a"):  # issued in this order: the first to reach a value is the best
        record.add_trial(trial_id, _config(raw, "tiny", 0))
        record.add_epoch(trial_id, 1, {raw["metric"]: 0.5, TRIAL_SECONDS: 70}, None)
        record.end_trial(trial_id, FINISHED, "budget")
    record.close("finished")
    search = gather(out)
    assert search.best_trial_id == "trial_b"
    assert [row[0] for row in trial_table(search)[1]] == ["trial_b", "trial_a"]


def test_hyperparameters_sampled_together_are_named_and_independent_ones_are_not() -> None:
    rng = np.random.default_rng(0)
    lr_dist = optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)
    unit = optuna.distributions.FloatDistribution(0.0, 1.0)
    size = optuna.distributions.CategoricalDistribution(SIZES)
    study = optuna.create_study()
    for _ in range(40):
        lr = float(10 ** rng.uniform(-5, -1))
        chosen = SIZES[int(rng.integers(len(SIZES)))]
        # weight decay falls as lr rises, with noise; dropout and size are drawn on their own.
        decay = float(np.clip(0.5 - 0.1 * np.log10(lr) / 5 + rng.normal(0, 0.01), 0, 1))
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "decay": decay, "dropout": float(rng.uniform()), "size": chosen, "fixed": 0.5},
            distributions={"lr": lr_dist, "decay": unit, "dropout": unit, "size": size, "fixed": unit},
            value=float(rng.uniform())))
    pairs = confounded_pairs(study)
    assert [(a, b) for a, b, _ in pairs] == [("decay", "lr")] and pairs[0][2] < -CONFOUNDED_RHO
    assert confounded_pairs(optuna.create_study()) == []


def test_curves_mark_a_paused_trial_apart_from_one_stopped_early(tmp_path: Path) -> None:
    trials = [("tiny", [(30, 0.9), (70, 0.8)], PAUSED, 60), ("small", [(30, 0.95), (65, 0.9)], STOPPED, 60),
              ("tiny", [(30, 0.7), (70, 0.6), (200, 0.5), (600, 0.4)], FINISHED, None)]
    search = gather(_write_search(tmp_path, _seconds_spec(), trials))
    assert [t.status for t in search.trials] == [PAUSED, STOPPED, FINISHED]
    ends = {line.get_gid(): line for line in learning_curves(search).axes[0].get_lines()
            if (line.get_gid() or "").startswith("end:")}
    assert set(ends) == {f"end:{PAUSED}:trial_00", f"end:{STOPPED}:trial_01"}  # a finished trial's end is its budget
    assert ends[f"end:{PAUSED}:trial_00"].get_marker() != ends[f"end:{STOPPED}:trial_01"].get_marker()
    assert list(ends[f"end:{PAUSED}:trial_00"].get_xdata()) == [70]
