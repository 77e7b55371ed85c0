"""Datasets for the hyperparameter search: preparation, splits and torch Datasets (no Ray, no MLflow)."""

from data.errors import DataError
from data.hyperspectral import (
    HyperspectralCrops,
    HyperspectralDataConfig,
    PreparedData,
    SyntheticHyperspectral,
    build_datasets,
    prepare,
)
from data.kinds import DataConfig, DataSplits, build_splits
from data.splits import SplitManifest, make_split

__all__ = [
    "DataConfig",
    "DataError",
    "DataSplits",
    "build_splits",
    "HyperspectralCrops",
    "HyperspectralDataConfig",
    "PreparedData",
    "SplitManifest",
    "SyntheticHyperspectral",
    "build_datasets",
    "make_split",
    "prepare",
]
