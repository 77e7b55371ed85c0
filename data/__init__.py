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
from data.splits import SplitManifest, make_split

__all__ = [
    "DataError",
    "HyperspectralCrops",
    "HyperspectralDataConfig",
    "PreparedData",
    "SplitManifest",
    "SyntheticHyperspectral",
    "build_datasets",
    "make_split",
    "prepare",
]
