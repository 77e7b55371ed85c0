"""Per-band (per-channel) mean and standard deviation, computed in one streaming pass and
stored once in a sidecar beside the data, reused while the data files are unchanged.

Moments are accumulated block by block (Chan et al.'s pairwise update, in float64) so a
file far larger than memory can be summarised, and so per-file results can be merged.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data.errors import DataError
from data.h5.sources import open_hdf5, read_block

# About 32 MB of float64 per block: small enough for any worker, large enough to be fast.
BLOCK_ELEMENTS = 1 << 22


@dataclass
class BandMoments:
    """Running count, mean and sum of squared deviations per band."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, bands: int) -> BandMoments:
        return cls(0, np.zeros(bands), np.zeros(bands))

    def add(self, block: np.ndarray) -> None:
        """Fold in a (bands, ...) block of values."""
        values = block.reshape(block.shape[0], -1).astype(np.float64)
        mean = values.mean(axis=1)
        m2 = ((values - mean[:, None]) ** 2).sum(axis=1)
        self.merge(BandMoments(values.shape[1], mean, m2))

    def merge(self, other: BandMoments) -> None:
        """Fold in moments computed over other values."""
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0, as numpy's default)."""
        return np.sqrt(self.m2 / max(self.count, 1))

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.mean).all() and np.isfinite(self.m2).all())


def dataset_moments(dataset: h5py.Dataset, block_elements: int = BLOCK_ELEMENTS) -> BandMoments:
    """Moments of a 3-D or 4-D dataset, reading a slab of rows of one cube at a time."""
    cubes = dataset.shape[0] if dataset.ndim == 4 else 1
    bands, height, width = dataset.shape[-3:]
    rows = max(1, block_elements // (bands * width))
    moments = BandMoments.empty(bands)
    for cube in range(cubes):
        for y0 in range(0, height, rows):
            moments.add(read_block(dataset, cube, slice(y0, y0 + rows), slice(None)))
    return moments


def file_fingerprint(paths: Iterable[str], key: str) -> dict[str, Any]:
    """What the stored stats were computed from; a change to any file invalidates them."""
    files = []
    for path in paths:
        stat = os.stat(path)
        files.append([os.path.basename(path), stat.st_size, stat.st_mtime_ns])
    return {"dataset_key": key, "files": files}


def read_sidecar(path: Path, fingerprint: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """Stats stored at `path` for exactly these files, or None if absent, unreadable or stale."""
    try:
        stored = json.loads(path.read_text())
        if stored["fingerprint"] == fingerprint:
            return [float(v) for v in stored["band_mean"]], [float(v) for v in stored["band_std"]]
    except (OSError, ValueError, KeyError, TypeError):
        # A missing or damaged sidecar is only a lost cache: recompute.
        pass
    return None


def write_sidecar(path: Path, fingerprint: dict[str, Any], mean: list[float], std: list[float]) -> None:
    """Store stats next to the data, atomically; if that place is not writable, skip silently.

    The caller keeps the stats in memory either way, so a read-only data directory
    costs a recomputation per `prepare`, never a failure.
    """
    text = json.dumps({"fingerprint": fingerprint, "band_mean": mean, "band_std": std}, indent=1)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def sidecar_path(root: Path) -> Path:
    """Where the stats of the data at `root` are kept: `stats.json` in a directory of files,
    else `<file>.stats.json` beside the file."""
    return root / "stats.json" if root.is_dir() else root.with_name(f"{root.name}.stats.json")


def stored_band_stats(paths: Sequence[str], key: str, sidecar: Path, bands: int,
                      check: Callable[[h5py.File], None] | None = None) -> tuple[list[float], list[float]]:
    """Per-band mean and std of dataset `key` over all `paths`, from `sidecar` if it was written
    for exactly these files, else computed (one streaming pass per file), checked finite and stored.

    `check(f)`, if given, runs on each open file in the same pass (a kind's own check of its
    other datasets), so each version of a file is read whole once, not at every trial's start.
    """
    fingerprint = file_fingerprint(paths, key)
    stored = read_sidecar(sidecar, fingerprint)
    if stored is not None and len(stored[0]) == bands:
        return stored
    moments = BandMoments.empty(bands)
    for path in paths:
        # A non-finite value is reported below as one DataError, not as numpy warnings first.
        with open_hdf5(path) as f, np.errstate(invalid="ignore", over="ignore"):
            try:
                part = dataset_moments(f[key])
            except OSError as exc:
                raise DataError(f"{path}: dataset '{key}' could not be read (truncated or corrupt)") from exc
            if check is not None:
                check(f)
        if not part.is_finite():
            raise DataError(f"{path}: dataset '{key}' contains NaN or infinite values but expected finite ones")
        moments.merge(part)
    mean, std = moments.mean.tolist(), moments.std.tolist()
    write_sidecar(sidecar, fingerprint, mean, std)
    return mean, std
