"""Data kinds: one module per kind (its config, its torch Dataset, its builder), and the
registry that a spec's `data:` section is looked up in.

Importing this package registers the built-in kinds; a
user's module registers more with `register_data_kind` (see registry.py).
"""

from data.kinds import clips, digits, hyperspectral, keypoints, mnist1d, segmentation  # noqa: F401 - they register
from data.kinds.registry import DATA_KINDS, DataConfig, DataSplits, build_splits, register_data_kind

__all__ = ["DATA_KINDS", "DataConfig", "DataSplits", "build_splits", "register_data_kind"]
