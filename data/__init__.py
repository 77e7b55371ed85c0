"""Datasets for the hyperparameter search: preparation, splits and torch Datasets (no Ray, no MLflow).

The flow: a spec's `data:` section names a kind, validated by its config class from the
registry (kinds/registry.py); the kind (kinds/<kind>.py) finds its file, the user's or one
that a writer of synthetic/ generates into the cache, reads it through the HDF5 helpers of
h5/, splits it (splits/) and returns torch Datasets. Importing `data` registers the built-in
kinds.
"""

from data.errors import DataError
from data.kinds import DATA_KINDS, DataConfig, DataSplits, build_splits, register_data_kind
from data.kinds.clips import ClipDataset, ClipsDataConfig, SyntheticClips, build_clip_datasets, prepare_clips
from data.kinds.digits import DigitsDataConfig, ImageDataset, build_image_datasets, prepare_images
from data.kinds.hyperspectral import (
    HyperspectralCrops,
    HyperspectralDataConfig,
    PreparedData,
    SyntheticHyperspectral,
    build_datasets,
    prepare,
)
from data.kinds.keypoints import KeypointImages, KeypointsDataConfig, SyntheticKeypoints, build_keypoint_datasets
from data.kinds.mnist1d import Mnist1dDataConfig, build_mnist1d_datasets
from data.kinds.segmentation import (
    SegmentationAugment,
    SegmentationDataConfig,
    SegmentationTiles,
    SyntheticSegmentation,
    build_segmentation_datasets,
)
from data.splits.index import IndexSplit, split_indices
from data.splits.windows import SplitManifest, make_split

__all__ = [
    "DATA_KINDS",
    "ClipDataset",
    "ClipsDataConfig",
    "DataConfig",
    "DataError",
    "DataSplits",
    "DigitsDataConfig",
    "HyperspectralCrops",
    "HyperspectralDataConfig",
    "ImageDataset",
    "IndexSplit",
    "KeypointImages",
    "KeypointsDataConfig",
    "Mnist1dDataConfig",
    "PreparedData",
    "SegmentationAugment",
    "SegmentationDataConfig",
    "SegmentationTiles",
    "SplitManifest",
    "SyntheticClips",
    "SyntheticHyperspectral",
    "SyntheticKeypoints",
    "SyntheticSegmentation",
    "build_clip_datasets",
    "build_datasets",
    "build_image_datasets",
    "build_keypoint_datasets",
    "build_mnist1d_datasets",
    "build_segmentation_datasets",
    "build_splits",
    "make_split",
    "prepare",
    "prepare_clips",
    "prepare_images",
    "register_data_kind",
    "split_indices",
]
