"""HDF5 files of whole arrays (images, masks, coordinates): shape checks.

Shared by the data kinds whose file holds a few named datasets with a leading sample axis
(`images` (N, C, H, W) beside `masks` or `keypoints`), as opposed to the tiled cubes of
`data.h5.sources`.
"""

from __future__ import annotations

import h5py

from data.errors import DataError


def array_shape(f: h5py.File, key: str, layout: str, ndim: int, kinds: str = "fiu") -> tuple[int, ...]:
    """Shape of dataset `key` of open file `f`, checked to be `ndim`-D with no empty axis and a
    dtype of one of the numpy `kinds` (default float or integer; masks may add "b", boolean).

    `layout` (e.g. "(N, C, H, W)") goes into the one-line DataError that names the file and
    the dataset.
    """
    if key not in f:
        found = ", ".join(f"'{name}'" for name in f) or "nothing"
        raise DataError(f"{f.filename}: dataset '{key}' not found (the file holds {found}); expected {layout}")
    dataset = f[key]
    if not isinstance(dataset, h5py.Dataset):
        raise DataError(f"{f.filename}: '{key}' is a group but expected a dataset {layout}")
    shape = tuple(dataset.shape)
    if len(shape) != ndim or min(shape) == 0:
        raise DataError(f"{f.filename}: dataset '{key}' has shape {shape} but expected {layout} with no empty axis")
    # Integer pixel values and labels are fine (converted to float32 on reading); strings
    # and compound types never are.
    if dataset.dtype.kind not in kinds:
        expected = "a float, integer or boolean type" if "b" in kinds else "a float or integer type"
        raise DataError(f"{f.filename}: dataset '{key}' has dtype {dataset.dtype} but expected {expected}")
    return shape

