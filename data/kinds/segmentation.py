"""The segmentation data kind: images of 2 geometric channels (or 3, with intensity) and binary masks.

`prepare_segmentation` checks the file once (generating synthetic data on first use) and
returns a small picklable `SegmentationData`; datasets built from it open the file lazily
in whichever process reads them. Training crops are augmented with albumentations, image
and mask through the same transform.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import h5py
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Dataset

from data.errors import DataError
from data.h5.arrays import array_shape
from data.h5.band_stats import sidecar_path, stored_band_stats
from data.h5.cache import data_file
from data.h5.lazy_file import LazyFile
from data.h5.sources import open_hdf5
from data.kinds.registry import register_data_kind
from data.splits.index import IndexSplit, split_indices
from data.synthetic.segmentation import GENERATOR_VERSION, write_synthetic_segmentation

if TYPE_CHECKING:
    import albumentations

IMAGES, MASKS = "images", "masks"  # dataset names inside the file
# Elastic deformation strength: displacements of about 2-3 pixels, smooth over about 6
# (Simard et al. 2003's alpha/sigma, in albumentations' units).
ELASTIC_ALPHA, ELASTIC_SIGMA = 120.0, 6.0


class SyntheticSegmentation(BaseModel):
    """Settings of the generated rasters used when no `path` is given."""

    model_config = ConfigDict(extra="forbid")

    images: int = Field(48, ge=2)  # number of images in the file
    channels: Literal[2, 3] = 3  # height and slope, plus intensity with 3
    height: int = Field(128, gt=0)  # pixels per image, vertically
    width: int = Field(128, gt=0)  # pixels per image, horizontally
    shapes: int = Field(8, gt=0)  # most objects (and distractor hills) per image
    noise: float = Field(0.1, ge=0)  # std of additive Gaussian noise (objects stand 0.6-1.2 high)
    seed: int = 0  # generator seed; the data are a pure function of these settings


class SegmentationAugment(BaseModel):
    """Probabilities of the training augmentations, each applied to image and mask together.

    Each is a separate key so a search can tune it (`data.augment.elastic_p`, say); 0 turns
    one off. Geometric transforms mirror the image at its borders rather than pad, so no
    blank margin appears, and resample the mask with nearest neighbours, so it stays binary.
    """

    model_config = ConfigDict(extra="forbid")

    hflip_p: float = Field(0.5, ge=0, le=1)  # horizontal flip
    vflip_p: float = Field(0.5, ge=0, le=1)  # vertical flip
    rotate90_p: float = Field(0.5, ge=0, le=1)  # a random quarter turn (lossless)
    affine_p: float = Field(0.3, ge=0, le=1)  # scale 0.9-1.1, shift up to 5%, rotation up to 20 deg, shear up to 5 deg
    elastic_p: float = Field(0.2, ge=0, le=1)  # smooth elastic deformation of a few pixels
    # 1-4 holes of 5-15% of the crop's side set to the channel mean in the image only: the
    # mask keeps the object, so the model learns to fill in occluded parts from context.
    dropout_p: float = Field(0.2, ge=0, le=1)


class SegmentationDataConfig(BaseModel):
    """The `data:` section of a search spec for binary segmentation (`kind: segmentation`).

    A user file (`path`) is one HDF5 file with two datasets:

    * `images` (N, C, H, W), float or integer, C = 2 geometric channels or 3 (plus intensity);
    * `masks` (N, 1, H, W), integer, float or boolean, every value 0 or 1.

    Channels are standardised with their mean and std over the whole file, computed on
    first use and kept beside it in `<file>.stats.json` (recomputed when the file changes).
    The split is by image; crops of `crop` x `crop` pixels (512 at full scale) are drawn
    inside each image, so H and W must be at least `crop`.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["segmentation"] = "segmentation"  # selects this data kind
    path: str | None = None  # the HDF5 file described above; None = synthetic rasters
    synthetic: SyntheticSegmentation = Field(default_factory=SyntheticSegmentation)  # used when path is None
    cache_dir: str | None = None  # where synthetic files go; default $HPSEARCH_DATA_DIR or ~/.cache/hpsearch/data
    crop: int = Field(64, gt=0)  # side of the square crops fed to the model
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of images used for validation
    split_seed: int = 0  # seed of the image shuffle that makes the split
    augment: SegmentationAugment = Field(default_factory=SegmentationAugment)  # training crops only
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes per trial

    @model_validator(mode="after")
    def _synthetic_fits(self) -> SegmentationDataConfig:
        # Caught here rather than at prepare time so a bad spec fails before any trial starts.
        if self.path is None and min(self.synthetic.height, self.synthetic.width) < self.crop:
            raise ValueError(f"synthetic.height and synthetic.width must be >= crop ({self.crop}), "
                             f"got {self.synthetic.height}x{self.synthetic.width}")
        return self


@dataclass
class SegmentationData:
    """What the datasets need to read the file, small enough to ship to every worker."""

    path: str  # absolute path of the HDF5 file
    images: int
    channels: int
    height: int
    width: int
    channel_mean: list[float]
    channel_std: list[float]


def prepare_segmentation(cfg: SegmentationDataConfig) -> SegmentationData:
    """Check the file (generating synthetic data on first use) and summarise it; cheap when repeated."""
    path = data_file(cfg.path, "segmentation", GENERATOR_VERSION, cfg.synthetic.model_dump(), cfg.cache_dir,
                     write_synthetic_segmentation)
    with open_hdf5(path) as f:
        n, channels, height, width = array_shape(f, IMAGES, "(N, C, H, W) with C = 2 or 3", ndim=4)
        mask_shape = array_shape(f, MASKS, f"({n}, 1, {height}, {width}) of 0/1", ndim=4, kinds="fiub")
    if channels not in (2, 3):
        raise DataError(f"{path}: dataset '{IMAGES}' has {channels} channels but expected 2 (geometric) "
                        "or 3 (geometric and intensity)")
    if n < 2:
        raise DataError(f"{path}: dataset '{IMAGES}' holds {n} image but expected at least 2 "
                        "(one per side of the split)")
    if mask_shape != (n, 1, height, width):
        raise DataError(f"{path}: dataset '{MASKS}' has shape {mask_shape} but expected ({n}, 1, {height}, {width}) "
                        f"to match '{IMAGES}'")
    if min(height, width) < cfg.crop:
        raise DataError(f"{path}: dataset '{IMAGES}' has images of {height}x{width} pixels but expected at least "
                        f"{cfg.crop}x{cfg.crop} (data.crop)")
    mean, std = stored_band_stats([str(path)], IMAGES, sidecar_path(path), channels, check=_check_masks)
    return SegmentationData(str(path), n, channels, height, width, mean, std)


def _check_masks(f: h5py.File) -> None:
    """Every mask value is 0 or 1 (run in the stats' pass over the file, see stored_band_stats)."""
    try:
        for index in range(f[MASKS].shape[0]):
            mask = f[MASKS][index]
            if ((mask != 0) & (mask != 1)).any():
                raise DataError(f"{f.filename}: dataset '{MASKS}' has values other than 0 and 1 in mask {index} "
                                "but expected a binary mask")
    except OSError as exc:
        raise DataError(f"{f.filename}: dataset '{MASKS}' could not be read (truncated or corrupt)") from exc


def tile_starts(length: int, crop: int) -> list[int]:
    """Starts of crop-long tiles covering 0..length: non-overlapping, plus one flush with the end if needed."""
    starts = list(range(0, length - crop + 1, crop))
    if starts[-1] + crop < length:
        starts.append(length - crop)
    return starts


def augmentation(cfg: SegmentationAugment) -> albumentations.Compose:
    """The training transform: every probability from cfg, one random draw shared by image and mask."""
    # Imported here, not at the top: albumentations takes about a second to import, which
    # every `import data` would pay, and it asks PyPI for a newer version on import unless
    # told not to (trials often run offline).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    import cv2

    # Trials and DataLoader workers are the parallelism: OpenCV's own thread pool would
    # oversubscribe the CPUs, and a pool started before a fork can hang the forked worker.
    cv2.setNumThreads(0)
    mirror = cv2.BORDER_REFLECT_101
    return A.Compose([
        A.HorizontalFlip(p=cfg.hflip_p),
        A.VerticalFlip(p=cfg.vflip_p),
        A.RandomRotate90(p=cfg.rotate90_p),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-20, 20), shear=(-5, 5),
                 border_mode=mirror, p=cfg.affine_p),
        A.ElasticTransform(alpha=ELASTIC_ALPHA, sigma=ELASTIC_SIGMA, border_mode=mirror, p=cfg.elastic_p),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15),
                        fill=0.0, fill_mask=None, p=cfg.dropout_p),
    ])


class SegmentationTiles(Dataset):
    """Crops of images and masks: item i -> {"image": (C, crop, crop) float32, "mask": (1, crop, crop) float32 0/1}.

    Items are the tiles that cover each image (non-overlapping, the last row and column
    flush with the border). A validation item is its tile, so validation is deterministic
    and sees every pixel. A training item is a random crop of its tile's image (an epoch
    draws as many crops from an image as it has tiles), then augmented if `augment` is
    given. Crops are drawn and albumentations is seeded with torch's RNG, so that
    torch.manual_seed fixes them and DataLoader seeds each worker differently.
    """

    def __init__(self, prepared: SegmentationData, indices: Sequence[int], crop: int, train: bool,
                 augment: SegmentationAugment | None = None) -> None:
        if not 0 < crop <= min(prepared.height, prepared.width):
            raise DataError(f"{prepared.path}: dataset '{IMAGES}' has images of {prepared.height}x{prepared.width} "
                            f"pixels but expected at least {crop}x{crop} (data.crop)")
        self.prepared = prepared
        self.crop = crop
        self.train = train
        self.tiles = [(index, y0, x0) for index in indices
                      for y0 in tile_starts(prepared.height, crop) for x0 in tile_starts(prepared.width, crop)]
        self.transform = augmentation(augment) if train and augment is not None else None
        self._mean = np.asarray(prepared.channel_mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(prepared.channel_std, dtype=np.float32).reshape(-1, 1, 1)
        # A constant channel has std 0: centre it rather than divide by zero.
        self._scale = 1.0 / np.where(std > 0, std, 1.0).astype(np.float32)
        self._file = LazyFile(prepared.path)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image_index, y0, x0 = self.tiles[index]
        if self.train:
            y0 = int(torch.randint(0, self.prepared.height - self.crop + 1, ()))
            x0 = int(torch.randint(0, self.prepared.width - self.crop + 1, ()))
        rows, cols = slice(y0, y0 + self.crop), slice(x0, x0 + self.crop)
        image = self._file[IMAGES][image_index, :, rows, cols].astype(np.float32)  # [C, crop, crop]
        image = (image - self._mean) * self._scale  # standardised before augmenting: dropout's fill 0 is the mean
        mask = self._file[MASKS][image_index, 0, rows, cols].astype(np.uint8)  # [crop, crop]
        if self.transform is not None:
            # Albumentations keeps its own RNG; seeding it from torch's ties it to the loop's seed.
            self.transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
            out = self.transform(image=image.transpose(1, 2, 0), mask=mask)  # channels last
            image, mask = out["image"].transpose(2, 0, 1), out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
        }


@register_data_kind(SegmentationDataConfig)
def build_segmentation_datasets(cfg: SegmentationDataConfig) -> tuple[SegmentationTiles, SegmentationTiles, IndexSplit]:
    """Prepare the data and return (train, val, split), the split of images seeded by cfg.split_seed."""
    prepared = prepare_segmentation(cfg)
    train_ids, val_ids = split_indices(prepared.images, cfg.val_fraction, cfg.split_seed)
    split = IndexSplit(prepared.path, train_ids, val_ids, cfg.split_seed, cfg.val_fraction, stratified_by=None)
    train = SegmentationTiles(prepared, split.train, cfg.crop, train=True, augment=cfg.augment)
    val = SegmentationTiles(prepared, split.val, cfg.crop, train=False)
    return train, val, split
