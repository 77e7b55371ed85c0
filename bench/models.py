"""Models that exist only for benchmarks: their cost is a known sleep, so what is measured is
everything around them (Tune, the service's trial path, tracking)."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from models.registry import register_model


class Sleeper(nn.Module):
    """Each training step sleeps ``work_s``; the validation metric is the sampled ``score``."""

    def __init__(self, work_s: float, score: float) -> None:
        super().__init__()
        self.work_s, self.score = work_s, score
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        time.sleep(self.work_s)
        return {"loss": (self.weight - 1.0).pow(2).sum()}

    @torch.no_grad()
    def validation_metrics(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {"score": torch.tensor(self.score)}


@register_model
def sleeper(work_s: float = 0.1, score: float = 0.5) -> Sleeper:
    return Sleeper(work_s, score)
