"""Train/validation splits made of non-overlapping spatial windows.

Crops are drawn inside windows and every window belongs to exactly one side, so no
training pixel ever appears in a validation crop (random crops of whole cubes would
leak neighbouring, highly correlated pixels across the split).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from data.errors import DataError

# (source index, cube index within the source, top row, left column)
Window = tuple[int, int, int, int]


class TiledData(Protocol):
    """What a split needs to know about prepared data."""

    @property
    def sources(self) -> list[str]: ...
    @property
    def dataset_key(self) -> str: ...
    @property
    def cubes(self) -> list[tuple[int, int, int, int]]: ...  # (source, cube, height, width)


class SplitSettings(Protocol):
    """The config values a split is made from."""

    @property
    def window_size(self) -> int: ...
    @property
    def val_fraction(self) -> float: ...
    @property
    def split_seed(self) -> int: ...


@dataclass
class SplitManifest:
    """Which windows are for training and which for validation; saved with a run to reproduce it."""

    train: list[Window]
    val: list[Window]
    seed: int
    val_fraction: float
    window: int

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> SplitManifest:
        try:
            raw = json.loads(Path(path).read_text())
            return cls(
                train=[_window(w) for w in raw["train"]],
                val=[_window(w) for w in raw["val"]],
                seed=int(raw["seed"]),
                val_fraction=float(raw["val_fraction"]),
                window=int(raw["window"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a readable split manifest ({type(exc).__name__}: {exc})") from exc


def _window(value: Sequence[int]) -> Window:
    source, cube, y0, x0 = (int(v) for v in value)
    return source, cube, y0, x0


def tile_windows(cubes: Sequence[tuple[int, int, int, int]], window: int) -> list[Window]:
    """All non-overlapping window x window tiles of every cube, row by row.

    Border strips narrower than a window are left out.
    """
    return [
        (source, cube, y0, x0)
        for source, cube, height, width in cubes
        for y0 in range(0, height - window + 1, window)
        for x0 in range(0, width - window + 1, window)
    ]


def make_split(prepared: TiledData, cfg: SplitSettings) -> SplitManifest:
    """Tile every cube and give a seeded-random `val_fraction` of the windows (at least 1) to validation.

    Same prepared data and settings give the same split, on any machine.
    """
    window = cfg.window_size
    windows = tile_windows(prepared.cubes, window)
    if len(windows) < 2:
        where = os.path.commonpath(prepared.sources)
        raise DataError(
            f"{where}: dataset '{prepared.dataset_key}' holds {len(windows)} window(s) of "
            f"{window}x{window} pixels but expected at least 2 (lower data.window or add data)"
        )
    # random.Random with an int seed is stable across Python versions and platforms.
    random.Random(cfg.split_seed).shuffle(windows)
    n_val = min(max(1, round(cfg.val_fraction * len(windows))), len(windows) - 1)
    return SplitManifest(
        train=sorted(windows[n_val:]),
        val=sorted(windows[:n_val]),
        seed=cfg.split_seed,
        val_fraction=cfg.val_fraction,
        window=window,
    )
