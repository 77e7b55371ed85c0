"""The mnist1d data kind: MNIST-1D (Greydanus, "Scaling down deep learning", 2020) as 1-pixel-high images.

The `mnist1d` package generates the 5,000 signals of length 40 (10 classes) from a seed;
they are written once to an HDF5 file in the cache in the digits layout (`images`
(N, 1, 1, 40), `labels` (N,)), with the official test split kept apart in the file's `test`
group, and from then on read exactly like a user's digits file (`data.digits`). The
official training part is split into train and validation by the usual seeded, stratified
split; selection sees validation only. The test split is exposed separately, to be used
once, for the best model.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from data.digits import (
    IMAGES,
    LABELS,
    TEST,
    DigitsDataConfig,
    ImageDataset,
    prepare_images,
    prepare_test_images,
)
from data.errors import DataError
from data.h5_arrays import synthetic_file
from data.index_split import IndexSplit, split_indices

# Bump whenever the written file changes, so cached files are not reused.
MNIST1D_FILE_VERSION = 1


class Mnist1dDataConfig(BaseModel):
    """The `data:` section of a search spec on MNIST-1D (`kind: mnist1d`).

    Items are {"images": (1, 1, 40) float32, "labels": () int64}, like the digits kind's.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["mnist1d"] = "mnist1d"  # selects this data kind
    seed: int = 42  # the generator's seed; 42 is the paper's dataset
    samples: int = Field(5000, ge=20)  # signals generated, official train part then test part (the paper's 5,000)
    cache_dir: str | None = None  # where the file goes; default $HPSEARCH_DATA_DIR or ~/.cache/hpsearch/data
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of each class of the official train part used for validation
    split_seed: int = 0  # seed of the per-class shuffle that makes the split
    # Training signals kept after the split (a seeded draw from the train side; the
    # validation side does not change): null = all of them. Fewer signals make a harder
    # benchmark, where a search's choices matter more.
    train_size: int | None = Field(None, ge=1)
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes per trial


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


def build_mnist1d_datasets(cfg: Mnist1dDataConfig) -> tuple[ImageDataset, ImageDataset, IndexSplit, ImageDataset]:
    """Generate the file on first use and return (train, val, split, test)."""
    settings = {"seed": cfg.seed, "samples": cfg.samples}
    path = synthetic_file("mnist1d", MNIST1D_FILE_VERSION, settings, cfg.cache_dir, write_mnist1d)
    # From here on the file is read as a user's digits file would be.
    prepared = prepare_images(DigitsDataConfig(path=str(path)))
    test = prepare_test_images(prepared)
    if test is None:
        raise DataError(f"{path}: no '{TEST}' group; delete the file to have it written again")
    train_ids, val_ids = split_indices(prepared.shape[0], cfg.val_fraction, cfg.split_seed, strata=prepared.labels)
    if cfg.train_size is not None:
        if cfg.train_size > len(train_ids):
            raise DataError(f"data.train_size is {cfg.train_size} but the split leaves {len(train_ids)} training "
                            f"signals (samples {cfg.samples}, val_fraction {cfg.val_fraction})")
        # random.Random with an int seed is stable across platforms, as the split itself.
        train_ids = sorted(random.Random(cfg.split_seed).sample(train_ids, cfg.train_size))
    split = IndexSplit(prepared.path, train_ids, val_ids, cfg.split_seed, cfg.val_fraction, stratified_by=LABELS)
    return (ImageDataset(prepared, train_ids), ImageDataset(prepared, val_ids), split,
            ImageDataset(test, range(test.shape[0])))
