"""Trial start: time from a trial's start to its first report, through the service.

- a one-worker trial (the loop runs in the trial actor; Tune reuses actors between trials);
- a two-worker DDP trial (``TorchTrainer``, gloo);
- two concurrent DDP trials against one: wall time of the whole search.
The model is the digits classifier with one optimizer step per epoch, so what is measured
is start-up, not training. Targets: one worker <= 0.5 s, DDP <= 5 s, 2 concurrent DDP
trials <= 1.2x the wall time of one (Ray's release target is 1.35).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import yaml
from ray.tune import Callback

from bench.common import REPEATS, Stopwatch, Table, launch_quietly, median, ray_cluster, scratch
from tests.specs import SEARCH_SPACES

TARGETS = {"one worker": 0.5, "DDP, 2 workers": 5.0}
CONCURRENT_TARGET = 1.2


class FirstReport(Callback):
    """Driver clock: trial start (Tune placed it and started its actor) to its first result."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.perf_counter()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if trial.trial_id not in self.seconds:
            self.seconds[trial.trial_id] = time.perf_counter() - self.started[trial.trial_id]


def spec(trials: int, workers: int, concurrency: int) -> dict:
    raw = yaml.safe_load((SEARCH_SPACES / "digits.yaml").read_text())
    raw["experiment"] = "bench_start"
    raw["model"]["args"].update(width=8, depth=2)
    raw["data"].update(val_fraction=0.05)
    raw["training"].update(epochs=2, max_steps_per_epoch=1, batch_size=16)
    raw["search"] = {"training.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}
    raw["searcher"] = {"type": "random", "seed": 0}
    raw["scheduler"] = {"type": "none"}
    raw["budget"] = {"trials": trials, "time_limit_minutes": None, "max_concurrent": concurrency}
    # Two DDP trials of two workers each share the 2 CPUs: half a CPU per worker.
    raw["resources"] = {"workers": workers, "cpus_per_worker": 1 if workers == 1 else 0.5, "use_gpu": "no"}
    return raw


def search(raw: dict) -> tuple[float, list[float]]:
    """(wall seconds of the search's trials, start-to-first-report per trial)."""
    from trainables.search.run import SearchOptions

    timer = FirstReport()
    with scratch("start") as folder, Stopwatch() as watch:
        launch_quietly(raw, folder, SearchOptions(out_dir=folder / "out", verbose=0, callbacks=[timer]))
    return watch.seconds, list(timer.seconds.values())


def main(quick: bool = False, repeats: int = REPEATS) -> Table:
    repeats = 1 if quick else repeats
    one_worker: list[float] = []
    ddp: list[float] = []
    walls: dict[str, list[float]] = {"one DDP trial": [], "two concurrent DDP trials": []}
    with ray_cluster(num_cpus=2):
        for _ in range(repeats):
            _, firsts = search(spec(trials=2 if quick else 6, workers=1, concurrency=2))
            one_worker += firsts
            if quick:  # DDP searches take a minute or more on 2 CPUs; tests/test_ddp.py runs them
                continue
            wall, firsts = search(spec(trials=1, workers=2, concurrency=1))
            walls["one DDP trial"].append(wall)
            ddp += firsts
            wall, firsts = search(spec(trials=2, workers=2, concurrency=2))
            walls["two concurrent DDP trials"].append(wall)
            ddp += firsts
    table = Table("Trial start: trial start to first report (driver clock), median of all trials",
                  ["trial", "median s", "min s", "max s", "trials", "target s"])
    for name, values in (("one worker", one_worker), ("DDP, 2 workers", ddp)):
        if values:
            table.add(name, median(values), min(values), max(values), len(values), TARGETS[name])
        else:
            table.add(name, "not run with --quick", "", "", 0, TARGETS[name])
    for name, values in walls.items():
        if values:
            table.add(f"search of {name}: wall", median(values), min(values), max(values), len(values), "")
    if walls["two concurrent DDP trials"]:
        ratio = median(walls["two concurrent DDP trials"]) / median(walls["one DDP trial"])
        table.notes.append(f"2 concurrent / 1 DDP trial wall: {ratio:.2f} (target <= {CONCURRENT_TARGET})")
    table.notes.append("the first one-worker trial of each search starts a new actor; later ones reuse it")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick).render())
