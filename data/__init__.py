"""Datasets for the hyperparameter search: preparation, splits and torch Datasets (no Ray, no MLflow)."""

from data.clips import ClipDataset, ClipsDataConfig, SyntheticClips, build_clip_datasets, prepare_clips
from data.digits import DigitsDataConfig, ImageDataset, build_image_datasets, prepare_images
from data.errors import DataError
from data.hyperspectral import (
    HyperspectralCrops,
    HyperspectralDataConfig,
    PreparedData,
    SyntheticHyperspectral,
    build_datasets,
    prepare,
)
from data.index_split import IndexSplit, split_indices
from data.keypoints import KeypointImages, KeypointsDataConfig, SyntheticKeypoints, build_keypoint_datasets
from data.kinds import DATA_KINDS, DataConfig, DataSplits, build_splits
from data.mnist1d import Mnist1dDataConfig, build_mnist1d_datasets
from data.segmentation import (
    SegmentationAugment,
    SegmentationDataConfig,
    SegmentationTiles,
    SyntheticSegmentation,
    build_segmentation_datasets,
)
from data.splits import SplitManifest, make_split

__all__ = [
    "DATA_KINDS",
    "DataConfig",
    "DataError",
    "DataSplits",
    "build_splits",
    "ClipDataset",
    "ClipsDataConfig",
    "SyntheticClips",
    "build_clip_datasets",
    "prepare_clips",
    "DigitsDataConfig",
    "ImageDataset",
    "build_image_datasets",
    "prepare_images",
    "IndexSplit",
    "split_indices",
    "Mnist1dDataConfig",
    "build_mnist1d_datasets",
    "KeypointImages",
    "KeypointsDataConfig",
    "SyntheticKeypoints",
    "build_keypoint_datasets",
    "SegmentationAugment",
    "SegmentationDataConfig",
    "SegmentationTiles",
    "SyntheticSegmentation",
    "build_segmentation_datasets",
    "HyperspectralCrops",
    "HyperspectralDataConfig",
    "PreparedData",
    "SplitManifest",
    "SyntheticHyperspectral",
    "build_datasets",
    "make_split",
    "prepare",
]
