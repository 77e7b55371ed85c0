"""Finding and validating the HDF5 files that hold image cubes.

A source is one HDF5 file with one dataset laid out either (N, bands, height, width)
or (bands, height, width); the latter is treated as N = 1 so everything downstream
sees cubes addressed by (source index, cube index).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from data.errors import DataError

SUFFIXES = (".h5", ".hdf5")
# The conventional names carry their layout; a user-chosen name may use either.
LAYOUT_OF_KEY = {"cubes": "(N, bands, height, width)", "cube": "(bands, height, width)"}
NDIMS_OF_KEY = {"cubes": (4,), "cube": (3,)}


@dataclass(frozen=True)
class Source:
    """Shape facts about one validated source file."""

    path: str
    key: str
    cubes: int
    bands: int
    height: int
    width: int


def list_source_files(root: Path) -> list[Path]:
    """The HDF5 files behind a `data.path`: the file itself, or a directory's *.h5/*.hdf5 files in name order."""
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{root}: directory holds no *.h5 or *.hdf5 files")
        return files
    if not root.exists():
        raise DataError(f"{root}: no such file or directory (data.path)")
    return [root]


def open_hdf5(path: Path | str) -> h5py.File:
    """Open read-only, turning HDF5's multi-line OSErrors into a one-line DataError."""
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: no such file or not readable")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt)") from exc


def resolve_key(path: Path, key: str | None) -> str:
    """The dataset name to use: the configured one, else 'cubes' if the file has it, else 'cube'."""
    if key is not None:
        return key
    with open_hdf5(path) as f:
        return "cubes" if "cubes" in f else "cube"


def inspect_sources(files: list[Path], key: str, min_size: int) -> list[Source]:
    """Validate every file and return their shapes; all must agree on the number of bands."""
    sources = [inspect_source(path, key, min_size) for path in files]
    first = sources[0]
    for source in sources[1:]:
        if source.bands != first.bands:
            raise DataError(
                f"{source.path}: dataset '{key}' has {source.bands} bands but expected {first.bands} like {first.path}"
            )
    return sources


def inspect_source(path: Path, key: str, min_size: int) -> Source:
    """Check that `path` holds a numeric 3-D/4-D dataset `key` whose cubes are at least min_size square."""
    with open_hdf5(path) as f:
        if key not in f:
            found = ", ".join(f"'{name}'" for name in f) or "nothing"
            raise DataError(
                f"{path}: dataset '{key}' not found (the file holds {found}; set data.dataset_key to choose another)"
            )
        dataset = f[key]
        if not isinstance(dataset, h5py.Dataset):
            raise DataError(f"{path}: '{key}' is a group but expected a dataset")
        shape, dtype = tuple(dataset.shape), dataset.dtype
    layout = LAYOUT_OF_KEY.get(key, "(N, bands, height, width) or (bands, height, width)")
    if len(shape) not in NDIMS_OF_KEY.get(key, (3, 4)):
        raise DataError(f"{path}: dataset '{key}' has shape {shape} but expected {layout}")
    # Integer sensor counts are fine (they are converted to float32 on reading);
    # strings, booleans and compound types are not images.
    if dtype.kind not in "fiu":
        raise DataError(f"{path}: dataset '{key}' has dtype {dtype} but expected a float or integer type")
    cubes, bands, height, width = shape if len(shape) == 4 else (1, *shape)
    if min(shape) == 0:
        raise DataError(f"{path}: dataset '{key}' has shape {shape} but expected {layout} with no empty axis")
    if height < min_size or width < min_size:
        raise DataError(
            f"{path}: dataset '{key}' has cubes of {height}x{width} pixels "
            f"but expected at least {min_size}x{min_size} (data.window)"
        )
    return Source(str(path), key, cubes, bands, height, width)


def read_block(dataset: h5py.Dataset, cube: int, rows: slice, cols: slice) -> np.ndarray:
    """Read (bands, rows, cols) of one cube from a 3-D or 4-D dataset."""
    if dataset.ndim == 4:
        return dataset[cube, :, rows, cols]
    return dataset[:, rows, cols]
