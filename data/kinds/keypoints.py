"""The keypoints data kind: whole images with K (x, y) landmarks each, e.g. vertebra corners.

`prepare_keypoints` checks the file once (generating synthetic data on first use) and
returns a small picklable `KeypointsData`; datasets built from it open the file lazily in
whichever process reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.utils.data import Dataset

from data.errors import DataError
from data.h5.arrays import array_shape
from data.h5.cache import data_file
from data.h5.lazy_file import LazyFile
from data.h5.sources import open_hdf5
from data.kinds.registry import register_data_kind
from data.splits.index import IndexSplit, split_indices
from data.synthetic.keypoints import GENERATOR_VERSION, write_synthetic_keypoints

IMAGES, KEYPOINTS = "images", "keypoints"  # dataset names inside the file


class SyntheticKeypoints(BaseModel):
    """Settings of the generated radiographs used when no `path` is given (4 keypoints each)."""

    model_config = ConfigDict(extra="forbid")

    images: int = Field(128, ge=2)  # number of images in the file
    size: int = Field(64, ge=16)  # side of the square, one-channel images, pixels
    noise: float = Field(0.05, ge=0)  # std of additive Gaussian noise (vertebrae are about 0.6-1 above tissue)
    seed: int = 0  # generator seed; the data are a pure function of these settings


class KeypointsDataConfig(BaseModel):
    """The `data:` section of a search spec for keypoint regression (`kind: keypoints`).

    A user file (`path`) is one HDF5 file with two datasets:

    * `images` (N, C, H, W), float or integer pixel values (C = 1 for radiographs);
    * `keypoints` (N, K, 2), float (x, y) pixel coordinates of K landmarks per image, x along
      W and y along H, pixel centres at integers, in a fixed order (for one vertebra's
      corners: top-left, top-right, bottom-right, bottom-left).

    Each image is standardised on its own (zero mean, unit std per channel): exposure varies
    from one radiograph to the next, and landmarks depend on shapes, not on grey levels.
    Images are used whole, so H and W must suit the model (a U-Net of depth d needs
    multiples of 2^(d-1)).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["keypoints"] = "keypoints"  # selects this data kind
    path: str | None = None  # the HDF5 file described above; None = synthetic radiographs
    synthetic: SyntheticKeypoints = Field(default_factory=SyntheticKeypoints)  # used when path is None
    cache_dir: str | None = None  # where synthetic files go; default $HPSEARCH_DATA_DIR or ~/.cache/hpsearch/data
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of images used for validation
    split_seed: int = 0  # seed of the image shuffle that makes the split
    # Probability of a horizontal flip of a training image; its keypoints are mirrored and
    # reordered by flip_order, since a mirrored left corner is the new right corner.
    hflip_p: float = Field(0.5, ge=0, le=1)
    # Keypoint order after a horizontal flip: keypoint i of the flipped image is keypoint
    # flip_order[i] of the original. The default swaps left and right of the four corners.
    flip_order: list[int] = [1, 0, 3, 2]
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes per trial

    @field_validator("flip_order")
    @classmethod
    def _is_permutation(cls, order: list[int]) -> list[int]:
        if sorted(order) != list(range(len(order))):
            raise ValueError(f"flip_order must be a permutation of 0..{len(order) - 1}, got {order}")
        return order


@dataclass
class KeypointsData:
    """What the datasets need to read the file, small enough to ship to every worker."""

    path: str  # absolute path of the HDF5 file
    images: int
    channels: int
    height: int
    width: int
    keypoints: int  # K, landmarks per image


def prepare_keypoints(cfg: KeypointsDataConfig) -> KeypointsData:
    """Check the file (generating synthetic data on first use) and summarise it; cheap when repeated."""
    path = data_file(cfg.path, "keypoints", GENERATOR_VERSION, cfg.synthetic.model_dump(), cfg.cache_dir,
                     write_synthetic_keypoints)
    with open_hdf5(path) as f:
        n, channels, height, width = array_shape(f, IMAGES, "(N, C, H, W)", ndim=4)
        if n < 2:
            raise DataError(f"{path}: dataset '{IMAGES}' holds {n} image but expected at least 2 "
                            "(one per side of the split)")
        shape = array_shape(f, KEYPOINTS, "(N, K, 2) of (x, y) pixels", ndim=3)
        if shape[0] != n or shape[2] != 2:
            raise DataError(f"{path}: dataset '{KEYPOINTS}' has shape {shape} but expected ({n}, K, 2) "
                            f"to match '{IMAGES}' {(n, channels, height, width)}")
        # K * 2 numbers per image: cheap to read whole, and a NaN label would only surface as a NaN loss.
        if not np.isfinite(f[KEYPOINTS][()]).all():
            raise DataError(f"{path}: dataset '{KEYPOINTS}' contains NaN or infinite values but expected finite ones")
    return KeypointsData(str(path), n, channels, height, width, shape[1])


class KeypointImages(Dataset):
    """Whole images and their keypoints: item i -> {"image": (C, H, W) float32, "keypoints": (K, 2) float32}.

    Training items are flipped horizontally with probability `hflip_p` (keypoints mirrored
    and reordered by `flip_order`), using torch's RNG so that DataLoader seeds each worker
    differently; validation items never are.
    """

    def __init__(self, prepared: KeypointsData, indices: Sequence[int], train: bool, hflip_p: float = 0.0,
                 flip_order: Sequence[int] = ()) -> None:
        if hflip_p > 0 and sorted(flip_order) != list(range(prepared.keypoints)):
            raise DataError(f"{prepared.path}: dataset '{KEYPOINTS}' has {prepared.keypoints} keypoints per image "
                            f"but data.flip_order is {list(flip_order)}; expected a permutation of all of them")
        self.prepared = prepared
        self.indices = list(indices)
        self.train = train
        self.hflip_p = hflip_p
        self.flip_order = list(flip_order)
        self._file = LazyFile(prepared.path)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.indices[index]
        image = torch.from_numpy(self._file[IMAGES][sample].astype(np.float32, copy=False))  # [C, H, W]
        keypoints = torch.from_numpy(self._file[KEYPOINTS][sample].astype(np.float32, copy=False))  # [K, 2]
        mean = image.mean(dim=(1, 2), keepdim=True)
        std = image.std(dim=(1, 2), keepdim=True, correction=0)
        # A constant channel has std 0: centre it rather than divide by zero.
        image = (image - mean) / torch.where(std > 0, std, torch.ones_like(std))
        if self.train and self.hflip_p > 0 and torch.rand(()) < self.hflip_p:
            image = image.flip(-1)
            keypoints = keypoints[self.flip_order]
            keypoints[:, 0] = (self.prepared.width - 1) - keypoints[:, 0]
        return {"image": image, "keypoints": keypoints}


@register_data_kind(KeypointsDataConfig)
def build_keypoint_datasets(cfg: KeypointsDataConfig) -> tuple[KeypointImages, KeypointImages, IndexSplit]:
    """Prepare the data and return (train, val, split), the split seeded by cfg.split_seed."""
    prepared = prepare_keypoints(cfg)
    train_ids, val_ids = split_indices(prepared.images, cfg.val_fraction, cfg.split_seed)
    split = IndexSplit(prepared.path, train_ids, val_ids, cfg.split_seed, cfg.val_fraction, stratified_by=None)
    train = KeypointImages(prepared, split.train, train=True, hflip_p=cfg.hflip_p, flip_order=cfg.flip_order)
    val = KeypointImages(prepared, split.val, train=False)
    return train, val, split
