"""The digits data kind: labelled images for classification, by default scikit-learn's digits.

The default data take the user's path: scikit-learn's bundled 8x8 digits (shipped inside
the package, no download) are written once to an HDF5 file in the cache, and from then on
read exactly like a user's file. `prepare_images` checks the file and returns a small
picklable `ImagesData`; datasets built from it open the file lazily in whichever process
reads the images.
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
from data.h5.band_stats import sidecar_path, stored_band_stats
from data.h5.cache import data_file
from data.h5.in_memory import fits_in_memory, normalised
from data.h5.lazy_file import LazyFile
from data.h5.sources import open_hdf5
from data.kinds.registry import register_data_kind
from data.splits.index import IndexSplit, split_indices
from data.synthetic.digits import DIGITS_FILE_VERSION, IMAGES, LABELS, TEST, write_sklearn_digits


class DigitsDataConfig(BaseModel):
    """The `data:` section of a search spec for image classification (`kind: digits`).

    A user file (`path`) is one HDF5 file with:

    * `images` (N, C, H, W): float or integer pixel values (C = 1 for grey images);
    * `labels` (N,): integer class ids 0..K-1.

    Images are standardised per channel with the mean and std of the whole file (pixels
    only, no labels, so nothing about validation labels leaks), computed once and kept in
    `<file>.stats.json` beside it when that place is writable. Items are
    {"images": (C, H, W) float32, "labels": () int64}.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["digits"] = "digits"  # selects this data kind
    path: str | None = None  # the HDF5 file described above; None = scikit-learn's 8x8 digits (1797 images)
    cache_dir: str | None = None  # where the digits file goes; default $HPSEARCH_DATA_DIR or ~/.cache/hpsearch/data
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of each class used for validation
    split_seed: int = 0  # seed of the per-class shuffle that makes the split
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes per trial


@dataclass
class ImagesData:
    """What the datasets need, small enough to ship to every worker (labels are one int per image)."""

    path: str  # absolute path of the HDF5 file
    shape: tuple[int, ...]  # of `images`: (N, C, H, W)
    labels: np.ndarray  # (N,) int64 class ids
    channel_mean: list[float]
    channel_std: list[float]
    images_key: str = IMAGES  # the dataset read: `images`, or `test/images` for a test split


def prepare_images(cfg: DigitsDataConfig) -> ImagesData:
    """Check the file (writing the digits file on first use) and read its labels and stats; cheap when repeated."""
    path = data_file(cfg.path, "digits", DIGITS_FILE_VERSION, {}, cfg.cache_dir, write_sklearn_digits)
    with open_hdf5(path) as f:
        shape, labels = _read_images_and_labels(f, IMAGES, LABELS)
    if shape[0] < 2:
        raise DataError(f"{path}: dataset '{IMAGES}' holds {shape[0]} image(s) but expected at least 2 (train and val)")
    mean, std = stored_band_stats([str(path)], IMAGES, sidecar_path(path), shape[1])
    return ImagesData(str(path), shape, labels, mean, std)


def _read_images_and_labels(f: h5py.File, images_key: str, labels_key: str) -> tuple[tuple[int, ...], np.ndarray]:
    """The shape of images `images_key` and the labels `labels_key` of open file `f`, checked to match."""
    shape = array_shape(f, images_key, "(N, C, H, W)", ndim=4)
    label_shape = array_shape(f, labels_key, "(N,) integer class ids", ndim=1)
    if label_shape != shape[:1] or f[labels_key].dtype.kind not in "iu":
        raise DataError(f"{f.filename}: dataset '{labels_key}' has shape {label_shape} and dtype {f[labels_key].dtype} "
                        f"but expected ({shape[0]},) integer class ids, one per image of '{images_key}'")
    labels = f[labels_key][()].astype(np.int64)
    if labels.min() < 0:
        raise DataError(f"{f.filename}: dataset '{labels_key}' holds class id {labels.min()} but expected ids >= 0")
    return shape, labels


def prepare_test_images(prepared: ImagesData) -> ImagesData | None:
    """The file's held-out test split (group `test`), standardised with the training images' stats; None without one.

    The stats stay those of `images`, so nothing about the test split reaches training.
    """
    with open_hdf5(prepared.path) as f:
        if TEST not in f:
            return None
        images_key, labels_key = f"{TEST}/{IMAGES}", f"{TEST}/{LABELS}"
        shape, labels = _read_images_and_labels(f, images_key, labels_key)
    if shape[1:] != prepared.shape[1:]:
        raise DataError(f"{prepared.path}: dataset '{images_key}' holds images of shape {shape[1:]} but "
                        f"'{IMAGES}' holds {prepared.shape[1:]}; expected the same (C, H, W)")
    return ImagesData(prepared.path, shape, labels, prepared.channel_mean, prepared.channel_std, images_key)


class ImageDataset(Dataset):
    """Images of the given indices, standardised per channel.

    Item i -> {"images": (C, H, W) float32, "labels": () int64}.
    """

    def __init__(self, prepared: ImagesData, indices: Sequence[int]) -> None:
        self.prepared = prepared
        self.indices = list(indices)
        self._mean = np.asarray(prepared.channel_mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(prepared.channel_std, dtype=np.float32).reshape(-1, 1, 1)
        # A constant channel has std 0: centre it rather than divide by zero.
        self._scale = 1.0 / np.where(std > 0, std, np.float32(1.0))
        self._file = LazyFile(prepared.path)
        self._labels = torch.from_numpy(prepared.labels[self.indices])
        # Small image sets are read and normalised once per process (data.h5.in_memory).
        self._preload = fits_in_memory(int(np.prod(prepared.shape)))
        self._images: torch.Tensor | None = None
        self._owner_pid: int | None = None

    @property
    def labels(self) -> torch.Tensor:
        """(len(self),) class ids, without reading a single image."""
        return torch.from_numpy(self.prepared.labels[self.indices])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._preload:
            image = self._in_memory()[index]
        else:
            image = torch.from_numpy(normalised(self._file[self.prepared.images_key][self.indices[index]],
                                                self._mean, self._scale))
        return {IMAGES: image, LABELS: self._labels[index]}  # image: [C, H, W]

    def _in_memory(self) -> torch.Tensor:
        def read() -> torch.Tensor:
            whole = self._file[self.prepared.images_key][()]  # one read of the file's images; this split's are kept
            return torch.from_numpy(normalised(whole[np.asarray(self.indices)], self._mean, self._scale))

        return self._file.kept("images", read)


@register_data_kind(DigitsDataConfig)
def build_image_datasets(cfg: DigitsDataConfig) -> tuple[ImageDataset, ImageDataset, IndexSplit]:
    """Prepare the data and return (train, val, split), the split stratified by label and seeded."""
    prepared = prepare_images(cfg)
    train_ids, val_ids = split_indices(prepared.shape[0], cfg.val_fraction, cfg.split_seed, strata=prepared.labels)
    split = IndexSplit(prepared.path, train_ids, val_ids, cfg.split_seed, cfg.val_fraction, stratified_by=LABELS)
    return ImageDataset(prepared, train_ids), ImageDataset(prepared, val_ids), split
