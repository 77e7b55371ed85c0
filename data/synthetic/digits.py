"""scikit-learn's 8x8 digits (shipped inside the package, no download), written once into the
cache in the layout the digits kind reads from a user's file.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

IMAGES, LABELS = "images", "labels"  # dataset names inside the file
# A held-out test split, when a file has one, is a group of that name in the same layout
# (`test/images`, `test/labels`): never trained on, never used to select a model.
TEST = "test"
# Bump whenever the written file changes, so cached files are not reused.
DIGITS_FILE_VERSION = 1


def write_sklearn_digits(path: str | Path) -> None:
    """Write scikit-learn's digits as `images` (1797, 1, 8, 8) uint8 (values 0..16) and `labels` (1797,) int64."""
    # Imported here: only the first run on a machine needs it, and it takes a second to import.
    from sklearn.datasets import load_digits

    digits = load_digits()
    with h5py.File(path, "w") as f:
        f.attrs.update(source="sklearn.datasets.load_digits", version=DIGITS_FILE_VERSION)
        f.create_dataset(IMAGES, data=digits.images[:, None].astype(np.uint8))
        f.create_dataset(LABELS, data=digits.target.astype(np.int64))
