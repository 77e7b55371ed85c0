"""The driver's cost per trial as a search grows, with TPE (issue 21, item 5).

The sleeper workload of bench/trial_overhead.py (10 reports x 0.1 s, 2 at a time, no early
stopping), but sampled by TPE over four hyperparameters, side by side:
- the service's whole search (``launch_search``, ``searcher.type: optuna``);
- bare Ray Tune with actor reuse and ``OptunaSearch`` (TPE, its in-memory study).
A Tune callback reads the driver process's CPU time (every thread of it: Tune's loop, the
searcher, the record, the MLflow and Optuna writers) at each trial's start. The cost per
trial around trial k is the CPU spent between the starts of trials k - w/2 and k + w/2
(clipped to the search), over the trials in between. Target: the service's cost at the
1,000th trial at most 1.5x its cost at the 100th.

    python -m bench.driver_cost               # 1,000 trials each (about 10 minutes a variant on 2 CPUs)
    python -m bench.driver_cost --quick       # 20 trials: checks it runs
    python -m bench.driver_cost --sampler     # no Ray: the searcher's ms per sample at 100 and 1,000 trials
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ray.tune import Callback

from bench.common import Table, launch_quietly, ray_cluster, scratch
from bench.trial_overhead import Workload, service_spec

TARGET = 1.5
FULL = Workload(trials=1000, reports=10, work_s=0.1)
QUICK = Workload(trials=20, reports=3, work_s=0.05)
SPACE = {
    "model.args.score": {"type": "uniform", "low": 0.0, "high": 1.0},
    "training.lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-1},
    "training.weight_decay": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-1},
    "training.batch_size": {"type": "choice", "values": [16, 32, 64]},
}


class DriverClock(Callback):
    """The driver process's CPU seconds (all threads) at each trial start, in start order."""

    def __init__(self) -> None:
        self.cpu: list[float] = []

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.cpu.append(time.process_time())

    def per_trial_ms(self, k: int, window: int) -> float:
        """CPU ms per trial between the starts of trials k - window/2 and k + window/2 (1-based, clipped)."""
        last = len(self.cpu)
        low, high = max(1, k - window // 2), min(last, k + window // 2)
        return 1000 * (self.cpu[high - 1] - self.cpu[low - 1]) / (high - low)


def run_service(work: Workload, clock: DriverClock) -> float:
    from trainables.search.run import SearchOptions

    raw = service_spec(work)
    raw["search"] = dict(SPACE)
    raw["searcher"] = {"type": "optuna", "seed": 0}
    with scratch("driver") as folder:
        started = time.perf_counter()
        summary = launch_quietly(raw, folder, SearchOptions(out_dir=folder / "out", verbose=0, callbacks=[clock]))
        assert sum(t["status"] == "finished" for t in summary["trials"]) == work.trials
    return time.perf_counter() - started


def run_bare_tune(work: Workload, clock: DriverClock) -> float:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config: dict) -> None:
        for step in range(work.reports):
            time.sleep(work.work_s)
            tune.report({"score": config["model.args.score"] * (step + 1)})

    space = {"model.args.score": tune.uniform(0.0, 1.0), "training.lr": tune.loguniform(1e-4, 1e-1),
             "training.weight_decay": tune.loguniform(1e-5, 1e-1), "training.batch_size": tune.choice([16, 32, 64])}
    with scratch("driver-bare") as folder:
        tuner = tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(
            metric="score", mode="max", search_alg=OptunaSearch(seed=0), num_samples=work.trials,
            max_concurrent_trials=work.concurrency, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(folder), name="bare", verbose=0, callbacks=[clock]))
        started = time.perf_counter()
        results = tuner.fit()
        assert len(results) == work.trials and not results.errors
    return time.perf_counter() - started


def sampler_cost(sizes: tuple[int, ...] = (100, 1000), samples: int = 5) -> Table:
    """Where the searcher's share of a trial goes, without Ray: a record of ``n`` ended trials
    of this workload, then ``samples`` times one more trial ends and a configuration is
    sampled (the view of the record, then TPE on it), beside TPE on a plain in-memory study of
    the same trials (Optuna's own ``add_trials``). Medians, ms."""
    import statistics

    import numpy as np
    import optuna

    from bench.trial_overhead import service_spec
    from tests.specs import write_spec
    from trainables.results.record import FINISHED, SearchRecord
    from trainables.search.sampling import new_sampler, sample
    from trainables.search.schedulers import build_scheduler
    from trainables.search.searcher import StudySearcher
    from trainables.spec.loading import load_spec

    table = Table(f"The searcher's ms per sample with TPE (no Ray; medians of {samples})",
                  ["trials in the record", "view (kept)", "TPE on the view", "sample, all",
                   "TPE alone on an add_trials study"])
    for n in sizes:
        with scratch("sampler") as folder:
            raw = {**service_spec(FULL), "search": dict(SPACE), "searcher": {"type": "optuna", "seed": 0}}
            spec, _ = load_spec(str(write_spec(folder, raw)))
            record = SearchRecord(folder / "out", spec.objective).open_for_writing()
            space = {path: dist.to_optuna() for path, dist in spec.search.items()}
            rng = np.random.default_rng(0)

            def one_more(i: int) -> None:
                config = {path: spec.search[path].from_optuna(
                    optuna.samplers.RandomSampler(seed=i).sample_independent(None, None, path, dist))
                    for path, dist in space.items()}
                record.add_trial(f"t{i}", config)
                for epoch in range(1, FULL.reports + 1):
                    record.add_epoch(f"t{i}", epoch, {spec.metric: float(rng.random()), "epoch": epoch}, None)
                record.end_trial(f"t{i}", FINISHED, "budget")

            for i in range(n):
                one_more(i)
            searcher = StudySearcher(spec, folder / "out", record, build_scheduler(spec, record).policy)
            searcher._view()  # the first view observes every trial
            times: dict[str, list[float]] = {name: [] for name in table.columns[1:]}
            for i in range(n, n + samples):
                one_more(i)
                started = time.perf_counter()
                view = searcher._view()
                viewed = time.perf_counter()
                sample(view, searcher._space, new_sampler("optuna", 0, i, 10))
                sampled = time.perf_counter()
                plain = optuna.create_study(directions=[spec.objective.optuna_direction])
                plain.add_trials(view.trials[:-1])  # without the trial just asked
                asked = time.perf_counter()
                sample(plain, searcher._space, new_sampler("optuna", 0, i, 10))
                for name, seconds in zip(times, (viewed - started, sampled - viewed, sampled - started,
                                                 time.perf_counter() - asked)):
                    times[name].append(1000 * seconds)
            searcher.projection.flush()
            record.close("interrupted")
        table.add(n, *(statistics.median(values) for values in times.values()))
    table.notes.append("TPE's own cost grows with the trials it weighs (its Parzen estimators, and Optuna's "
                       "intersection search space, recomputed by each per-trial seeded sampler)")
    return table


def main(quick: bool = False, work: Workload | None = None) -> Table:
    work = work or (QUICK if quick else FULL)
    early, late, window = (5, work.trials, 6) if quick else (100, work.trials, 100)
    clocks = {"service: whole search (launch_search, TPE, no early stopping)": DriverClock(),
              "bare Ray Tune, reuse_actors=True, OptunaSearch (TPE)": DriverClock()}
    walls = {}
    with ray_cluster(num_cpus=work.concurrency):
        for (name, clock), run in zip(clocks.items(), (run_service, run_bare_tune)):
            walls[name] = run(work, clock)
    table = Table(f"Driver CPU per trial with TPE: {work.trials} trials x {work.reports} reports x {work.work_s} s, "
                  f"{work.concurrency} at a time",
                  ["variant", "wall s", f"ms/trial at trial {early}", f"ms/trial at trial {late}", "ratio"])
    for name, clock in clocks.items():
        at_early, at_late = clock.per_trial_ms(early, window), clock.per_trial_ms(late, window)
        table.add(name, walls[name], at_early, at_late, at_late / at_early)
    table.notes.append(f"driver CPU (all its threads) per trial over a window of {window} trial starts around each; "
                       f"target: the service's ratio <= {TARGET}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=None, help="trials per variant (default 1,000)")
    parser.add_argument("--sampler", action="store_true", help="only the searcher's ms per sample, without Ray")
    args = parser.parse_args()
    if args.sampler:
        print(sampler_cost().render())
        raise SystemExit(0)
    chosen = Workload(trials=args.trials, reports=FULL.reports, work_s=FULL.work_s) if args.trials else None
    print(main(args.quick, chosen).render())
