"""Which multi-objective sampler the service uses by default: Optuna's multi-objective TPE or
NSGA-II (and random search as the floor), by hypervolume after N trials on two cheap
two-objective functions, medians over seeds.

    python -m bench.mo_sampler [--seeds 7] [--trials 20 40]

Each sampler runs Optuna's own ask/tell loop (no Ray, no early stopping). ``toy_sizes`` is a
search like mae_sizes.yaml's (a size choice, a log learning rate, a weight decay; loss against
parameters); ``zdt1`` is the standard ZDT1 in 4 dimensions. Hypervolume is Optuna's (WFG) of
the trials' front against a fixed reference point, higher is better.
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume  # the measurement only; the service ranks with trainables/pareto.py

from trainables.pareto import nondominated_ranks

optuna.logging.set_verbosity(optuna.logging.WARNING)
SIZES = {"tiny": 0.5, "small": 2.0, "base": 8.0, "large": 30.0}  # millions of parameters


def toy_sizes(trial: optuna.Trial) -> tuple[float, float]:
    size = trial.suggest_categorical("size", list(SIZES))
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    wd = trial.suggest_float("weight_decay", 0.0, 0.3)
    best_lr = 3e-3 / math.sqrt(SIZES[size])  # larger models want smaller rates
    loss = 0.2 + 0.4 / SIZES[size] ** 0.5 + 0.15 * (math.log10(lr / best_lr)) ** 2 + 0.3 * (wd - 0.1) ** 2
    return loss, math.log10(SIZES[size] * 1e6)


def zdt1(trial: optuna.Trial) -> tuple[float, float]:
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(4)]
    g = 1 + 9 * sum(x[1:]) / 3
    return x[0], g * (1 - math.sqrt(x[0] / g))


PROBLEMS = {"toy_sizes": (toy_sizes, (2.0, 8.0)), "zdt1": (zdt1, (1.1, 11.0))}


def samplers(seed: int) -> dict[str, optuna.samplers.BaseSampler]:
    return {"motpe": optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
            "nsga2": optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
            "random": optuna.samplers.RandomSampler(seed=seed)}


def hypervolume(values: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    points = np.array([v for v in values if all(a < r for a, r in zip(v, reference))])
    if len(points) == 0:
        return 0.0
    front = points[[r == 0 for r in nondominated_ranks(points.tolist())]]
    return float(compute_hypervolume(front, np.array(reference)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=7)
    parser.add_argument("--trials", type=int, nargs="+", default=[20, 40])
    args = parser.parse_args()
    budget = max(args.trials)
    for problem, (function, reference) in PROBLEMS.items():
        results: dict[str, dict[int, list[float]]] = {}
        for seed in range(args.seeds):
            for name, sampler in samplers(seed).items():
                study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
                study.optimize(function, n_trials=budget)
                values = [tuple(t.values) for t in study.trials]
                for n in args.trials:
                    results.setdefault(name, {}).setdefault(n, []).append(hypervolume(values[:n], reference))
        for name, by_n in results.items():
            figures = ", ".join(f"{n} trials: {statistics.median(v):.4f}" for n, v in by_n.items())
            print(f"{problem:10s} {name:7s} median hypervolume over {args.seeds} seeds: {figures}")


if __name__ == "__main__":
    main()
