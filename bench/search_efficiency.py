"""Search efficiency on MNIST-1D (bench/mnist1d_space.py): who finds a good model soonest.

The target accuracy was pre-registered before any comparison (bench/mnist1d_calibration.py:
the 0.95 quantile of the best validation accuracy of 50+ random configurations trained to
the full 27 epochs, committed in bench/mnist1d_calibration.json) and is read from that file.
At equal wall budget and concurrency 2, from the same space, with the same training code (the
service's loop), methods interleaved seed by seed:
- (a) the service's default method: TPE + its default scheduler (promotion-type ASHA, first
  rung at a quarter of the budget, reduction 3: rungs 7 and 21 of 27 epochs);
- (b) the service, random search without early stopping;
- (c) Optuna alone in one process: TPE + HyperbandPruner (3..27 epochs, factor 3), n_jobs=2;
- (d) bare Ray Tune as a Ray user writes it: OptunaSearch + ASHAScheduler (same rungs), which
  tells Optuna a stopped trial is COMPLETE at its low-fidelity last value.
Reported per method: median time to the target and how many seeds reached it, the best
validation accuracy by fixed times, trials started and epochs trained, and the accuracy on
the official test split of each run's best model (touched once per run, for that model).
Targets: (a) at least 3x faster to target than (b); (a) no slower than (c); (a) faster than (d).
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

import optuna
import torch

from bench.common import Table, launch_quietly, median, ray_cluster, scratch
from bench.mnist1d_space import CALIBRATION_FILE, EPOCHS, GRACE, REDUCTION, problem_spec
from tests.specs import recorded_epochs

SPEEDUP_TARGET = 3.0


class Run:
    """One method's run: every epoch's (seconds since start, validation accuracy), the trials
    it started, and the test accuracy of its best model."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []
        self.trials = 0
        self.test_accuracy = math.nan

    def time_to(self, target: float) -> float:
        return min((t for t, accuracy in self.points if accuracy >= target), default=math.inf)

    def best_by(self, seconds: float) -> float:
        return max((accuracy for t, accuracy in self.points if t <= seconds), default=0.0)


def method_spec(seed: int, budget_s: float, default: bool) -> dict:
    """(a) the service as shipped: TPE and the default scheduler; (b) random, no scheduler."""
    raw = problem_spec(seed)
    raw["budget"] = {"trials": 10_000, "time_limit_minutes": budget_s / 60, "max_concurrent": 2}
    raw["searcher"] = {"type": "optuna", "seed": seed} if default else {"type": "random", "seed": seed}
    if default:
        del raw["scheduler"]
    else:
        raw["scheduler"] = {"type": "none"}
    return raw


def service_run(seed: int, budget_s: float, default: bool) -> Run:
    with scratch("efficiency") as folder:
        return service_run_in(method_spec(seed, budget_s, default), folder)


def service_run_in(raw: dict, folder: Path) -> Run:
    """The service's search of ``raw`` in ``folder`` (its output in ``folder/out``, left there),
    timed from the call that starts it."""
    run = Run()
    started = time.time()
    summary = launch_quietly(raw, folder)
    for rows in recorded_epochs(folder / "out").values():
        run.trials += 1
        run.points += [(row["time"] - started, row["val_accuracy"]) for row in rows
                       if math.isfinite(row.get("val_accuracy", math.nan))]
    run.test_accuracy = ((summary.get("best") or {}).get("test") or {}).get("test_accuracy", math.nan)
    return run


class _Best:
    """The best (accuracy, checkpoint folder) seen by a method that keeps every checkpoint."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accuracy, self.folder = -1.0, None

    def offer(self, accuracy: float, folder: Path) -> None:
        with self.lock:
            if accuracy > self.accuracy:
                self.accuracy, self.folder = accuracy, folder


def _test_accuracy(folder: Path | None) -> float:
    from data import build_splits
    from trainables.trial.checkpoints import load_config, load_model
    from trainables.trial.loop import evaluate
    from trainables.spec.schema import SearchSpec

    if folder is None:
        return math.nan
    spec = SearchSpec.model_validate(load_config(folder))
    loader = torch.utils.data.DataLoader(build_splits(spec.data).test, batch_size=256)
    return evaluate(load_model(folder), loader, torch.device("cpu"))["accuracy"]


class _Session:
    """The loop's session outside the service: one callback per report."""

    rank, world_size = 0, 1

    def __init__(self, report: Callable[[dict[str, Any]], None]) -> None:
        self.report = report

    def stop_requested(self) -> bool:
        return False


def optuna_run(seed: int, budget_s: float) -> Run:
    """Optuna alone, TPE + Hyperband, two threads in one process."""
    from trainables.trial.loop import train_loop
    from trainables.spec.schema import SearchSpec, trial_spec

    spec = SearchSpec.model_validate(method_spec(seed, budget_s, default=True))
    space = {path: dist.to_optuna() for path, dist in spec.search.items()}
    run, best, lock = Run(), _Best(), threading.Lock()
    with scratch("optuna") as folder:
        started = time.time()

        def objective(trial: optuna.Trial) -> float:
            config = {path: spec.search[path].from_optuna(trial._suggest(path, dist)) for path, dist in space.items()}
            trial_folder = folder / str(trial.number)

            def report(metrics: dict[str, Any]) -> None:
                accuracy, epoch = metrics["val_accuracy"], metrics["epoch"]
                with lock:
                    run.points.append((time.time() - started, accuracy))
                best.offer(accuracy, trial_folder / f"epoch_{epoch:03d}")
                trial.report(accuracy, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            run.trials += 1
            train_loop(trial_spec(spec, config), _Session(report), trial_folder, cpus=1)
            return max(v for v in trial.storage.get_trial(trial._trial_id).intermediate_values.values())

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
            pruner=optuna.pruners.HyperbandPruner(min_resource=GRACE, max_resource=EPOCHS, reduction_factor=REDUCTION))
        study.optimize(objective, timeout=budget_s, n_jobs=2)
        run.test_accuracy = _test_accuracy(best.folder)
    return run


def bare_tune_run(seed: int, budget_s: float) -> Run:
    """Ray Tune as its documentation shows: OptunaSearch + ASHAScheduler, metric and mode on
    TuneConfig, the same loop reporting with tune.report."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from trainables.trial.loop import train_loop
    from trainables.spec.schema import SearchSpec, trial_spec

    spec = SearchSpec.model_validate(method_spec(seed, budget_s, default=True))
    run, best = Run(), _Best()
    with scratch("bare-tune") as folder:
        def trainable(config: dict[str, Any]) -> None:
            trial_folder = folder / "trials" / tune.get_context().get_trial_id()
            train_loop(trial_spec(spec, config), _Session(lambda metrics: tune.report(
                {**metrics, "folder": str(trial_folder)})), trial_folder, cpus=1)

        tuner = tune.Tuner(
            trainable,
            param_space={path: dist.to_tune() for path, dist in spec.search.items()},
            tune_config=tune.TuneConfig(
                metric="val_accuracy", mode="max", num_samples=10_000, max_concurrent_trials=2,
                search_alg=OptunaSearch(seed=seed), reuse_actors=True, time_budget_s=budget_s,
                scheduler=ASHAScheduler(time_attr="epoch", max_t=EPOCHS, grace_period=GRACE,
                                        reduction_factor=REDUCTION)),
            run_config=tune.RunConfig(storage_path=str(folder), name="bare", verbose=0),
        )
        started = time.time()
        results = tuner.fit()
        for result in results:
            frame = result.metrics_dataframe
            if frame is None or "val_accuracy" not in frame:
                continue
            run.trials += 1
            for row in frame.to_dict("records"):
                run.points.append((row["timestamp"] - started, row["val_accuracy"]))
                best.offer(row["val_accuracy"], Path(row["folder"]) / f"epoch_{int(row['epoch']):03d}")
        run.test_accuracy = _test_accuracy(best.folder)
    return run


def main(quick: bool = False, seeds: int = 5, budget_s: float = 75.0) -> Table:
    if quick:
        seeds, budget_s = 1, 12.0
    target = json.loads(CALIBRATION_FILE.read_text())["target"]
    methods = {
        "(a) service default: TPE + promotion": lambda seed: service_run(seed, budget_s, default=True),
        "(b) service: random, no early stopping": lambda seed: service_run(seed, budget_s, default=False),
        "(c) Optuna alone: TPE + Hyperband, n_jobs=2": lambda seed: optuna_run(seed, budget_s),
        "(d) bare Ray Tune: OptunaSearch + ASHA": lambda seed: bare_tune_run(seed, budget_s),
    }
    runs: dict[str, list[Run]] = {name: [] for name in methods}
    with ray_cluster(num_cpus=2):
        for seed in range(seeds):  # interleaved: every method sees the machine in the same state
            for name, method in methods.items():
                runs[name].append(method(seed))
    fractions = (0.25, 0.5, 1.0)
    table = Table(
        f"Search efficiency on MNIST-1D (1,000 training signals, 27 epochs): median of {seeds} seeds, "
        f"budget {budget_s:.0f} s, 2 at a time; target {target:.4f} (pre-registered)",
        ["method", "time to target (median s)", "reached", *[f"best val by {f * budget_s:.0f} s" for f in fractions],
         "trials started", "epochs trained", "test accuracy of best"],
    )
    medians = {}
    for name, results in runs.items():
        medians[name] = median([r.time_to(target) for r in results])
        table.add(name, medians[name], f"{sum(r.time_to(target) < math.inf for r in results)}/{len(results)}",
                  *[median([r.best_by(f * budget_s) for r in results]) for f in fractions],
                  median([r.trials for r in results]), median([len(r.points) for r in results]),
                  median([r.test_accuracy for r in results]))
    a, b, c, d = medians.values()
    table.notes.append(f"(b) / (a) time to target: {b / a:.2f}x (target >= {SPEEDUP_TARGET}x); "
                       f"(c) / (a): {c / a:.2f}x (target >= 1); (d) / (a): {d / a:.2f}x (target > 1)")
    table.notes.append("time 0 is the call that starts the search (Ray already running, as on a cluster); "
                       "an unreached target counts as infinite time")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=75.0)
    args = parser.parse_args()
    print(main(args.quick, args.seeds, args.budget_s).render())
