"""Data kinds: the `data:` section of a spec names one by its `kind`, and this module turns the
validated config into the training and validation datasets plus the split manifest.

To add a kind: write its pydantic config (with a `kind: Literal["name"]` field and
`extra="forbid"`) and a builder returning `DataSplits`, add the config to `DataConfig` and
the builder to `_BUILDERS`. The training loop and the spec loader need no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from torch.utils.data import Dataset

from data.hyperspectral import HyperspectralDataConfig, build_datasets, prepare
from data.splits import make_split


class Manifest(Protocol):
    def to_json(self, path: str | Path) -> None: ...


@dataclass
class DataSplits:
    train: Dataset  # items are dicts of tensors (the batch a model's forward takes)
    val: Dataset
    manifest: Manifest  # the train/validation split, written next to the results


# One config class per kind; becomes `Annotated[Union[...], Field(discriminator="kind")]`
# once there is more than one.
DataConfig = HyperspectralDataConfig


def _hyperspectral(cfg: HyperspectralDataConfig) -> DataSplits:
    split = make_split(prepare(cfg), cfg)
    train, val, _ = build_datasets(cfg, split)
    return DataSplits(train=train, val=val, manifest=split)


_BUILDERS: dict[type, Callable[[Any], DataSplits]] = {
    HyperspectralDataConfig: _hyperspectral,
}


def build_splits(cfg: DataConfig) -> DataSplits:
    """Datasets and split for any data kind (synthetic data is generated on first use)."""
    return _BUILDERS[type(cfg)](cfg)
