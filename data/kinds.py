"""Data kinds: the `data:` section of a spec names one by its `kind`, and this module turns the
validated config into the training and validation datasets plus the split manifest.

To add a kind: write its pydantic config (with a `kind: Literal["name"]` field and
`extra="forbid"`) and a builder returning (train, val, split manifest), or with a held-out
test split (train, val, split manifest, test); add the config to `DataConfig` and the
builder to `_BUILDERS`. The training loop and the spec loader need no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Protocol, Union

from pydantic import Field
from torch.utils.data import Dataset

from data.clips import ClipsDataConfig, build_clip_datasets
from data.digits import DigitsDataConfig, build_image_datasets
from data.hyperspectral import HyperspectralDataConfig, build_datasets, prepare
from data.keypoints import KeypointsDataConfig, build_keypoint_datasets
from data.mnist1d import Mnist1dDataConfig, build_mnist1d_datasets
from data.segmentation import SegmentationDataConfig, build_segmentation_datasets
from data.splits import make_split


class Manifest(Protocol):
    def to_json(self, path: str | Path) -> None: ...


@dataclass
class DataSplits:
    train: Dataset  # items are dicts of tensors (the batch a model's forward takes)
    val: Dataset
    manifest: Manifest  # the train/validation split, written next to the results
    # A held-out test split (kinds that have an official one, e.g. mnist1d), None otherwise:
    # never used to train or select, only to score the selected model once.
    test: Dataset | None = None


# One config class per kind; pydantic picks the class by the `kind` field.
DataConfig = Annotated[
    Union[HyperspectralDataConfig, ClipsDataConfig, DigitsDataConfig, KeypointsDataConfig, SegmentationDataConfig,
          Mnist1dDataConfig],
    Field(discriminator="kind"),
]


def _hyperspectral(cfg: HyperspectralDataConfig) -> tuple[Dataset, Dataset, Manifest]:
    split = make_split(prepare(cfg), cfg)
    train, val, _ = build_datasets(cfg, split)
    return train, val, split


# Each kind's builder: config -> (train, val, split manifest[, test]).
_BUILDERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    HyperspectralDataConfig: _hyperspectral,
    ClipsDataConfig: build_clip_datasets,
    DigitsDataConfig: build_image_datasets,
    KeypointsDataConfig: build_keypoint_datasets,
    SegmentationDataConfig: build_segmentation_datasets,
    Mnist1dDataConfig: build_mnist1d_datasets,
}


# kind name -> its config class (for messages that list a kind's keys).
DATA_KINDS: dict[str, type] = {cls.model_fields["kind"].default: cls for cls in _BUILDERS}


def build_splits(cfg: DataConfig) -> DataSplits:
    """Datasets and split for any data kind (synthetic data is generated on first use)."""
    return DataSplits(*_BUILDERS[type(cfg)](cfg))
