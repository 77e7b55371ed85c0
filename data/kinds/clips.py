"""The clips data kind: short multi-view video clips with one class label per task.

`prepare_clips` checks the file once (generating synthetic clips on first use) and returns
a small picklable `ClipsData` that holds the labels; datasets built from it open the file
lazily in whichever process reads the clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import h5py
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from data.errors import DataError
from data.h5.arrays import array_shape
from data.h5.cache import data_file
from data.h5.lazy_file import LazyFile
from data.h5.sources import open_hdf5
from data.kinds.registry import register_data_kind
from data.splits.index import IndexSplit, split_indices
from data.synthetic.clips import GENERATOR_VERSION, write_synthetic_clips

CLIPS, LABELS = "clips", "labels"  # dataset and group names inside the file
CLIPS_LAYOUT = "(N, views, channels, frames, height, width)"


class SyntheticClips(BaseModel):
    """Settings of the generated clips used when no `path` is given (tasks `phase`: 3 classes, `quality`: 2)."""

    model_config = ConfigDict(extra="forbid")

    clips: int = Field(480, ge=2)  # number of clips in the file
    views: int = Field(2, gt=0)  # cameras filming each clip at once
    frames: int = Field(10, ge=2)  # frames per clip
    size: int = Field(16, ge=8)  # side of the square, one-channel frames, pixels
    noise: float = Field(0.08, ge=0)  # std of Gaussian sensor noise per view (frames are in [0, 1])
    seed: int = 0  # generator seed; the data are a pure function of these settings


class ClipsDataConfig(BaseModel):
    """The `data:` section of a search spec for multi-view clip classification (`kind: clips`).

    A user file (`path`) is one HDF5 file with:

    * `clips` (N, V, C, T, H, W): N clips, each from V views of C channels, T frames of
      H x W pixels. uint8 values are scaled to [0, 1]; float values are used as stored
      (scale them to about unit range).
    * `labels/<task>` (N,): integer class ids 0..K-1, one dataset per task in group `labels`.

    Items are {"clips": (V, C, T, H, W) float32, "labels_<task>": () int64}.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["clips"] = "clips"  # selects this data kind
    path: str | None = None  # the HDF5 file described above; None = synthetic clips
    tasks: list[str] | None = Field(None, min_length=1)  # the label datasets to use; None = every dataset in `labels`
    synthetic: SyntheticClips = Field(default_factory=SyntheticClips)  # used when path is None
    cache_dir: str | None = None  # where synthetic files go; default $HPSEARCH_DATA_DIR or ~/.cache/hpsearch/data
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of clips used for validation
    split_seed: int = 0  # seed of the clip shuffle that makes the split
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes per trial


@dataclass
class ClipsData:
    """What the datasets need, small enough to ship to every worker (labels are a few ints per clip)."""

    path: str  # absolute path of the HDF5 file
    shape: tuple[int, ...]  # of `clips`: (N, V, C, T, H, W)
    scale: float  # multiplies the stored values: 1/255 for uint8, else 1
    labels: dict[str, np.ndarray]  # task -> (N,) int64 class ids


def prepare_clips(cfg: ClipsDataConfig) -> ClipsData:
    """Check the file (generating synthetic clips on first use) and read its labels; cheap when repeated."""
    path = data_file(cfg.path, "clips", GENERATOR_VERSION, cfg.synthetic.model_dump(), cfg.cache_dir,
                     write_synthetic_clips)
    with open_hdf5(path) as f:
        shape = array_shape(f, CLIPS, CLIPS_LAYOUT, ndim=6)
        scale = 1 / 255 if f[CLIPS].dtype == np.uint8 else 1.0
        labels = {task: _read_labels(f, task, shape[0]) for task in _task_names(f, cfg.tasks)}
    if shape[0] < 2:
        raise DataError(f"{path}: dataset '{CLIPS}' holds {shape[0]} clip(s) but expected at least 2 (train and val)")
    return ClipsData(str(path), shape, scale, labels)


def _task_names(f: h5py.File, tasks: list[str] | None) -> list[str]:
    group = f.get(LABELS)
    if not isinstance(group, h5py.Group) or len(group) == 0:
        raise DataError(f"{f.filename}: group '{LABELS}' missing or empty; expected one dataset '{LABELS}/<task>' "
                        "of (N,) class ids per task")
    return sorted(group) if tasks is None else tasks


def _read_labels(f: h5py.File, task: str, count: int) -> np.ndarray:
    key = f"{LABELS}/{task}"
    if key not in f:
        found = ", ".join(f"'{name}'" for name in f[LABELS])
        raise DataError(f"{f.filename}: dataset '{key}' not found (group '{LABELS}' holds {found}; "
                        "data.tasks chooses among them)")
    dataset = f[key]
    if not isinstance(dataset, h5py.Dataset) or dataset.shape != (count,) or dataset.dtype.kind not in "iu":
        found = f"shape {dataset.shape}, dtype {dataset.dtype}" if isinstance(dataset, h5py.Dataset) else "a group"
        raise DataError(f"{f.filename}: dataset '{key}' is {found} but expected ({count},) integer class ids, "
                        f"one per clip of '{CLIPS}'")
    labels = dataset[()].astype(np.int64)
    if labels.min() < 0:
        raise DataError(f"{f.filename}: dataset '{key}' holds class id {labels.min()} but expected ids >= 0")
    return labels


class ClipDataset(Dataset):
    """Clips of the given indices: item i -> {"clips": (V, C, T, H, W) float32, "labels_<task>": () int64}.

    No augmentation here: the model augments whole batches on its own device.
    """

    def __init__(self, prepared: ClipsData, indices: Sequence[int]) -> None:
        self.prepared = prepared
        self.indices = list(indices)
        self._file = LazyFile(prepared.path)

    @property
    def labels(self) -> dict[str, torch.Tensor]:
        """task -> (len(self),) class ids, without reading a single clip (for class weights)."""
        return {task: torch.from_numpy(ids[self.indices]) for task, ids in self.prepared.labels.items()}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip = self.indices[index]
        values = self._file[CLIPS][clip].astype(np.float32)  # [V, C, T, H, W]
        item = {CLIPS: torch.from_numpy(values) * self.prepared.scale}
        for task, ids in self.prepared.labels.items():
            item[f"labels_{task}"] = torch.tensor(ids[clip])
        return item


@register_data_kind(ClipsDataConfig)
def build_clip_datasets(cfg: ClipsDataConfig) -> tuple[ClipDataset, ClipDataset, IndexSplit]:
    """Prepare the data and return (train, val, split), the split a seeded shuffle of the clips."""
    prepared = prepare_clips(cfg)
    train_ids, val_ids = split_indices(prepared.shape[0], cfg.val_fraction, cfg.split_seed)
    split = IndexSplit(prepared.path, train_ids, val_ids, cfg.split_seed, cfg.val_fraction, stratified_by=None)
    return ClipDataset(prepared, train_ids), ClipDataset(prepared, val_ids), split
