"""MNIST-1D (Greydanus, "Scaling down deep learning", 2020) generated from a seed by the `mnist1d`
package, written once into the cache in the digits file layout with its official test split.
"""

from __future__ import annotations

import random
from pathlib import Path

import h5py
import numpy as np

from data.synthetic.digits import IMAGES, LABELS, TEST

# Bump whenever the written file changes, so cached files are not reused.
MNIST1D_FILE_VERSION = 1


def write_mnist1d(path: str | Path, seed: int, samples: int) -> None:
    """Write MNIST-1D made from `seed`: the official train part as `images` (N, 1, 1, 40) float32 and
    `labels` (N,) int64, and the official test part as `test/images` and `test/labels`."""
    # Imported here: only the first run on a machine needs it.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed, args.num_samples = seed, samples
    # make_dataset reseeds numpy's and Python's global generators: keep the caller's streams as they were.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        dataset = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    with h5py.File(path, "w") as f:
        f.attrs.update(source="mnist1d.data.make_dataset", seed=seed, version=MNIST1D_FILE_VERSION)
        f.create_dataset(IMAGES, data=dataset["x"][:, None, None].astype(np.float32))
        f.create_dataset(LABELS, data=dataset["y"].astype(np.int64))
        f.create_dataset(f"{TEST}/{IMAGES}", data=dataset["x_test"][:, None, None].astype(np.float32))
        f.create_dataset(f"{TEST}/{LABELS}", data=dataset["y_test"].astype(np.int64))
