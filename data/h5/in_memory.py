"""Small data are read once per process and kept in memory, normalised.

Reading an item through h5py costs a few microseconds of selection overhead and every
normalisation op another couple; for small items (a 16x16x30 crop, an 8x8 digit) that is
most of the item's cost. When everything a dataset reads fits in ``PRELOAD_LIMIT_BYTES``,
it reads it once, normalises it once, and slices memory afterwards. Larger data stay on
disk and are read item by item. The limit is per process: each DataLoader worker and each
trial process holds its own copy.
"""

from __future__ import annotations

import os

import numpy as np

PRELOAD_LIMIT_BYTES = 512 * 2**20


def fits_in_memory(float32_values: int) -> bool:
    """Whether this many float32 values may be held in memory by one process."""
    limit = int(os.environ.get("HPSEARCH_PRELOAD_LIMIT_BYTES", PRELOAD_LIMIT_BYTES))
    return float32_values * 4 <= limit


def normalised(array: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(array - mean) * scale as a new float32 array; mean and scale broadcast over channels."""
    out = array.astype(np.float32)  # always a copy: the input may be a view we must not change
    out -= mean
    out *= scale
    return out
