"""Trial overhead: N trials x R reports with W seconds of work between reports, 2 at a time.

Wall time over the ideal (N * R * W / 2), side by side for
- the service's own trial path (``launch_search``: spec, trial function, generic loop with a
  checkpoint per report, the search's record, MLflow tracking, the Optuna study), random
  search and no early stopping so every trial reports R times;
- bare Ray Tune with its default settings (a new actor per trial);
- bare Ray Tune with actor reuse.
The service's row is the whole search (spec and data checks, MLflow set-up, summary, best
export and report included); a second row is its Tune run alone, comparable with the bare rows.
Target: the service at most 1.10 (Ray's own bookkeeping release test allows 1.28).
bench/trial_marginal.py measures what one more trial costs.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import yaml
from ray.tune import Callback

from bench.common import Stopwatch, Table, interleaved, launch_quietly, median, ray_cluster, scratch
from tests.specs import SEARCH_SPACES

TARGET = 1.10


@dataclass(frozen=True)
class Workload:
    trials: int
    reports: int
    work_s: float
    concurrency: int = 2

    @property
    def ideal_s(self) -> float:
        return self.trials * self.reports * self.work_s / self.concurrency


FULL = Workload(trials=1000, reports=10, work_s=0.1)
QUICK = Workload(trials=6, reports=3, work_s=0.05)
FULL_REPEATS = 3



def service_spec(work: Workload) -> dict:
    """digits.yaml with a model whose every training step is a ``work_s`` sleep: one step per
    epoch, one report per epoch, a tiny validation split."""
    raw = yaml.safe_load((SEARCH_SPACES / "digits.yaml").read_text())
    raw.update(experiment="bench_overhead", imports=["bench.models"])
    raw["model"] = {"name": "sleeper", "args": {"work_s": work.work_s, "score": 0.5}}
    raw["data"].update(val_fraction=0.02)
    raw["training"].update(epochs=work.reports, max_steps_per_epoch=1, warmup_epochs=0, batch_size=16)
    raw["search"] = {"model.args.score": {"type": "uniform", "low": 0.0, "high": 1.0}}
    raw["metric"], raw["mode"] = "val_score", "max"
    raw["searcher"] = {"type": "random", "seed": 0}
    raw["scheduler"] = {"type": "none"}
    raw["budget"] = {"trials": work.trials, "time_limit_minutes": None, "max_concurrent": work.concurrency}
    raw["resources"] = {"workers": 1, "cpus_per_worker": 1, "use_gpu": "no"}
    return raw


class TuneFit(Callback):
    """Driver clock of Tune's own run inside a search: its setup to its experiment end."""

    def setup(self, **info: Any) -> None:
        self.start = time.perf_counter()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def run_service(work: Workload, trial_phase: list[float]) -> float:
    """The whole search's wall time (checks, MLflow, Tune, summary, report); Tune's part of it
    is appended to ``trial_phase``."""
    from trainables.search.run import SearchOptions

    fit = TuneFit()
    with scratch("overhead") as folder:
        options = SearchOptions(out_dir=folder / "out", verbose=0, callbacks=[fit])
        with Stopwatch() as watch:
            summary = launch_quietly(service_spec(work), folder, options)
        done = sum(t["status"] == "finished" for t in summary["trials"])
        assert done == work.trials, f"service: {done} of {work.trials} trials finished"
    trial_phase.append(fit.seconds)
    return watch.seconds


def run_bare_tune(work: Workload, reuse_actors: bool) -> float:
    from ray import tune

    def trainable(config: dict) -> None:
        for step in range(work.reports):
            time.sleep(work.work_s)
            tune.report({"score": config["x"] * step})

    with scratch("bare-tune") as folder:
        tuner = tune.Tuner(
            trainable,
            param_space={"x": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(num_samples=work.trials, max_concurrent_trials=work.concurrency,
                                        reuse_actors=reuse_actors),
            run_config=tune.RunConfig(storage_path=str(folder), name="bare", verbose=0),
        )
        with Stopwatch() as watch:
            results = tuner.fit()
        assert len(results) == work.trials and not results.errors
    return watch.seconds


def main(quick: bool = False, work: Workload | None = None) -> Table:
    work = work or (QUICK if quick else FULL)
    # The full workload takes about 9 to 10 minutes a variant on 2 CPUs: about 90 minutes for 3 runs each.
    repeats = 1 if quick else FULL_REPEATS
    service_trial_phase: list[float] = []
    with ray_cluster(num_cpus=work.concurrency):
        times = interleaved({
            "service: whole search (launch_search, random, no early stopping)":
                lambda: run_service(work, service_trial_phase),
            "bare Ray Tune, default settings": lambda: run_bare_tune(work, reuse_actors=False),
            "bare Ray Tune, reuse_actors=True": lambda: run_bare_tune(work, reuse_actors=True),
        }, repeats)
    table = Table(
        f"Trial overhead: {work.trials} trials x {work.reports} reports x {work.work_s} s work, "
        f"{work.concurrency} at a time (ideal {work.ideal_s:.0f} s)",
        ["variant", "median wall s", "runs", "wall / ideal", "per-trial overhead s"],
    )
    times = {**dict(list(times.items())[:1]),
             "service: its trials (Tune's fit inside the search)": service_trial_phase,
             **dict(list(times.items())[1:])}
    for name, runs in times.items():
        wall = median(runs)
        overhead = (wall - work.ideal_s) * work.concurrency / work.trials
        table.add(name, wall, " ".join(f"{r:.1f}" for r in runs), wall / work.ideal_s, overhead)
    table.notes.append(f"target: service wall / ideal <= {TARGET}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick).render())
