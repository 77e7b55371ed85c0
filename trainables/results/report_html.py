"""The search report as one self-contained HTML page: images embedded as data: URIs, inline
CSS, no script and no link, so it opens from a file (or a mail attachment) with no network."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from trainables.results.search_data import SearchData

CHART_TITLES = {
    "pareto_front": "Pareto front: quality against each cost (ringed and joined: the front; x: stopped early)",
    "learning_curves": "Learning curves (dotted: the scheduler's rungs; x: stopped early or failed; "
                       "\u2016: paused at a rung)",
    "best_so_far": "Best value so far against wall time",
    "parallel_coordinates": "Hyperparameters against the metric, every trial at a common budget (named on the chart)",
    "param_importances": "Hyperparameter importance (Optuna, fANOVA) at that budget (also in importances.csv)",
}
STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1300px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
img { max-width: 100%; border: 1px solid #eee; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; }
tr.best td { background: #e8f4e8; font-weight: bold; }
.meta { color: #555; font-size: 13px; }
.figures img { max-width: 48%; vertical-align: top; margin: 4px; }
.caption { color: #333; font-size: 13px; margin: 4px 0 8px; }
"""
CHOICE_PREFIX = "choice_"  # a choice parameter's chart: "choice_<dotted path>"


def render_html(search: SearchData, charts: dict[str, Path | None], header: list[str], rows: list[list[Any]],
                best_figures: list[Path], captions: dict[str, str] | None = None,
                front: tuple[list[str], list[list[Any]]] | None = None) -> str:
    """The page. A chart's caption (one sentence) goes under its title; a chart given as None
    is one the report chose not to draw, and its caption says why."""
    captions = captions or {}
    spec = search.spec
    state = search.state_words()
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(spec.experiment)} report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Search report: {_e(spec.experiment)}</h1>",
        f"<p class='meta'>{_e(spec.description)}</p>" if spec.description else "",
        f"<p class='meta'>Model <b>{_e(spec.model.name)}</b>; "
        f"{'objectives' if spec.multi_objective else 'metric'} "
        + ", ".join(f"<b>{_e(o.metric)}</b> ({_e(o.mode)})" for o in spec.objectives) + "; "
        f"searcher {_e(spec.searcher.type)}, scheduler {_e(spec.scheduler.type)}; {len(search.trials)} trials; "
        f"search {_e(state)}. Written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))} from {_e(str(search.out_dir))}.</p>",
    ]
    if search.best_test:
        parts.append("<p class='meta'>Best model on the held-out test split (selection used validation only): "
                     + ", ".join(f"<b>{_e(k)}</b> {v:.4g}" for k, v in search.best_test.items()) + ".</p>")
    for name, path in charts.items():
        parts.append(f"<h2>{_e(chart_title(name))}</h2>")
        if name in captions:
            parts.append(f"<p class='caption'>{_e(captions[name])}</p>")
        if path is not None:
            parts.append(_img(path, name))
    if front is not None:
        parts += ["<h2>Pareto front, best quality first (also in pareto.csv)</h2>",
                  _table(*front, search.best_trial_id)]
    parts += ["<h2>Trials, best first (also in trials.csv)</h2>", _table(header, rows, search.best_trial_id)]
    if best_figures:
        parts += [f"<h2>Validation figures of the best trial ({_e(search.best_trial_id or '')})</h2>",
                  "<div class='figures'>", *(_img(p, p.stem) for p in best_figures), "</div>"]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def chart_title(name: str) -> str:
    if name.startswith(CHOICE_PREFIX):
        return f"{name[len(CHOICE_PREFIX):]}: each value at equal training"
    return CHART_TITLES.get(name, name)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _table(header: list[str], rows: list[list[Any]], best_id: str | None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        f"<tr{' class=best' if row[0] == best_id else ''}>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in rows)
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
