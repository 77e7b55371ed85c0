"""Pre-registers the search-efficiency target on MNIST-1D before any comparison: trains random
configurations of the benchmark's space (bench/mnist1d_space.py) to the full 27 epochs,
writes every validation curve to bench/mnist1d_calibration.json (committed), and fixes the
target as the 0.95 quantile of their best validation accuracies. The comparison reads the
target from that file and never recomputes it.

    python -m bench.mnist1d_calibration --configs 50
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import optuna

from bench.common import scratch
from bench.loop_throughput import LocalSession
from bench.mnist1d_space import CALIBRATION_FILE, problem_spec

QUANTILE = 0.95
SEED = 20261201  # the calibration's own draws: not any seed the comparison uses


def main(configs: int) -> dict:
    from trainables.trial.loop import train_loop
    from trainables.spec.schema import SearchSpec, trial_spec

    spec = SearchSpec.model_validate(problem_spec())
    space = {path: dist.to_optuna() for path, dist in spec.search.items()}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SEED))
    runs = []
    for index in range(configs):
        asked = study.ask(space)
        config = {path: spec.search[path].from_optuna(value) for path, value in asked.params.items()}
        session = LocalSession()
        started = time.perf_counter()
        with scratch("calibration") as folder:
            train_loop(trial_spec(spec, config), session, folder / "trial", cpus=1)
        curve = [r["val_accuracy"] for r in session.reports]
        runs.append({"config": config, "val_accuracy": curve, "seconds": time.perf_counter() - started})
        study.tell(asked, max(curve))
        print(f"{index + 1}/{configs}: best {max(curve):.4f} at epoch {int(np.argmax(curve)) + 1} "
              f"in {runs[-1]['seconds']:.1f} s  {config}", flush=True)
    bests = [max(r["val_accuracy"]) for r in runs]
    result = {"quantile": QUANTILE, "target": float(np.quantile(bests, QUANTILE)), "runs": runs}
    CALIBRATION_FILE.write_text(json.dumps(result, indent=1))
    print(f"target (0.95 quantile of {configs} best validation accuracies): {result['target']:.4f}; "
          f"median {np.median(bests):.4f}; below 0.6: {sum(b < 0.6 for b in bests)}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=50)
    main(parser.parse_args().configs)
