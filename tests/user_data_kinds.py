"""A data kind of a user's own, registered on import, as a module a spec lists under `imports:`
would (the tests of open data kinds import it that way, in the driver and in trial processes).

`noise_cubes`: seeded random cubes made in memory, items {"cube": (bands, size, size)} like
the hyperspectral kind's, so the spectral models (and tests/fault_models.py) train on them.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from data import IndexSplit, register_data_kind, split_indices


class NoiseCubesDataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["noise_cubes"] = "noise_cubes"
    cubes: int = Field(8, ge=2)
    bands: int = Field(10, ge=1)
    size: int = Field(8, gt=0)
    seed: int = 0
    val_fraction: float = Field(0.25, gt=0, lt=1)


class NoiseCubes(Dataset):
    def __init__(self, cubes: torch.Tensor) -> None:
        self.cubes = cubes

    def __len__(self) -> int:
        return len(self.cubes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"cube": self.cubes[index]}


@register_data_kind(NoiseCubesDataConfig)
def build_noise_cubes(cfg: NoiseCubesDataConfig) -> tuple[NoiseCubes, NoiseCubes, IndexSplit]:
    generator = torch.Generator().manual_seed(cfg.seed)
    cubes = torch.rand(cfg.cubes, cfg.bands, cfg.size, cfg.size, generator=generator)
    train, val = split_indices(cfg.cubes, cfg.val_fraction, cfg.seed)
    split = IndexSplit(f"noise_cubes(seed={cfg.seed})", train, val, cfg.seed, cfg.val_fraction, stratified_by=None)
    return NoiseCubes(cubes[train]), NoiseCubes(cubes[val]), split
