"""Tests of the mnist1d data kind: MNIST-1D generated from a seed, written once to HDF5, its
official test split kept apart (real package, real HDF5, no Ray). The YAML's dry run is
tests/test_search_spaces.py's, which runs every shipped file."""

from __future__ import annotations

import random
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import DataError, DigitsDataConfig, Mnist1dDataConfig, build_splits
from models import create_model


@pytest.fixture(scope="module")
def default_splits(tmp_path_factory: pytest.TempPathFactory):
    """The paper's dataset (seed 42, 5,000 signals), generated once for this module."""
    return build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path_factory.mktemp("mnist1d"))))


def signals(path: str, key: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[key][()]


def test_paper_sizes_and_digits_layout(default_splits) -> None:
    # 5,000 signals: 4,000 official training ones (80% train, 20% validation), 1,000 test.
    assert (len(default_splits.train), len(default_splits.val), len(default_splits.test)) == (3200, 800, 1000)
    for dataset in (default_splits.train, default_splits.val, default_splits.test):
        item = dataset[0]
        assert item["images"].shape == (1, 1, 40) and item["images"].dtype == torch.float32
        assert item["labels"].dtype == torch.int64 and 0 <= int(item["labels"]) <= 9
    with h5py.File(default_splits.manifest.source, "r") as f:
        assert f["images"].shape == (4000, 1, 1, 40) and f["labels"].shape == (4000,)
        assert f["test/images"].shape == (1000, 1, 1, 40) and f["test/labels"].shape == (1000,)
        assert f.attrs["seed"] == 42


def test_test_split_is_apart_from_train_and_validation(default_splits) -> None:
    manifest = default_splits.manifest
    assert not set(manifest.train) & set(manifest.val)
    assert sorted(manifest.train + manifest.val) == list(range(4000))
    # The test signals are other signals, not other indices of the same ones.
    train_part = {row.tobytes() for row in signals(manifest.source, "images")}
    assert not any(row.tobytes() in train_part for row in signals(manifest.source, "test/images"))
    # Standardised with the training part's statistics only: a test item is its raw signal
    # mapped by the same affine map as a training item.
    train_set, test_set = default_splits.train, default_splits.test
    mean, std = train_set.prepared.channel_mean[0], train_set.prepared.channel_std[0]
    assert test_set.prepared.channel_mean == train_set.prepared.channel_mean
    raw_test = signals(manifest.source, "test/images")[0]
    torch.testing.assert_close(test_set[0]["images"], torch.from_numpy((raw_test - mean) / std))
    assert int(test_set[0]["labels"]) == int(signals(manifest.source, "test/labels")[0])


def test_generated_from_the_seed_once(tmp_path: Path) -> None:
    first = build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path), samples=200))
    path = Path(first.manifest.source)
    written = path.stat().st_mtime_ns
    again = build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path), samples=200))
    assert again.manifest.source == str(path) and path.stat().st_mtime_ns == written  # read, not rewritten
    other = build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path), samples=200, seed=7))
    assert other.manifest.source != str(path)
    assert not np.array_equal(signals(other.manifest.source, "images"), signals(str(path), "images"))
    # The same seed makes the same signals in a fresh cache.
    fresh = build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path / "fresh"), samples=200))
    np.testing.assert_array_equal(signals(fresh.manifest.source, "images"), signals(str(path), "images"))
    assert (len(first.train) + len(first.val), len(first.test)) == (160, 40)


def test_generation_leaves_the_callers_random_streams_alone(tmp_path: Path) -> None:
    np.random.seed(123)
    random.seed(123)
    expected_numpy, expected_python = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path), samples=100))  # reseeds both inside
    assert (np.random.rand(), random.random()) == (expected_numpy, expected_python)


def test_train_size_draws_from_the_train_side_and_keeps_validation(tmp_path: Path) -> None:
    full = build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path), samples=500))
    fewer = build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path), samples=500, train_size=100))
    assert len(fewer.train) == 100 and set(fewer.manifest.train) < set(full.manifest.train)
    assert fewer.manifest.val == full.manifest.val and len(fewer.test) == len(full.test)
    with pytest.raises(DataError, match=r"train_size is 1000 but the split leaves 3\d\d training"):
        build_splits(Mnist1dDataConfig(cache_dir=str(tmp_path), samples=500, train_size=1000))


def test_only_kinds_with_a_test_split_expose_one(default_splits, tmp_path: Path) -> None:
    assert default_splits.test is not None
    assert build_splits(DigitsDataConfig(cache_dir=str(tmp_path))).test is None


def test_image_classifier_learns_the_signals(default_splits) -> None:
    """The 1 x 40 images fit image_classifier as they are, and a few epochs already beat the
    paper's logistic regression (0.32) and MLP (0.68) on the official test split."""
    torch.manual_seed(0)
    model = create_model("image_classifier", width=16, depth=3, dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(3):
        for batch in DataLoader(default_splits.train, batch_size=64, shuffle=True):
            loss = model(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert model.evaluation(DataLoader(default_splits.test, batch_size=500))["accuracy"] > 0.75
