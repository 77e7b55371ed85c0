"""Warm starts: a search that begins from earlier ones (``searcher.warm_start``).

Each earlier output folder is read through its record (``SearchRecord``) and nothing else:
never written, its lock never taken. Its trials whose configuration the new space contains
(every searched path present, each value one the new distribution could sample; paths the
new space does not search do not matter) are told to the sampler as the search's own are
(sampling.py, ``trial_observation``): finished ones complete with their best value, stopped or
paused ones pruned with their values at the new search's rungs. The others are skipped, and
counted.

An earlier search of the same problem (the same data, epochs and scheduler count: its values
are measured as the new search's are) also fills the new scheduler's rungs: its trials'
results there are entries the new trials are ranked against (``EarlierTrial``, told to the
policy by ``schedulers.build_scheduler``), so the rungs hold enough entries to promote by, and
a configuration known to be good goes on at once instead of waiting at each rung for new
ones. Rungs filled from other data would rank the new trials against values that are not
comparable; there the sampler alone learns from the earlier search.

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

import yaml

from trainables.objective import is_number
from trainables.outputs import SPEC_FILE
from trainables.results.record import FINISHED, SearchRecord
from trainables.search.sampling import Observation, trial_observation
from trainables.search.schedulers import new_policy
from trainables.search.schedulers.base import recorded_results
from trainables.spec.schema import SearchSpec

BEST_PER_FOLDER = 3  # an earlier search's best finished configurations tried first


@dataclass
class EarlierTrial:
    """An earlier trial of the same problem as the new scheduler's rungs hold it."""

    key: str  # unique among the new search's trials and the other earlier ones
    results: list[tuple[float, Any]]  # (time in the scheduler's count, value), in order
    ended: bool  # it ended on its own terms (its budget, patience): its last value is final


@dataclass
class WarmStart:
    """What one earlier search gives the new one."""

    folder: Path
    observations: list[Observation]  # its trials the sampler learns from
    best: list[dict[str, Any]]  # its best finished configurations (the new space's paths), best first
    outside: int  # trials skipped: the new space does not contain their configuration
    untold: int  # trials skipped: failed, unfinished, or without a value at the new search's rungs
    rung_entries: list[EarlierTrial]  # for the scheduler's rungs; empty unless the same problem

    @property
    def used(self) -> int:
        return len(self.observations)

    @property
    def skipped(self) -> int:
        return self.outside + self.untold

    def entry(self) -> dict[str, Any]:
        """As the terminal, summary.json and the MLflow parent run state it."""
        return {"folder": str(self.folder), "used": self.used, "skipped": self.skipped,
                "outside_space": self.outside, "tried_first": len(self.best),
                "rung_entries": len(self.rung_entries)}


def same_problem(earlier: dict[str, Any], spec: SearchSpec) -> bool:
    """Whether an earlier search's values (its spec.yaml, as run) were measured as this spec's
    are: the same data, epochs and scheduler count, so the rungs may compare them."""
    now = spec.model_dump(mode="json")
    return (earlier.get("data") == now["data"]
            and (earlier.get("training") or {}).get("epochs") == now["training"]["epochs"]
            and (earlier.get("scheduler") or {}).get("time_attr") == now["scheduler"].get("time_attr"))


def read_warm_starts(spec: SearchSpec) -> list[WarmStart]:
    """Every folder of ``spec.searcher.warm_start``, read as the new search's sampler sees it."""
    policy = new_policy(spec)
    rungs, objective = policy.rungs(), spec.objective
    space = {path: dist.to_optuna() for path, dist in spec.search.items()}
    tried: set[str] = set()  # a configuration two folders share is tried once
    starts = []
    for folder in spec.searcher.warm_start:
        record = SearchRecord(Path(folder), objective)
        comparable = same_problem(yaml.safe_load((Path(folder) / SPEC_FILE).read_text()) or {}, spec)
        # Every trial with results, in the space or not: each measured the same problem.
        entries = [EarlierTrial(f"earlier:{folder}:{trial.trial_id}", results, trial.status == FINISHED)
                   for trial in sorted(record.trials.values(), key=lambda t: t.number)
                   if (results := recorded_results(trial, policy.time_key, spec.metric))] if comparable else []
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
                                untold=len(inside) - len(observations), rung_entries=entries))
    return starts


def rung_entries(starts: list[WarmStart]) -> list[EarlierTrial]:
    """The earlier trials the new scheduler's rungs hold (``schedulers.build_scheduler``)."""
    return [trial for start in starts for trial in start.rung_entries]


def first_trials(starts: list[WarmStart]) -> list[dict[str, Any]]:
    """The configurations a warm-started search issues first, in order."""
    return [config for start in starts for config in start.best]
