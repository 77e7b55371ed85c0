"""Warm starts on MNIST-1D (issue 19, item 5): does a search that starts from an earlier one
(``searcher.warm_start``) reach the target sooner than one that starts from nothing?

Pre-registered target: bench/mnist1d_calibration.json's, the 0.95 quantile of 52 random
configurations trained to the full budget (0.9874), the one bench/search_efficiency.py uses,
read from that file and never recomputed. All searches are the service's default method on
the benchmark's problem (bench/mnist1d_space.py; TPE + the default scheduler, 2 at a time,
``budget_s`` each), through ``launch_search``, one Ray cluster for all. For seeds s = 0..n-1:

- cold: seed s, from nothing (bench/search_efficiency.py's method (a));
- warm, same data: seed s, warm-started from the cold search of seed s + 1 (mod n): a
  finished search with another seed, on the same data;
- warm, other data: seed s, warm-started from a search of seed s + 1 (mod n) on MNIST-1D
  generated with another data seed (``OTHER_DATA_SEED``), run first for the purpose.

Each search's time to the target counts from the call that starts it: the earlier search's
time is not counted (it was spent before). Medians over the seeds; an unreached target counts
as infinite time. Targets: cold / warm (same data) >= 2; warm (other data) no slower than cold.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from bench.common import Table, median, ray_cluster
from bench.mnist1d_space import CALIBRATION_FILE
from bench.search_efficiency import Run, method_spec, service_run_in

SPEEDUP_TARGET = 2.0
OTHER_DATA_SEED = 7  # the benchmark's data are mnist1d.yaml's seed 42 (the paper's)


def search_spec(seed: int, budget_s: float, warm_from: Path | None = None, data_seed: int | None = None) -> dict:
    """The service default on the benchmark's problem, optionally warm-started or on other data."""
    raw = method_spec(seed, budget_s, default=True)
    if warm_from is not None:
        raw["searcher"]["warm_start"] = [str(warm_from / "out")]
    if data_seed is not None:
        raw["data"]["seed"] = data_seed
    return raw


def main(quick: bool = False, seeds: int = 5, budget_s: float = 75.0) -> Table:
    if quick:
        # One seed: each warm start then reads the search of its own seed (only checks it runs).
        seeds, budget_s = 1, 12.0
    target = json.loads(CALIBRATION_FILE.read_text())["target"]
    runs: dict[str, list[Run]] = {"cold": [], "warm, same data": [], "warm, other data": []}
    earlier: list[Run] = []
    with ray_cluster(num_cpus=2), tempfile.TemporaryDirectory(prefix="bench-warm-") as scratch:
        folders = Path(scratch)

        def search(name: str, raw: dict) -> Run:
            (folders / name).mkdir()
            return service_run_in(raw, folders / name)

        # The finished searches warm starts read, each kept until the end.
        for seed in range(seeds):
            runs["cold"].append(search(f"cold-{seed}", search_spec(seed, budget_s)))
        for seed in range(seeds):
            earlier.append(search(f"other-data-{seed}", search_spec(seed, budget_s, data_seed=OTHER_DATA_SEED)))
        for seed in range(seeds):  # interleaved: both warm starts of a seed see the machine alike
            source = (seed + 1) % seeds
            runs["warm, same data"].append(search(f"warm-same-{seed}", search_spec(
                seed, budget_s, warm_from=folders / f"cold-{source}")))
            runs["warm, other data"].append(search(f"warm-other-{seed}", search_spec(
                seed, budget_s, warm_from=folders / f"other-data-{source}")))
    fractions = (0.25, 0.5, 1.0)
    table = Table(f"Warm starts on MNIST-1D (1,000 training signals, 27 epochs): median of {seeds} seeds, budget "
                  f"{budget_s:.0f} s, 2 at a time; target {target:.4f} (pre-registered)",
                  ["search", "time to target (median s)", "reached", *[f"best val by {f * budget_s:.0f} s" for f in
                                                                        fractions], "trials started", "epochs trained"])
    medians = {}
    for name, results in runs.items():
        medians[name] = median([r.time_to(target) for r in results])
        table.add(name, medians[name], f"{sum(r.time_to(target) < math.inf for r in results)}/{len(results)}",
                  *[median([r.best_by(f * budget_s) for r in results]) for f in fractions],
                  median([r.trials for r in results]), median([len(r.points) for r in results]))
    table.notes.append(f"the earlier searches on other data (data seed {OTHER_DATA_SEED}): best validation accuracy "
                       f"there, median {median([r.best_by(budget_s) for r in earlier]):.4f}")
    cold, same, different = medians.values()
    table.notes.append(f"cold / warm (same data): {_ratio(cold, same)} (target >= {SPEEDUP_TARGET}x); "
                       f"cold / warm (other data): {_ratio(cold, different)} (target >= 1, no slower)")
    table.notes.append("time 0 is the call that starts each search (Ray already running); the earlier search's "
                       "time is not counted; an unreached target counts as infinite time")
    return table


def _ratio(a: float, b: float) -> str:
    if math.isinf(a) and math.isinf(b):
        return "neither reached"
    return f"{a / b:.2f}x"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=75.0)
    args = parser.parse_args()
    print(main(args.quick, args.seeds, args.budget_s).render())
