"""The search report's charts, from the data ``trainables.results.report`` gathers; one function per chart.

matplotlib draws the curves; Optuna's own matplotlib plots draw the parallel coordinates
and the hyperparameter importances (its evaluators, on the study). Each function returns
the Figure, so tests can count what it drew (a trial's curve carries the gid
``trial:<id>``); ``trainables.results.report`` saves and closes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # Optuna's plots go through pyplot; a search runs headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from trainables.objective import is_number
from trainables.results.record import FAILED, FINISHED, PAUSED, RUNNING, STOPPED
from trainables.results.search_data import SearchData, quiet_optuna
from trainables.spec.distributions import Choice, Grid

if TYPE_CHECKING:
    from trainables.results.report import ChoiceAtBudgets

STATUS_STYLE = {FINISHED: "-", STOPPED: "--", FAILED: ":", RUNNING: "-", PAUSED: "-."}
# How a curve's last point is marked: where the trial was stopped (or failed), or where it
# waits, paused at a rung, for its scheduler to promote it.
END_MARKERS = {STOPPED: "x", FAILED: "x", PAUSED: r"$\parallel$"}
LEGEND_LIMIT = 12  # trials named in a legend; beyond, the legend would hide the curves


def learning_curves(search: SearchData) -> Figure:
    """The metric of every trial against the scheduler's time attribute, one curve each;
    the scheduler's rungs as dotted verticals; a cross where a trial stopped before the budget
    (or failed), a pause sign where it is paused at a rung."""
    figure = Figure(figsize=(9, 4.8), dpi=90, layout="constrained")
    ax = figure.subplots()
    x_key = search.time_attr
    for trial in search.trials:
        xs = [row[x_key] for row in trial.rows]
        ys = [row[search.metric] for row in trial.rows]
        (line,) = ax.plot(xs, ys, STATUS_STYLE.get(trial.status, "-"), marker=".",
                          label=f"{trial.trial_id} ({trial.status})")
        line.set_gid(f"trial:{trial.trial_id}")
        if xs and trial.status in END_MARKERS:
            marker = END_MARKERS[trial.status]
            ax.plot([xs[-1]], [ys[-1]], linestyle="none", marker=marker, color=line.get_color(),
                    markersize=10 if marker == "x" else 14, markeredgewidth=2 if marker == "x" else 1,
                    gid=f"end:{trial.status}:{trial.trial_id}")
    _draw_baseline(ax, search)
    for rung in search.rungs:
        ax.axvline(rung, color="0.5", linestyle=":", linewidth=1)
        ax.annotate(f"rung {rung:g}", (rung, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="0.35")
    ax.set_xlabel("epoch" if x_key == "epoch" else "training seconds")
    ax.set_ylabel(search.metric)
    ax.set_title(f"{search.metric} of every trial ({search.mode}); x: {STOPPED} or {FAILED}; "
                 f"$\\parallel$: {PAUSED} at a rung", fontsize=10)
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
        sign = search.objective.sign  # +1 for min, -1 for max
        best = sign * np.minimum.accumulate(sign * values)
        ax.scatter(seconds / scale, values, s=12, color="0.6", label="an epoch's value")
        ax.step(seconds / scale, best, where="post", color="tab:blue", linewidth=2, label="best so far", gid="best")
        _draw_baseline(ax, search)
        ax.set_xlabel(f"wall time since the search began ({unit})")
        ax.legend(fontsize=8)
    ax.set_ylabel(search.metric)
    ax.set_title(f"best {search.metric} so far", fontsize=10)
    return figure


def choice_at_budgets(table: ChoiceAtBudgets, metric: str, mode: str, xlabel: str) -> Figure:
    """One choice parameter at equal training: at each budget (x, evenly spaced, labelled with
    its amount and how many trials reached it), every trial's value there as a dot, grouped
    side by side by the parameter's value, and each value's best joined across budgets. A
    value whose trials reached no budget (or that no trial had) is named in the legend as such.
    Gids: ``point:<value index>:<budget index>`` for the dots, ``best:<value index>`` for a line."""
    figure = Figure(figsize=(9, 4.8), dpi=90, layout="constrained")
    ax = figure.subplots()
    count = len(table.values)
    slot = 0.8 / max(count, 1)  # each value's share of a budget's width
    colours = matplotlib.colormaps["tab10"]
    handles = []
    for index, value in enumerate(table.values):
        colour = colours(index % 10)
        offset = (index - (count - 1) / 2) * slot
        for at, here in enumerate(table.points[index]):
            if not here:
                continue
            spread = np.linspace(-0.3, 0.3, len(here)) * slot if len(here) > 1 else np.zeros(1)
            ax.scatter(at + offset + spread, [v for _, v in here], s=18, color=colour, alpha=0.55,
                       edgecolors="none", gid=f"point:{index}:{at}")
            ax.annotate(str(len(here)), (at + offset, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=7, color=colour)
        reached = [(at + offset, best) for at, best in enumerate(table.best[index]) if best is not None]
        if reached:
            xs, ys = zip(*reached, strict=True)
            ax.plot(xs, ys, "-D", color=colour, markersize=6, linewidth=1.6, gid=f"best:{index}")
            upto = ("" if len(reached) == len(table.budgets)
                    else f", none reached {table.budgets[len(reached)].at:g}")
            label = f"{value}: {_trials(table.sampled[index])}{upto}"
            handles.append(Line2D([], [], color=colour, marker="D", label=label))
        else:
            label = (f"{value}: not reached ({_trials(table.sampled[index])}, none reached {table.budgets[0].at:g})"
                     if table.sampled[index] and table.budgets else f"{value}: not sampled")
            handles.append(Line2D([], [], color="0.6", marker="o", markerfacecolor="none", linestyle="none",
                                  label=label))
    low, high = ax.get_ylim()
    ax.set_ylim(low - 0.08 * (high - low), high)  # room for the counts under the dots
    ticks = [f"{b.at:g}\n{_trials(b.trials)}" for b in table.budgets]
    ax.set_xticks(range(len(table.budgets)), ticks, fontsize=8)
    ax.set_xlim(-0.5, max(len(table.budgets), 1) - 0.5)
    ax.set_xlabel(f"{xlabel} (small numbers: trials of each value there)", fontsize=9)
    ax.set_ylabel(metric)
    ax.set_title(f"{table.param}: {metric} of each value at equal training; line: each value's best ({mode})",
                 fontsize=10)
    ax.grid(axis="y", color="0.9")
    ax.legend(handles=handles, fontsize=8, loc="best", title=table.param, title_fontsize=8)
    return figure


def pareto_front(search: SearchData) -> Figure | None:
    """With several objectives: the quality (first objective) against each cost, one panel per
    cost. Every trial with a point is a dot (its point: TrialRecord.point), coloured by the
    search's first choice parameter (the model size, say); a trial stopped early is a cross at
    what it reached by the rung it stopped at; the front's trials are ringed and joined in
    order of cost (the front of that pair of objectives). Costs that span more than 100x get a
    log axis. Gids: ``point:<trial id>``, ``front:<cost metric>``. None with one objective."""
    objectives = search.spec.objectives
    if len(objectives) < 2:
        return None
    quality, costs = objectives[0], objectives[1:]
    choices = [p for p, d in search.spec.search.items() if isinstance(d, (Choice, Grid))]
    param = choices[0] if choices else None
    keys = [str(v) for v in search.spec.search[param].values] if param else []
    colours = matplotlib.colormaps["tab10"]
    front = set(search.front or [])
    figure = Figure(figsize=(5.2 * len(costs) + 0.8, 4.6), dpi=90, layout="constrained")
    axes = figure.subplots(1, len(costs), squeeze=False)[0]
    seen: set[str] = set()  # the choice's values some trial had (the legend names only those)
    for column, (ax, cost) in enumerate(zip(axes, costs, strict=True), start=1):
        placed, xs_all = [], []
        for trial in search.trials:
            point = trial.point
            if point is None or not (is_number(point[0]) and is_number(point[column])):
                continue
            value = str(trial.config.get(param)) if param else None
            colour = colours(keys.index(value) % 10) if value in keys else "tab:blue"
            seen.add(value)
            xs_all.append(point[column])
            stopped = trial.status == STOPPED
            ax.scatter([point[column]], [point[0]], marker="x" if stopped else "o", s=36, color=colour,
                       alpha=0.85, gid=f"point:{trial.trial_id}")
            if trial.trial_id in front:
                ax.scatter([point[column]], [point[0]], s=150, facecolors="none", edgecolors="black", linewidths=1)
                placed.append((point[column], point[0]))
        pair = [quality, cost]
        line = sorted(p for p in placed
                      if not any(_dominates_in(q, p, pair) for q in placed))  # this pair's front
        if line:
            xs, ys = zip(*line, strict=True)
            ax.plot(xs, ys, "-", color="black", linewidth=1.2, gid=f"front:{cost.metric}")
        values = xs_all or [1.0]  # every trial drawn, not the front alone
        if min(values) > 0 and max(values) / min(values) > 100:
            ax.set_xscale("log")
        ax.set_xlabel(f"{cost.metric} ({cost.mode})")
        ax.set_ylabel(f"{quality.metric} ({quality.mode})")
        ax.grid(color="0.92")
    handles = [Line2D([], [], color=colours(i % 10), marker="o", linestyle="none", label=f"{param}={k}")
               for i, k in enumerate(keys) if k in seen]
    handles += [Line2D([], [], color="0.4", marker="x", linestyle="none", label=f"{STOPPED} (at its rung)"),
                Line2D([], [], color="black", marker="o", markerfacecolor="none", markersize=10, linestyle="-",
                       label="Pareto front")]
    axes[-1].legend(handles=handles, fontsize=8, loc="best")
    figure.suptitle(f"{quality.metric} against what it costs: each trial at its best epoch "
                    f"(a stopped one: by the rung it stopped at)", fontsize=10)
    return figure


def _dominates_in(a: tuple[float, float], b: tuple[float, float], pair: list[Any]) -> bool:
    """Whether point ``a`` (cost, quality) dominates ``b`` for the objectives ``pair`` (quality, cost)."""
    from trainables.pareto import dominates, signed_point

    return dominates(signed_point([a[1], a[0]], pair), signed_point([b[1], b[0]], pair))


def _trials(count: int) -> str:
    return f"{count} trial{'' if count == 1 else 's'}"


def _draw_baseline(ax: Any, search: SearchData) -> None:
    """The model's trivial baseline (Objective.baseline), if it reports one: the median over
    every recorded epoch, as one line, so a curve shows how far from trivial it is."""
    key = search.objective.baseline
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
    importances.csv used (the report asks only with enough trials: report.importance_budget)."""
    with quiet_optuna():
        ax = optuna.visualization.matplotlib.plot_param_importances(study, evaluator=evaluator)
    ax.figure.set_size_inches(8, max(2.5, 0.45 * len(ax.patches) + 1.2))
    # In place of Optuna's own title, which it puts on the left.
    ax.set_title(f"Hyperparameter importance (fANOVA), {budget}", loc="left", fontsize=10)
    return ax.figure


def close(figure: Figure) -> None:
    """Release a figure; Optuna's come from pyplot, which keeps them until closed."""
    plt.close(figure)


