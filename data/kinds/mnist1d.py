"""The mnist1d data kind: MNIST-1D (Greydanus, "Scaling down deep learning", 2020) as 1-pixel-high images.

The `mnist1d` package generates the 5,000 signals of length 40 (10 classes) from a seed
(`data.synthetic.mnist1d`); they are written once to an HDF5 file in the cache in the digits
layout (`images` (N, 1, 1, 40), `labels` (N,)), with the official test split kept apart in the file's `test`
group, and from then on read exactly like a user's digits file (`data.kinds.digits`). The
official training part is split into train and validation by the usual seeded, stratified
split; selection sees validation only. The test split is exposed separately, to be used
once, for the best model.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from data.errors import DataError
from data.h5.cache import synthetic_file
from data.kinds.digits import DigitsDataConfig, ImageDataset, prepare_images, prepare_test_images
from data.kinds.registry import register_data_kind
from data.splits.index import IndexSplit, split_indices
from data.synthetic.digits import LABELS, TEST
from data.synthetic.mnist1d import MNIST1D_FILE_VERSION, write_mnist1d


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


@register_data_kind(Mnist1dDataConfig)
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
