"""The search's own metrics, exported through Ray's metrics API next to the cluster's.

A Tune callback on the driver keeps them: trials running, trials ended (finished, stopped
early by ASHA, failed), the best value so far and trials ended per hour, each tagged with
the experiment name. Ray's metrics agent on the driver's node serves them to Prometheus
(``ray start --metrics-export-port``) with the prefix ``ray_``:
``ray_hpsearch_trials{experiment="mae_sizes",state="stopped early"}`` (states: running,
finished, stopped early, failed), ``ray_hpsearch_best_value`` and ``ray_hpsearch_trials_per_hour``;
the dashboard's Metrics page shows them through Grafana. The counts are gauges set to the
search's own totals, so every state's series exists from the start, at 0.

Counts start at zero in each driver process: a resumed search counts the trials it ends.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

RUNNING, FINISHED, STOPPED_EARLY, FAILED = "running", "finished", "stopped early", "failed"  # as in summary.json
REPUBLISH_S = 5.0  # seconds between re-recordings of unchanged gauges


class SearchMetrics(Callback):
    """Tune callback (runs in the driver) that sets the search's Ray metrics."""

    def __init__(self, experiment: str, metric: str, mode: str) -> None:
        self.experiment = experiment
        self.metric = metric
        self.mode = mode
        self._best: float | None = None
        self._ended = {FINISHED: 0, STOPPED_EARLY: 0, FAILED: 0}
        self._running = -1  # none set yet
        self._started = time.monotonic()
        self._instruments: dict[str, Any] | None = None
        self._published = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; Ray's metric objects stay behind
        # and are made again on first use.
        return {**self.__dict__, "_instruments": None}

    @property
    def _metrics(self) -> dict[str, Any]:
        if self._instruments is None:
            from ray.util.metrics import Gauge

            tags = ("experiment",)
            self._instruments = {
                "trials": Gauge("hpsearch_trials", "Trials of the search running now, or ended by state",
                                (*tags, "state")),
                "best": Gauge("hpsearch_best_value", "The search metric's best value so far", (*tags, "metric")),
                "rate": Gauge("hpsearch_trials_per_hour", "Trials ended per hour since the search began", tags),
            }
        return self._instruments

    def setup(self, **info: Any) -> None:
        self._started = time.monotonic()
        self._set_trials(running=0)

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        running = sum(1 for trial in trials if trial.status == "RUNNING")
        # Tune steps many times a second: set on change, and every few seconds anyway, since
        # Ray stops exporting a gauge that was not recorded for a while (seen with the best
        # value, set once early in a short search, missing from the endpoint at its end).
        if running != self._running or time.monotonic() - self._published > REPUBLISH_S:
            self._set_trials(running)
            if self._best is not None:
                self._metrics["best"].set(self._best, {"experiment": self.experiment, "metric": self.metric})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or value != value:  # absent or NaN
            return
        if self._best is None or (value < self._best if self.mode == "min" else value > self._best):
            self._best = float(value)
            self._metrics["best"].set(self._best, {"experiment": self.experiment, "metric": self.metric})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        # The loop marks a trial that ran its budget `finished` and a NaN loss `failed`; a
        # trial that is neither was stopped by ASHA (or the search's time limit).
        self._end(FAILED if last.get("failed") else FINISHED if last.get("finished") else STOPPED_EARLY, trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(FAILED, trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._set_trials(running=0)

    def _end(self, end: str, trials: list) -> None:
        self._ended[end] += 1
        hours = max(time.monotonic() - self._started, 1.0) / 3600
        self._metrics["rate"].set(sum(self._ended.values()) / hours, {"experiment": self.experiment})
        self._set_trials(sum(1 for trial in trials if trial.status == "RUNNING"))

    def _set_trials(self, running: int) -> None:
        self._running, self._published = running, time.monotonic()
        for state, count in {RUNNING: running, **self._ended}.items():
            self._metrics["trials"].set(count, {"experiment": self.experiment, "state": state})
