"""Hypervolume over time of the multi-objective search against random search and against
Optuna alone, at equal wall time on a simulated clock: medians over seeds.

    python -m bench.mo_hypervolume [--seeds 7] [--quick]

Target (issue 19): the service's multi-objective default, multi-objective TPE + the ``pareto``
scheduler, has a higher median hypervolume than both baselines at every checkpoint of the
budget (25%, 50%, 75% and 100%).

Methods, each driven by bench/replay.py (the service's own scheduler policies and sampler
view, N workers, the start overhead paid at every issue and resume, the live searcher's time
limit):

- (a) the service default for several objectives: MOTPE (TPE start-up 5, each size once) and
  ``pareto`` at its defaults (first rung max_t / 4, reduction factor 3, trust 0.3 over 10 pairs);
- (b) random search, every trial trained to the end;
- (c) Optuna alone: MOTPE with Optuna's own random start-up, every trial trained to the end.

The problem, ``sized_hartmann``: two objectives, both minimised. A configuration is
(x0, x1, x2) in [0, 1]^3 and a ``size`` choice (tiny, small, base, large; ``SIZES``), like the
MAE's model sizes:

- quality ``f`` at fidelity z (an epoch, 1..100) = MF-Hartmann-3 at the "good" preset
  (bench/mfhartmann.py) at (x0, x1 + shift(size), x2), plus a floor that falls with size
  (1 / sqrt(millions of parameters)). Bigger is better: the large's best f is 1.2 below the
  tiny's. The shift moves the best x1 with the size (by up to 0.3 across sizes), as larger models
  want smaller learning rates: what a small model taught about x1 is only roughly right for a
  large one, so the sampler must learn the interaction. Early fidelities are predictive but
  noisy: on random configurations of MF-Hartmann-3 "good" the Spearman correlation of f at epoch 25 (the first rung)
  with f at epoch 100 is about 0.78, at epoch 10 about 0.5; the preset's bias and noise only
  ever make a low fidelity worse than the final value, so looking at many configurations
  briefly cannot buy hypervolume with lucky noise.
- cost = log10(parameters), fixed by the size (as the service's ``cost_params``).
- time: the size sets the seconds per epoch (0.4 s tiny to 2 s large, 5x), and every issue
  or resume pays a start of 10 s (bench/replay.py's Hartmann start: a tenth of a full trial).
  2 workers, 900 s: about 15 full trials of random search. The replay's searcher has one cost
  group (no ``resources.depends_on``), so it estimates a trial's cost from the median epoch.

Hypervolume: of the trials' points reported by a time (each trial's best f so far and its
cost, ``Run.points_by``) against the fixed reference point ``REFERENCE`` = (f 0, 8 = log10 of
100M parameters), with bench/mo_sampler.hypervolume (Optuna's WFG), higher is better.
f = 0 is the worst value MF-Hartmann-3 takes at the full fidelity, so a point counts only
where it beats the worst configuration of the space at the largest size. The true front (each
size's optimum) has ``true_front_hypervolume()``, about 7.3, which no run can exceed.

Seeds are search seeds 0..n-1; every trial's sampler seed is mixed from (seed, trial number)
through numpy's SeedSequence (trainables/search/sampling.py), so seeds are independent and the
three methods of a seed share nothing but the seed.
"""

from __future__ import annotations

import argparse
import math
import statistics
from typing import Any

from bench import mfhartmann
from bench.common import Table
from bench.mo_sampler import hypervolume
from bench.replay import (
    HARTMANN_START_S,
    Corpus,
    Method,
    Run,
    _distributions,
    replay,
    scheduler,
)
from trainables.objective import Objective

# size -> (millions of parameters, simulated seconds per epoch, shift of x1 before Hartmann).
SIZES: dict[str, tuple[float, float, float]] = {
    "tiny": (0.5, 0.4, -0.15),
    "small": (2.0, 0.7, -0.05),
    "base": (8.0, 1.2, 0.05),
    "large": (30.0, 2.0, 0.15),
}
PRESET = "good"
REFERENCE = (0.0, 8.0)  # (f, log10 parameters): worse than every point that should count
BUDGET_S = 900.0
WORKERS = 2
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)  # fractions of the budget the table compares at
SEEDS = 7
QUICK_BUDGET_S, QUICK_SEEDS = 300.0, 2

SPACE: dict[str, Any] = {**mfhartmann.SPACE, "size": {"type": "choice", "values": list(SIZES)}}
QUALITY = Objective("f", "min")
COST = Objective("cost_params_log10", "min")


def floor(size: str) -> float:
    """What the size adds to f at every fidelity: less for bigger models."""
    return 1.0 / math.sqrt(SIZES[size][0])


def log_params(size: str) -> float:
    return math.log10(SIZES[size][0] * 1e6)


def curve(config: dict[str, Any]) -> list[float]:
    """f at epochs 1..100 of a configuration (spec values)."""
    size = config["size"]
    x1 = min(1.0, max(0.0, config["x1"] + SIZES[size][2]))  # the shifted optimum stays inside [0, 1]
    return [v + floor(size) for v in mfhartmann.curve([config["x0"], x1, config["x2"]], PRESET)]


def sized_hartmann(budget_s: float = BUDGET_S, workers: int = WORKERS) -> Corpus:
    """The two-objective problem of the module docstring, as a replay corpus."""
    return Corpus(name="sized-hartmann", metric=QUALITY.metric, mode=QUALITY.mode, max_t=mfhartmann.Z_MAX,
                  space=_distributions(SPACE), curve_of=curve,
                  seconds_of=lambda config: [SIZES[config["size"]][1]] * mfhartmann.Z_MAX,
                  start_s=HARTMANN_START_S, workers=workers, budget_s=budget_s,
                  report_at=[f * budget_s for f in CHECKPOINTS], costs=[COST],
                  costs_of=lambda config: [log_params(config["size"])])


def true_front_hypervolume() -> float:
    """The hypervolume of the problem's true front: each size at Hartmann's optimum, whose x1
    lies inside [0, 1] for every shift; an upper bound on every run's."""
    return hypervolume([(mfhartmann.OPTIMUM + floor(s), log_params(s)) for s in SIZES], REFERENCE)


def methods() -> list[Method]:
    return [
        Method("(a) service default: MOTPE + pareto", {"type": "pareto"}, "optuna"),
        Method("(b) random, no early stopping", scheduler("none"), "random"),
        Method("(c) Optuna alone: MOTPE, no early stopping", scheduler("none"), "optuna", spread_startup=False),
    ]


def hypervolume_by(run: Run, seconds: float) -> float:
    return hypervolume(run.points_by(seconds), REFERENCE)


def run_all(corpus: Corpus, seeds: int) -> dict[str, list[Run]]:
    """Every method on every seed; runs of one seed side by side (the clock is simulated, so
    the order does not matter for the figures, only for reading them)."""
    runs: dict[str, list[Run]] = {m.name: [] for m in methods()}
    for seed in range(seeds):
        for method in methods():
            runs[method.name].append(replay(corpus, method, seed))
    return runs


def table(corpus: Corpus, runs: dict[str, list[Run]]) -> Table:
    seeds = len(next(iter(runs.values())))
    times = corpus.report_at
    result = Table(
        f"Multi-objective search: median hypervolume over {seeds} seeds on sized MF-Hartmann-3 "
        f"(f against log10 parameters), {corpus.workers} workers, budget {corpus.budget_s:g} simulated s",
        ["method", *[f"HV at {f:.0%} ({t:g} s)" for f, t in zip(CHECKPOINTS, times)],
         "trials started", "epochs trained", "CPU s/run"])
    hv = {name: [[hypervolume_by(r, t) for t in times] for r in rs] for name, rs in runs.items()}
    medians = {name: [statistics.median(h[i] for h in per_seed) for i in range(len(times))]
               for name, per_seed in hv.items()}
    for name, rs in runs.items():
        result.add(name, *[round(m, 3) for m in medians[name]],
                   statistics.median(r.trials_started for r in rs), statistics.median(r.epochs_trained for r in rs),
                   round(statistics.median(r.cpu_s for r in rs), 2))
    service, *baselines = runs
    higher = [all(medians[service][i] > medians[b][i] for b in baselines) for i in range(len(times))]
    # Paired by seed: how often (a) beats the better baseline of that seed (a median can hide a split).
    wins = [sum(hv[service][s][i] > max(hv[b][s][i] for b in baselines) for s in range(seeds))
            for i in range(len(times))]
    result.add("(a) higher than (b) and (c)?", *["yes" if h else "no" for h in higher], "", "", "")
    result.add("seeds where (a) beats both", *[f"{w}/{seeds}" for w in wins], "", "", "")
    result.notes += [
        f"target: (a) higher than both at every checkpoint: {'met' if all(higher) else 'not met'}",
        f"reference point {REFERENCE}; the true front's hypervolume is {true_front_hypervolume():.3f}",
        f"start overhead {corpus.start_s:g} s per issue or resume; seconds per epoch "
        + ", ".join(f"{s} {v[1]:g}" for s, v in SIZES.items()) + f"; {corpus.max_t} epochs",
        f"seeds 0..{seeds - 1}, sampler seeds mixed through SeedSequence; TPE start-up 5 trials",
    ]
    return result


def main(quick: bool = False, seeds: int = SEEDS) -> Table:
    budget_s = QUICK_BUDGET_S if quick else BUDGET_S
    seeds = QUICK_SEEDS if quick else seeds
    corpus = sized_hartmann(budget_s)
    return table(corpus, run_all(corpus, seeds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 300 s: checks it runs (figures mean little)")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    args = parser.parse_args()
    print(main(args.quick, args.seeds).render())
