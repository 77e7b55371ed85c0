"""Train/validation splits of numbered items (clips, images): a seeded shuffle, per class if asked.

Unlike the hyperspectral kind, items here are independent samples, so a split of their
indices leaks nothing across the two sides.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class IndexSplit:
    """Which items of `source` are for training and which for validation; saved with a run."""

    source: str  # the HDF5 file the indices point into
    train: list[int]
    val: list[int]
    seed: int
    val_fraction: float
    stratified_by: str | None  # the labels whose classes were split one by one, if any

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))


def split_indices(
    count: int, val_fraction: float, seed: int, strata: np.ndarray | None = None
) -> tuple[list[int], list[int]]:
    """(train, val) sorted indices of `count` >= 2 items, about `val_fraction` of them (at least one) in val.

    With `strata` ((count,) class labels), each class is shuffled and split on its own, so
    both sides keep the class proportions (rounded per class). Same arguments, same split,
    on any machine.
    """
    if strata is None:
        groups = [list(range(count))]
    else:
        groups = [np.flatnonzero(strata == value).tolist() for value in np.unique(strata)]
    # random.Random with an int seed is stable across Python versions and platforms.
    rng = random.Random(seed)
    for group in groups:
        rng.shuffle(group)
    n_val = [round(val_fraction * len(group)) for group in groups]
    # Rounding per class can leave one side empty (tiny classes); move one item of the
    # largest class across.
    largest = max(range(len(groups)), key=lambda i: len(groups[i]))
    if sum(n_val) == 0:
        n_val[largest] = 1
    elif sum(n_val) == count:
        n_val[largest] -= 1
    val = [i for group, n in zip(groups, n_val) for i in group[:n]]
    train = [i for group, n in zip(groups, n_val) for i in group[n:]]
    return sorted(train), sorted(val)
