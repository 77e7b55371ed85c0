"""The hyperspectral data kind: config, one-time preparation, and the crop dataset.

`prepare` runs once per search on the driver (cheaply again anywhere else) and returns a
small picklable `PreparedData`; datasets built from it open the HDF5 files lazily in
whichever process reads them, so they travel to DataLoader and Ray workers as plain data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import h5py
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from torch.utils.data import Dataset

from data.errors import DataError
from data.h5.band_stats import sidecar_path, stored_band_stats
from data.h5.cache import data_file
from data.h5.in_memory import fits_in_memory, normalised
from data.h5.lazy_file import LazyFile
from data.h5.sources import Source, inspect_sources, list_source_files, open_hdf5, read_block, resolve_key
from data.kinds.registry import register_data_kind
from data.splits.windows import SplitManifest, Window, make_split
from data.synthetic.hyperspectral import GENERATOR_VERSION, write_synthetic_cubes


class SyntheticHyperspectral(BaseModel):
    """Settings of the generated data used when no `path` is given."""

    model_config = ConfigDict(extra="forbid")

    cubes: int = Field(16, gt=0)  # number of cubes in the file
    bands: int = Field(30, ge=2)  # spectral bands per cube
    height: int = Field(64, gt=0)  # pixels per cube, vertically
    width: int = Field(64, gt=0)  # pixels per cube, horizontally
    endmembers: int = Field(5, gt=0)  # distinct material spectra mixed in every pixel
    noise: float = Field(0.01, ge=0)  # std of additive Gaussian noise (data are in about [0, 1])
    seed: int = 0  # generator seed; the data are a pure function of these settings


class HyperspectralDataConfig(BaseModel):
    """The `data:` section of a search spec for hyperspectral cubes."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["hyperspectral"] = "hyperspectral"  # selects this data kind
    # An HDF5 file with dataset `cubes` (N, bands, H, W) or `cube` (bands, H, W), or a
    # directory of *.h5/*.hdf5 files each with `cube` (bands, H, W); None = synthetic.
    path: str | None = None
    dataset_key: str | None = None  # dataset name inside the file(s), if not `cubes`/`cube`
    synthetic: SyntheticHyperspectral = Field(default_factory=SyntheticHyperspectral)  # used when path is None
    cache_dir: str | None = None  # where synthetic files go; default $HPSEARCH_DATA_DIR or ~/.cache/hpsearch/data
    crop: int = Field(32, gt=0)  # side of the square spatial crop fed to the model
    window: int | None = Field(None, gt=0)  # side of the split's non-overlapping windows; None = 2 * crop
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of windows used for validation
    split_seed: int = 0  # seed of the window shuffle that makes the split
    flip: bool = True  # random horizontal/vertical flips of training crops
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes per trial

    @field_validator("window")
    @classmethod
    def _window_holds_crop(cls, window: int | None, info: ValidationInfo) -> int | None:
        crop = info.data.get("crop")
        if window is not None and crop is not None and window < crop:
            raise ValueError(f"window ({window}) must be >= crop ({crop})")
        return window

    @model_validator(mode="after")
    def _synthetic_fits(self) -> HyperspectralDataConfig:
        # Caught here rather than at prepare time so a bad spec fails before any trial starts.
        if self.path is None:
            if self.dataset_key is not None:
                raise ValueError("dataset_key needs a path (synthetic data always use 'cubes')")
            smallest = min(self.synthetic.height, self.synthetic.width)
            if smallest < self.window_size:
                raise ValueError(
                    f"synthetic.height and synthetic.width must be >= the window ({self.window_size}), "
                    f"got {self.synthetic.height}x{self.synthetic.width}"
                )
        return self

    @property
    def window_size(self) -> int:
        """The window side actually used."""
        return self.window if self.window is not None else 2 * self.crop


@dataclass
class PreparedData:
    """Everything needed to read the data, small enough to ship to every worker."""

    sources: list[str]  # absolute paths of the HDF5 files
    dataset_key: str  # dataset name inside every source
    bands: int
    cubes: list[tuple[int, int, int, int]]  # (source index, cube index in source, height, width)
    band_mean: list[float]
    band_std: list[float]


def prepare(cfg: HyperspectralDataConfig) -> PreparedData:
    """Validate (generating synthetic data on first use) and summarise the data; cheap when repeated."""
    root = data_file(cfg.path, "hyperspectral", GENERATOR_VERSION, cfg.synthetic.model_dump(), cfg.cache_dir,
                     write_synthetic_cubes)
    files = list_source_files(root)
    key = resolve_key(files[0], cfg.dataset_key)  # a synthetic file holds `cubes`
    sources = inspect_sources(files, key, cfg.window_size)
    if cfg.path is None:
        mean, std = _stats_in_file(sources[0])  # the generator knows them exactly
    else:
        mean, std = stored_band_stats([s.path for s in sources], key, sidecar_path(root), sources[0].bands)
    return PreparedData(
        sources=[s.path for s in sources],
        dataset_key=key,
        bands=sources[0].bands,
        cubes=[(i, c, s.height, s.width) for i, s in enumerate(sources) for c in range(s.cubes)],
        band_mean=mean,
        band_std=std,
    )


def _stats_in_file(source: Source) -> tuple[list[float], list[float]]:
    """Read the stats the generator stored beside the cubes."""
    with open_hdf5(source.path) as f:
        stats = []
        for name in ("band_mean", "band_std"):
            if name not in f or f[name].shape != (source.bands,):
                raise DataError(
                    f"{source.path}: dataset '{name}' missing or not of shape ({source.bands},) "
                    "(damaged cache file: delete it to regenerate)"
                )
            stats.append([float(v) for v in f[name][()]])
    return stats[0], stats[1]


class HyperspectralCrops(Dataset):
    """Square crops of split windows, normalised per band: item i -> {"cube": (bands, crop, crop) float32}.

    Training crops sit at a random place in their window and are randomly flipped, using
    torch's RNG so that DataLoader seeds each worker differently; validation crops are
    the window's centre, unflipped, so validation is deterministic. `window` defaults to
    2 * crop like the config's. Cubes that fit in memory are read and normalised once per
    process (``data.h5.in_memory``); larger ones are read crop by crop.
    """

    def __init__(
        self,
        prepared: PreparedData,
        windows: Sequence[Window],
        crop: int,
        train: bool,
        flip: bool,
        *,
        window: int | None = None,
    ) -> None:
        self.prepared = prepared
        self.windows = [tuple(w) for w in windows]
        self.crop = crop
        self.window = window if window is not None else 2 * crop
        self.train = train
        self.flip = flip
        if not 0 < crop <= self.window:
            raise DataError(f"data.crop ({crop}) must be positive and <= the window size ({self.window})")
        self._check_windows()
        std = np.asarray(prepared.band_std, dtype=np.float32).reshape(-1, 1, 1)
        self._mean = np.asarray(prepared.band_mean, dtype=np.float32).reshape(-1, 1, 1)
        # A constant band has std 0: centre it rather than divide by zero.
        self._scale = 1.0 / np.where(std > 0, std, np.float32(1.0))
        self._files = [LazyFile(path) for path in prepared.sources]
        sizes = {(s, c): h * w for s, c, h, w in prepared.cubes}
        self._preload = fits_in_memory(prepared.bands * sum(sizes[(s, c)] for s, c in {w[:2] for w in self.windows}))

    def _check_windows(self) -> None:
        """Refuse windows that do not lie inside the prepared cubes (e.g. a manifest from other data)."""
        sizes = {(s, c): (h, w) for s, c, h, w in self.prepared.cubes}
        for source, cube, y0, x0 in self.windows:
            height, width = sizes.get((source, cube), (0, 0))
            if not (0 <= y0 <= height - self.window and 0 <= x0 <= width - self.window):
                where = os.path.commonpath(self.prepared.sources)
                raise DataError(
                    f"{where}: dataset '{self.prepared.dataset_key}' has no {self.window}x{self.window} window "
                    f"at (source, cube, y0, x0) = {(source, cube, y0, x0)}; expected a split made from this data"
                )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        source, cube, y0, x0 = self.windows[index]
        slack = self.window - self.crop
        if self.train:
            dy, dx = (int(v) for v in torch.randint(0, slack + 1, (2,)))
        else:
            dy = dx = slack // 2
        rows, cols = slice(y0 + dy, y0 + dy + self.crop), slice(x0 + dx, x0 + dx + self.crop)
        if self._preload:
            crop = torch.from_numpy(self._cube(source, cube)[:, rows, cols].copy())
        else:
            crop = torch.from_numpy(normalised(read_block(self._dataset(source), cube, rows, cols),
                                               self._mean, self._scale))
        if self.train and self.flip:
            horizontal, vertical = (torch.rand(2) < 0.5).tolist()
            if horizontal:
                crop = crop.flip(-1)
            if vertical:
                crop = crop.flip(-2)
        return {"cube": crop}

    def _cube(self, source: int, cube: int) -> np.ndarray:
        """The whole normalised cube, read on first use in this process."""
        def read() -> np.ndarray:
            dataset = self._dataset(source)
            return normalised(dataset[cube] if dataset.ndim == 4 else dataset[()], self._mean, self._scale)

        return self._files[source].kept(("cube", cube), read)

    def _dataset(self, source: int) -> h5py.Dataset:
        return self._files[source][self.prepared.dataset_key]


def build_datasets(
    cfg: HyperspectralDataConfig, split: SplitManifest | None = None
) -> tuple[HyperspectralCrops, HyperspectralCrops, PreparedData]:
    """Prepare the data and return (train, val, prepared); the split is made from cfg unless given."""
    prepared = prepare(cfg)
    train, val = _crops(cfg, prepared, split if split is not None else make_split(prepared, cfg))
    return train, val, prepared


@register_data_kind(HyperspectralDataConfig)
def build_hyperspectral_splits(cfg: HyperspectralDataConfig) -> tuple[HyperspectralCrops, HyperspectralCrops,
                                                                      SplitManifest]:
    """The kind's builder: (train, val, split), the split of windows made from cfg (the data
    prepared once: preparing reads every source file's header and band statistics)."""
    prepared = prepare(cfg)
    split = make_split(prepared, cfg)
    return (*_crops(cfg, prepared, split), split)


def _crops(cfg: HyperspectralDataConfig, prepared: PreparedData,
           split: SplitManifest) -> tuple[HyperspectralCrops, HyperspectralCrops]:
    train = HyperspectralCrops(prepared, split.train, cfg.crop, train=True, flip=cfg.flip, window=split.window)
    val = HyperspectralCrops(prepared, split.val, cfg.crop, train=False, flip=cfg.flip, window=split.window)
    return train, val
