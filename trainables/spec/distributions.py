"""The search distributions a YAML file can name, as small self-checking data classes.

Each class validates itself on construction (like Optuna's ``distributions.py``) and knows
how to become an Optuna distribution (every searcher asks Optuna; see trainables/search/searcher.py)
and a Ray Tune domain (the dry run's samples); those conversions happen here and nowhere else.

YAML form (``search:`` maps a dotted path to one of these)::

    training.lr:          {type: loguniform, low: 1.0e-4, high: 3.0e-3}
    training.weight_decay: {type: uniform, low: 0.0, high: 0.1}
    model.args.depth:     {type: int, low: 2, high: 6}            # inclusive, step 1
    training.batch_size:  {type: int, low: 8, high: 64, log: true}
    model.args.size:      {type: choice, values: [tiny, small, base]}
    data.crop:            {type: grid, values: [16, 32]}          # every value, random searcher only
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainables.objective import is_number


class _Distribution(BaseModel, ABC):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @abstractmethod
    def candidate_values(self) -> list[Any]:
        """Values worth validating against the rest of the spec (bounds, or every choice)."""

    @abstractmethod
    def to_tune(self) -> Any:
        """The equivalent Ray Tune domain (imported lazily: specs load without Ray)."""

    @abstractmethod
    def to_optuna(self) -> Any:
        """The equivalent Optuna distribution (categorical values as Optuna's scalars)."""

    def from_optuna(self, value: Any) -> Any:
        """A value Optuna sampled, as the spec's value (categoricals map back to theirs)."""
        return value

    @abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether ``value`` (a trial's config value, as the spec writes it) is one this
        distribution could have sampled: what a warm start asks of an earlier search's trials."""


def optuna_scalar(value: Any) -> Any:
    """Optuna's categorical values are scalars; a list or mapping value stands as its JSON."""
    import json

    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)


def _within(value: Any, low: float, high: float) -> bool:
    return is_number(value) and low <= value <= high


def _check_low_below_high(low: float, high: float) -> None:
    if not low < high:
        raise ValueError(f"low must be < high (got low={low}, high={high})")


class Uniform(_Distribution):
    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _check(self) -> "Uniform":
        _check_low_below_high(self.low, self.high)
        return self

    def candidate_values(self) -> list[Any]:
        return [self.low, self.high]

    def to_tune(self) -> Any:
        from ray import tune

        return tune.uniform(self.low, self.high)

    def to_optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high)

    def contains(self, value: Any) -> bool:
        return _within(value, self.low, self.high)


class LogUniform(_Distribution):
    type: Literal["loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _check(self) -> "LogUniform":
        if self.low <= 0:
            raise ValueError(f"low must be > 0 for loguniform (got {self.low})")
        _check_low_below_high(self.low, self.high)
        return self

    def candidate_values(self) -> list[Any]:
        return [self.low, self.high]

    def to_tune(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high)

    def to_optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=True)

    def contains(self, value: Any) -> bool:
        return _within(value, self.low, self.high)


class IntRange(_Distribution):
    """Integers from low to high, both inclusive."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "IntRange":
        _check_low_below_high(self.low, self.high)
        if self.log and self.low <= 0:
            raise ValueError(f"low must be > 0 when log is true (got {self.low})")
        if self.log and self.step != 1:
            raise ValueError("step must be 1 when log is true (Optuna samples no quantised log ints)")
        if (self.high - self.low) % self.step:
            raise ValueError(f"high - low must be a multiple of step {self.step}")
        return self

    def candidate_values(self) -> list[Any]:
        return [self.low, self.high]

    def to_tune(self) -> Any:
        from ray import tune

        # Tune's randint/lograndint exclude the upper bound; qrandint includes it.
        if self.step > 1:
            return tune.qrandint(self.low, self.high, self.step)
        if self.log:
            return tune.lograndint(self.low, self.high + 1)
        return tune.randint(self.low, self.high + 1)

    def to_optuna(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and _within(value, self.low, self.high) and (value - self.low) % self.step == 0


class _Values(_Distribution):
    """A list of values (Optuna's categorical distribution)."""

    values: list[Any] = Field(min_length=1)

    def candidate_values(self) -> list[Any]:
        return list(self.values)

    def to_optuna(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution([optuna_scalar(v) for v in self.values])

    def from_optuna(self, value: Any) -> Any:
        return self.values[[optuna_scalar(v) for v in self.values].index(value)]

    def contains(self, value: Any) -> bool:
        return optuna_scalar(value) in [optuna_scalar(v) for v in self.values]


class Choice(_Values):
    type: Literal["choice"]

    def to_tune(self) -> Any:
        from ray import tune

        return tune.choice(self.values)


class Grid(_Values):
    """Every value is tried, in order (times the trial budget); the random and grid searchers take it."""

    type: Literal["grid"]

    def to_tune(self) -> Any:
        from ray import tune

        return tune.grid_search(self.values)


Distribution = Annotated[
    Union[Uniform, LogUniform, IntRange, Choice, Grid], Field(discriminator="type")
]
DISTRIBUTION_TYPES = ("uniform", "loguniform", "int", "choice", "grid")
