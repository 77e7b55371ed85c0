"""``hyperband``: Ray's asynchronous Hyperband, ASHA over several brackets (bracket b's
first rung at grace_period * reduction_factor**b), so some trials are judged late. Trials
are dealt to brackets in a fixed order weighted as Ray weights them (see asha.py)."""

from __future__ import annotations

from typing import Any

from trainables.objective import Objective
from trainables.search.schedulers.asha import RayAshaPolicy


class HyperbandPolicy(RayAshaPolicy):
    def __init__(self, scheduler_spec: Any, objective: Objective, max_t: float) -> None:
        self.brackets = scheduler_spec.brackets
        super().__init__(scheduler_spec, objective, max_t)
