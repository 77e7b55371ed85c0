"""What the user reads in the terminal: where to watch the search, and the final table."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trainables.objective import is_number
from trainables.results.record import FAILED, STOPPED, SearchRecord
from trainables.spec.schema import SearchSpec


def ray_banner(url: str | None, cluster: dict[str, float], concurrency: int, gpus: bool) -> str:
    lines = [f"Ray cluster: {cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU; "
             f"up to {concurrency} trial(s) at once{'' if gpus else ' (no GPU: training on CPU)'}."]
    if url:
        lines.append(f"Ray dashboard: http://{url}  (token authentication is on: print the token with "
                     f"`ray get-auth-token` and paste it when the page asks)")
    else:
        lines.append("Ray dashboard: not running (install ray[default] to get it)")
    return "\n".join(lines)


def warm_start_banner(entries: list[dict[str, Any]]) -> str:
    """One line per earlier search a warm-started search read (WarmStart.entry), at its start."""
    return "\n".join(
        f"Warm start from {e['folder']}: {e['used']} trials used, {e['skipped']} skipped "
        f"({e['outside_space']} outside this search space, {e['skipped'] - e['outside_space']} failed, unfinished "
        f"or without a value at its rungs); its best {e['tried_first']} configuration(s) are tried first"
        + (f"; {e['rung_entries']} of its trials fill the rungs (the same problem)." if e["rung_entries"] else
           "; the rungs start empty (other data, epochs or scheduler count).")
        for e in entries)


def progress_reporter(spec: SearchSpec) -> Any:
    """The live table: short parameter names, the epoch, the metric and each trial's best."""
    from ray.tune import CLIReporter

    class Reporter(CLIReporter):
        def set_total_samples(self, total_samples: int | None) -> None:
            # Tune's "Number of trials: n/N" counts samples, and N allows every trial to be
            # issued again at each rung (trainables/search/run.py): no count of configurations.
            super().set_total_samples(None)

    return Reporter(
        parameter_columns={path: _short_name(path) for path in list(spec.search)},
        metric_columns={"epoch": "epoch", spec.metric: spec.metric, "best_value": "best", "epoch_time_s": "s/epoch"},
        # Not sorted: Ray 2.60 sorts with None for a trial that has not reported yet, and raises.
        max_report_frequency=15,
    )


def print_trials(record: SearchRecord, spec: SearchSpec, seconds: float, summary_path: Path,
                 best_dir: Path | None, live: bool = False) -> str:
    """The end-of-search table (as text, so tests and logs get exactly what the user saw)."""
    from trainables.results.summary import trial_entry

    params = list(spec.search)
    best = record.best_trial()
    table = Table(title=f"{spec.experiment}: {len(record.trials)} trials in {seconds / 60:.1f} min "
                        f"({spec.metric}, {spec.mode})")
    for column in ["trial", "status", "epochs", f"best {spec.metric}", "at epoch", *[_short_name(p) for p in params]]:
        table.add_column(column, overflow="fold")
    for trial in sorted(record.trials.values(), key=lambda t: t.trial_id):
        entry = trial_entry(record, trial, live)
        marker = " *" if best is not None and trial.trial_id == best.trial_id else ""
        status = entry["status"]
        if status == FAILED:
            status = f"failed: {trial.reason[:60]}"
        elif status == STOPPED:
            status = f"{status} ({trial.why_ended})"
        table.add_row(
            trial.trial_id + marker,
            status,
            str(entry["epochs"]),
            "-" if entry["best_value"] is None else f"{entry['best_value']:.5g}",
            "-" if entry["best_epoch"] is None else str(entry["best_epoch"]),
            *[_short(trial.config.get(p)) for p in params],
        )
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, force_terminal=False)
    console.print(table)
    if best is not None:
        value, epoch = best.best_value(record.objective), best.best_epoch(record.objective)
        baseline = best.epochs[epoch].get(record.objective.baseline)
        against = f"  ({value / baseline:.2f}x the trivial {record.objective.baseline}={baseline:.5g})" \
            if is_number(baseline) and baseline else ""
        console.print(f"Best trial: {best.trial_id}  {spec.metric}={value:.5g} at epoch {epoch}{against}")
        if best_dir is not None:
            console.print(f"Best checkpoint: {best_dir}  (load it with trainables.load_model({str(best_dir)!r}))")
    else:
        console.print("No trial produced a checkpoint: see the failures above.")
    console.print(f"Summary: {summary_path}")
    return buffer.getvalue().rstrip()


def _short_name(path: str) -> str:
    return path.split(".")[-1]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)
