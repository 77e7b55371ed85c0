"""Marginal cost of a trial: the service's whole search of the sleeper workload (10 reports x
0.1 s, 2 at a time, random search, no early stopping, through ``launch_search`` as
``launch.py`` runs it) at 40 and at 240 trials; (wall(240) - wall(40)) / 200 against the
ideal 10 x 0.1 / 2 = 0.5 s. Target: at most 1.10x, so the 240th trial costs what the 40th did.
"""

from __future__ import annotations

import argparse

from bench.common import Table, interleaved, median, ray_cluster
from bench.trial_overhead import FULL_REPEATS, TARGET, Workload, run_service

SIZES = (Workload(trials=40, reports=10, work_s=0.1), Workload(trials=240, reports=10, work_s=0.1))
QUICK_SIZES = (Workload(trials=2, reports=3, work_s=0.05), Workload(trials=6, reports=3, work_s=0.05))


def main(quick: bool = False) -> Table:
    small, large = QUICK_SIZES if quick else SIZES
    repeats = 1 if quick else FULL_REPEATS
    with ray_cluster(num_cpus=small.concurrency):
        times = interleaved({f"{w.trials} trials": (lambda w=w: run_service(w, [])) for w in (small, large)}, repeats)
    per_trial_ideal = large.reports * large.work_s / large.concurrency
    extra = (median(times[f"{large.trials} trials"]) - median(times[f"{small.trials} trials"])) / (large.trials - small.trials)
    table = Table(f"Marginal cost of a trial: {small.trials} and {large.trials} trials x {large.reports} reports x "
                  f"{large.work_s} s, {large.concurrency} at a time (ideal {per_trial_ideal:.2f} s a trial)",
                  ["variant", "median wall s", "runs"])
    for name, runs in times.items():
        table.add(name, median(runs), " ".join(f"{r:.1f}" for r in runs))
    table.notes.append(f"one more trial: {extra:.3f} s = {extra / per_trial_ideal:.2f}x its ideal (target <= {TARGET})")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick).render())
