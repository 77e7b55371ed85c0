"""Warm starts: a search that begins from earlier ones (``searcher.warm_start``).

Each earlier output folder is read through its record (``SearchRecord``) and nothing else:
never written, its lock never taken. Its trials whose configuration the new space contains
(every searched path present, each value one the new distribution could sample; paths the
new space does not search do not matter) are told to the sampler as the search's own are
(sampling.py, ``trial_observation``): finished ones complete with their best value, stopped or
paused ones pruned with their values at the new search's rungs. The others are skipped, and
counted.

The best finished configurations of each folder (``BEST_PER_FOLDER``, each once over all
folders) are the new search's first trials. They are decided from the folders alone, in the
spec's order, so a continued search computes the same list and its record says how many of
them it has issued already (the searcher indexes the list by its issue count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.objective import is_number
from trainables.results.record import FINISHED, SearchRecord
from trainables.search.sampling import Observation, trial_observation
from trainables.search.schedulers import new_policy
from trainables.search.schedulers.base import recorded_results
from trainables.spec.schema import SearchSpec

BEST_PER_FOLDER = 3  # an earlier search's best finished configurations tried first


@dataclass
class WarmStart:
    """What one earlier search gives the new one."""

    folder: Path
    observations: list[Observation]  # its trials the sampler learns from
    best: list[dict[str, Any]]  # its best finished configurations (the new space's paths), best first
    outside: int  # trials skipped: the new space does not contain their configuration
    untold: int  # trials skipped: failed, unfinished, or without a value at the new search's rungs

    @property
    def used(self) -> int:
        return len(self.observations)

    @property
    def skipped(self) -> int:
        return self.outside + self.untold

    def entry(self) -> dict[str, Any]:
        """As the terminal, summary.json and the MLflow parent run state it."""
        return {"folder": str(self.folder), "used": self.used, "skipped": self.skipped,
                "outside_space": self.outside, "tried_first": len(self.best)}


def read_warm_starts(spec: SearchSpec) -> list[WarmStart]:
    """Every folder of ``spec.searcher.warm_start``, read as the new search's sampler sees it."""
    policy = new_policy(spec)
    rungs, objective = policy.rungs(), spec.objective
    space = {path: dist.to_optuna() for path, dist in spec.search.items()}
    tried: set[str] = set()  # a configuration two folders share is tried once
    starts = []
    for folder in spec.searcher.warm_start:
        record = SearchRecord(Path(folder), objective)
        inside = [t for t in record.trials.values()
                  if all(path in t.config and dist.contains(t.config[path]) for path, dist in spec.search.items())]
        observations = []
        for trial in inside:
            seen = trial_observation(trial, space, objective, recorded_results(trial, policy.time_key, spec.metric),
                                     rungs)
            # What sampler_view can tell: a finished trial's value, or a value at a rung.
            if seen is not None and ((seen.complete and is_number(seen.value)) or seen.rung_values):
                observations.append(seen)
        finished = [t for t in inside if t.status == FINISHED and t.best_value(objective) is not None]
        best = []
        for trial in objective.ranked(finished, key=lambda t: t.best_value(objective)):
            config = {path: trial.config[path] for path in spec.search}
            key = json.dumps(config, sort_keys=True, default=str)
            if len(best) < BEST_PER_FOLDER and key not in tried:
                tried.add(key)
                best.append(config)
        starts.append(WarmStart(Path(folder), observations, best, outside=len(record.trials) - len(inside),
                                untold=len(inside) - len(observations)))
    return starts


def first_trials(starts: list[WarmStart]) -> list[dict[str, Any]]:
    """The configurations a warm-started search issues first, in order."""
    return [config for start in starts for config in start.best]
