"""An HDF5 file that each process opens for itself, on first read.

h5py handles must not cross processes: a handle inherited through fork shares the
parent's file state, and an open handle cannot be pickled (spawned DataLoader workers,
Ray). Datasets hold a `LazyFile` instead of a handle and stay plain, picklable data.
"""

from __future__ import annotations

import os

import h5py

from data.h5_sources import open_hdf5


class LazyFile:
    """`lazy[key]` is the dataset `key` of the file at `path`, opened read-only in this process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: h5py.File | None = None
        self._owner_pid: int | None = None

    def __getitem__(self, key: str) -> h5py.Dataset:
        if self._owner_pid != os.getpid():
            # Forget a handle inherited through fork (a DataLoader worker started after the
            # parent already read items): reading through it would corrupt both processes.
            self._file, self._owner_pid = None, os.getpid()
        if self._file is None:
            self._file = open_hdf5(self.path)
        return self._file[key]

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "_file": None, "_owner_pid": None}
