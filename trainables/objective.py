"""What "better" and "best" mean for a search: its objectives (metric and mode), decided here
only, and the names of the cost metrics the loop measures for every trial."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict

from models.contract import baseline_key

T = TypeVar("T")

# What a trial costs, measured by the loop (trainables/trial/loop.py) and reported with every
# epoch, so that a spec's ``objectives`` may name them: the model's parameters, wall seconds
# of training per training sample (all workers together), and the accelerator-seconds the
# trial has used so far (CUDA device time on a GPU, the process's CPU-seconds without one,
# summed over its workers and its attempts). A model may report more, or its own count of
# these, through the ``costs()`` hook (models/contract.py): each key ``k`` becomes ``cost_k``.
COST_PREFIX = "cost_"


def cost_key(name: str) -> str:
    return f"{COST_PREFIX}{name}"


PARAMETERS, SECONDS_PER_SAMPLE, ACCELERATOR_SECONDS = (cost_key("params"), cost_key("train_s_per_sample"),
                                                       cost_key("accelerator_s"))
COST_METRICS = (PARAMETERS, SECONDS_PER_SAMPLE, ACCELERATOR_SECONDS)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): the only values that rank."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Objective:
    """One objective: a reported metric and whether lower (min) or higher (max) is better.
    Also the type of a spec's ``objectives:`` entries (pydantic validates it as a section)."""

    # Lax: strict would take only an Objective, not YAML's mapping (a mode's literal is checked still).
    __pydantic_config__ = ConfigDict(extra="forbid", strict=False)

    metric: str
    mode: Literal["min", "max"]

    @property
    def sign(self) -> float:
        """+1 for min, -1 for max: ``sign * value`` is smaller when better."""
        return 1.0 if self.mode == "min" else -1.0

    def better(self, value: float, than: float | None) -> bool:
        """Strictly better (a tie keeps the earlier); any number beats None."""
        return than is None or self.sign * value < self.sign * than

    def best(self, items: Iterable[T], key: Callable[[T], float | None]) -> T | None:
        """The best item by ``key``, skipping items whose key is not a number; the first on ties."""
        found, found_value = None, None
        for item in items:
            value = key(item)
            if is_number(value) and self.better(value, found_value):
                found, found_value = item, value
        return found

    def ranked(self, items: Iterable[T], key: Callable[[T], float | None]) -> list[T]:
        """Best first; items without a number last, in their order."""
        items = list(items)
        return sorted(items, key=lambda item: (not is_number(key(item)),
                                               self.sign * key(item) if is_number(key(item)) else 0.0))

    @property
    def baseline(self) -> str:
        """The key under which a model may report a trivial baseline next to the metric, on the
        same data (val_mse -> val_baseline_mse, as the MAE's band-mean prediction): what shows
        how far from trivial a value is."""
        split, _, name = self.metric.partition("_")
        return f"{split}_{baseline_key(name)}"

    @property
    def optuna_direction(self) -> str:
        return "minimize" if self.mode == "min" else "maximize"
