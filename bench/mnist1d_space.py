"""The MNIST-1D search problem the search-efficiency benchmark compares methods on (issue 12):
1,000 training signals, 27 epochs, and the classifier space widened to what a user who does
not know it yet would try, so that many configurations train badly and good ones peak late.
One definition, used by the calibration (bench/mnist1d_calibration.py) and the comparison
(bench/search_efficiency.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.specs import SEARCH_SPACES

EPOCHS = 27
TRAIN_SIZE = 1000
# ASHA's rungs (and Hyperband's brackets) over 27 epochs: 3, 9, 27.
GRACE, REDUCTION = 3, 3
CALIBRATION_FILE = Path(__file__).with_name("mnist1d_calibration.json")
SPACE = {
    "training.lr": {"type": "loguniform", "low": 1.0e-5, "high": 0.3},
    "training.weight_decay": {"type": "loguniform", "low": 1.0e-5, "high": 0.3},
    "model.args.dropout": {"type": "uniform", "low": 0.0, "high": 0.7},
    "model.args.width": {"type": "choice", "values": [16, 32, 64]},
    "model.args.depth": {"type": "choice", "values": [2, 3]},
    "training.batch_size": {"type": "choice", "values": [32, 64, 128]},
}


def problem_spec(seed: int = 0) -> dict[str, Any]:
    """search_spaces/mnist1d.yaml on the benchmark's problem (no figures: they cost time)."""
    raw = yaml.safe_load((SEARCH_SPACES / "mnist1d.yaml").read_text())
    raw["experiment"] = "bench_mnist1d"
    raw["data"]["train_size"] = TRAIN_SIZE
    raw["training"].update(epochs=EPOCHS, seed=seed, figures_every=0)
    raw["search"] = dict(SPACE)
    raw["scheduler"] = {"type": "asha", "time_attr": "training_iteration", "grace_period": GRACE,
                        "reduction_factor": REDUCTION}
    return raw
