"""The search report's charts, from the data ``trainables.results.report`` gathers; one function per chart.

matplotlib draws the curves; Optuna's own matplotlib plots draw the parallel coordinates
and the hyperparameter importances (its evaluators, on the study). Each function returns
the Figure, so tests can count what it drew (a trial's curve carries the gid
``trial:<id>``); ``trainables.results.report`` saves and closes them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Optuna's plots go through pyplot; a search runs headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from trainables.objective import Objective, is_number
from trainables.results.search_data import SearchData

STATUS_STYLE = {"finished": "-", "stopped early": "--", "failed": ":", "running": "-"}
MIN_COMPLETE_TRIALS = 2  # an importance needs at least two scored trials to compare
LEGEND_LIMIT = 12  # trials named in a legend; beyond, the legend would hide the curves


def learning_curves(search: SearchData) -> Figure:
    """The metric of every trial against the scheduler's time attribute, one curve each;
    ASHA's rungs as dotted verticals, and a cross where a trial stopped before the budget."""
    figure = Figure(figsize=(9, 4.8), dpi=90, layout="constrained")
    ax = figure.subplots()
    x_key = search.time_attr
    for trial in search.trials:
        xs = [row[x_key] for row in trial.rows]
        ys = [row[search.metric] for row in trial.rows]
        (line,) = ax.plot(xs, ys, STATUS_STYLE.get(trial.status, "-"), marker=".",
                          label=f"{trial.trial_id} ({trial.status})")
        line.set_gid(f"trial:{trial.trial_id}")
        if xs and trial.status in ("stopped early", "failed"):
            ax.plot(xs[-1], ys[-1], "x", color=line.get_color(), markersize=10, markeredgewidth=2)
    _draw_baseline(ax, search)
    for rung in search.rungs:
        ax.axvline(rung, color="0.5", linestyle=":", linewidth=1)
        ax.annotate(f"rung {rung:g}", (rung, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="0.35")
    ax.set_xlabel("epoch" if x_key == "epoch" else "training seconds")
    ax.set_ylabel(search.metric)
    ax.set_title(f"{search.metric} of every trial ({search.mode}); x: stopped early or failed", fontsize=10)
    if 0 < len(search.trials) <= LEGEND_LIMIT:
        ax.legend(fontsize=7, loc="best")
    return figure


def best_so_far(search: SearchData) -> Figure:
    """Every reported value against wall time since the search began, and the best one so far."""
    points = sorted((row["wall_s"], row[search.metric]) for trial in search.trials for row in trial.rows)
    figure = Figure(figsize=(9, 4), dpi=90, layout="constrained")
    ax = figure.subplots()
    if points:
        seconds, values = np.array(points).T
        scale, unit = (60.0, "minutes") if seconds.max() > 120 else (1.0, "seconds")
        sign = Objective(search.metric, search.mode).sign  # +1 for min, -1 for max
        best = sign * np.minimum.accumulate(sign * values)
        ax.scatter(seconds / scale, values, s=12, color="0.6", label="an epoch's value")
        ax.step(seconds / scale, best, where="post", color="tab:blue", linewidth=2, label="best so far", gid="best")
        _draw_baseline(ax, search)
        ax.set_xlabel(f"wall time since the search began ({unit})")
        ax.legend(fontsize=8)
    ax.set_ylabel(search.metric)
    ax.set_title(f"best {search.metric} so far", fontsize=10)
    return figure


def _draw_baseline(ax: Any, search: SearchData) -> None:
    """The model's trivial baseline (Objective.baseline), if it reports one: the median over
    every recorded epoch, as one line, so a curve shows how far from trivial it is."""
    key = Objective(search.metric, search.mode).baseline
    values = [row[key] for trial in search.trials for row in trial.rows if is_number(row.get(key))]
    if values:
        ax.axhline(float(np.median(values)), color="0.3", linestyle="-.", linewidth=1.2, gid="baseline",
                   label=f"trivial baseline ({key}, median)")


def parallel_coordinates(study: optuna.Study, budget: str) -> Figure:
    """Optuna's parallel-coordinate plot of the study's scored trials (one line each)."""
    with quiet_optuna():
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study)
    ax.figure.set_size_inches(10, 4.8)
    ax.set_title(f"Parallel coordinates, {budget}", fontsize=10)  # in place of Optuna's (centred) title
    return ax.figure


def param_importances(study: optuna.Study, evaluator: Any, budget: str) -> Figure:
    """Optuna's importance plot for the study's scored trials, with the evaluator the report's
    importances.csv used; a note instead when fewer than two trials have a score."""
    scored = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if scored < MIN_COMPLETE_TRIALS:
        figure = Figure(figsize=(8, 2), dpi=90)
        figure.text(0.5, 0.5, f"Hyperparameter importance needs {MIN_COMPLETE_TRIALS} trials with a score "
                    f"({budget}); there are {scored}.", ha="center", va="center")
        return figure
    with quiet_optuna():
        ax = optuna.visualization.matplotlib.plot_param_importances(study, evaluator=evaluator)
    ax.figure.set_size_inches(8, max(2.5, 0.45 * len(ax.patches) + 1.2))
    # In place of Optuna's own title, which it puts on the left.
    ax.set_title(f"Hyperparameter importance (fANOVA), {budget}", loc="left", fontsize=10)
    return ax.figure


def close(figure: Figure) -> None:
    """Release a figure; Optuna's come from pyplot, which keeps them until closed."""
    plt.close(figure)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna marks its matplotlib plots experimental and warns on every call, and logs each
    in-memory study the report builds: neither is news to the person reading the terminal."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # A hyperparameter every compared trial shares gets a flat axis; matplotlib widens it.
            warnings.filterwarnings("ignore", message="Attempting to set identical", category=UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
