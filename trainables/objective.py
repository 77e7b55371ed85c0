"""What "better" and "best" mean for a search: its metric and mode, decided here only."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from models.contract import baseline_key

T = TypeVar("T")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): the only values that rank."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Objective:
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
