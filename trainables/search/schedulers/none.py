"""``none``: every trial trains its full budget; no rungs."""

from __future__ import annotations

from typing import Any

from trainables.objective import Objective
from trainables.search.schedulers.base import CONTINUE, NoPromotions, time_key_of


class NoPolicy(NoPromotions):
    def __init__(self, scheduler_spec: Any, objective: Objective, max_t: float) -> None:
        self.time_key = time_key_of(scheduler_spec)
        self.max_t = max_t
        self.metric = objective.metric

    def rungs(self) -> list[float]:
        return []

    def on_result(self, trial_id: str, t: float, value: float | None) -> str:
        return CONTINUE

    def on_end(self, trial_id: str) -> None:
        pass

    def rung_of(self, trial_id: str) -> float | None:
        return None
