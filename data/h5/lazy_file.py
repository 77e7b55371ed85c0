"""An HDF5 file that each process opens for itself, on first read.

h5py handles must not cross processes: a handle inherited through fork shares the
parent's file state, and an open handle cannot be pickled (spawned DataLoader workers,
Ray). Datasets hold a `LazyFile` instead of a handle and stay plain, picklable data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import h5py

from data.h5.sources import open_hdf5

T = TypeVar("T")


class LazyFile:
    """`lazy[key]` is the dataset `key` of the file at `path`, opened read-only in this process.

    `lazy.kept(name, make)` keeps what `make()` returns (data read once and normalised, say)
    beside the handle, with the same lifetime: once per process, never pickled.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._kept: dict[Hashable, Any] = {}
        self._owner_pid: int | None = None

    def __getitem__(self, key: str) -> h5py.Dataset:
        # The dataset object is kept (it keeps its file open): looking it up by name costs
        # about as much as reading a small crop.
        return self.kept(("dataset", key), lambda: self.kept("file", lambda: open_hdf5(self.path))[key])

    def kept(self, name: Hashable, make: Callable[[], T]) -> T:
        """`make()`, called on first use in this process and kept for its later calls."""
        if self._owner_pid != os.getpid():
            # Forget what was inherited through fork (a DataLoader worker started after the
            # parent already read items): reading through its handle would corrupt both processes.
            self._kept, self._owner_pid = {}, os.getpid()
        if name not in self._kept:
            self._kept[name] = make()
        return self._kept[name]

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "_kept": {}, "_owner_pid": None}
