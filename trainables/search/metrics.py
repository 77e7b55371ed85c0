"""The search's own metrics, exported through Ray's metrics API next to the cluster's.

A projection of the search's record, kept on the driver: trials running, trials ended by
status (the record's words: finished, stopped early, failed), the best value so far and
trials ended per hour, each tagged with the experiment name. Ray's metrics agent on the
driver's node serves them to Prometheus (``ray start --metrics-export-port``) with the prefix
``ray_``: ``ray_hpsearch_trials{experiment="mae_sizes",state="stopped early"}``,
``ray_hpsearch_best_value`` and ``ray_hpsearch_trials_per_hour``; the dashboard's Metrics page
shows them through Grafana. The counts are gauges set to the record's totals (a continued
search counts the trials its earlier launches ended), so every state's series exists from
the start.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from trainables.results.record import (
    ENDED,
    RUNNING,
    RecordListener,
    SearchRecord,
    TrialRecord,
)

REPUBLISH_S = 5.0  # seconds between re-recordings of unchanged gauges


class SearchMetrics(RecordListener, Callback):
    """Sets the search's Ray metrics from the record (its events, and Tune's steps for the
    periodic re-recording Ray needs to keep exporting a gauge)."""

    def __init__(self, record: SearchRecord, experiment: str) -> None:
        self.record = record
        self.experiment_tags = {"experiment": experiment}
        self._started = time.monotonic()
        self._published = 0.0
        self._instruments: dict[str, Any] | None = None
        # Kept up to date event by event: a step costs the same at the 1,000th trial.
        self._counts = {state: 0 for state in (RUNNING, *ENDED)}
        for trial in record.trials.values():  # a paused trial counts as running until it ends, as live
            self._counts[trial.status if trial.ended else RUNNING] += 1
        self._seen = set(record.trials)
        best = record.best_trial()
        self._best = None if best is None else best.best_value(record.objective)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # pickled by Tune into tuner.pkl, never read back (see searcher._DriverOnly)

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
        self.publish()

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune steps many times a second: Ray stops exporting a gauge that was not recorded
        # for a while (seen with the best value, set once early in a short search).
        if time.monotonic() - self._published > REPUBLISH_S:
            self.publish()

    def on_trial(self, trial: TrialRecord) -> None:
        if trial.trial_id not in self._seen:
            self._seen.add(trial.trial_id)
            self._counts[RUNNING] += 1
            self.publish()

    def on_epoch(self, trial: TrialRecord, epoch: int) -> None:
        value = trial.value_at(epoch, self.record.objective.metric)
        if value is not None and self.record.objective.better(value, self._best):
            self._best = value
            self._publish_best()

    def on_end(self, trial: TrialRecord) -> None:
        self._counts[RUNNING] -= 1
        self._counts[trial.status] += 1
        hours = max(time.monotonic() - self._started, 1.0) / 3600
        self._metrics["rate"].set(sum(self._counts[s] for s in ENDED) / hours, self.experiment_tags)
        self.publish()

    def publish(self) -> None:
        self._published = time.monotonic()
        for state, count in self._counts.items():
            self._metrics["trials"].set(count, {**self.experiment_tags, "state": state})
        self._publish_best()

    def _publish_best(self) -> None:
        if self._best is not None:
            self._metrics["best"].set(self._best, {**self.experiment_tags, "metric": self.record.objective.metric})
