"""Model arguments, declared once per model family as a pydantic model and validated by it.

A family subclasses `ModelArgs` (as nanoGPT's `GPTConfig`): every keyword argument with its
constrained type and default, and in a `model_validator(mode="after")` the rules that tie
arguments together, each blaming one argument through `refuse`. Its factory takes the
validated instance: `def mae_vit(config: MAEConfig)`. A plain function with type hints (a
user's own model) gets its argument model derived from its signature instead.

The registry validates `create_model`'s keywords and a spec's `model.args` through the same
argument model, so a bad value is refused when the spec loads, as one line, not inside a
trial.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NoReturn, get_type_hints

import pydantic
from pydantic import BaseModel, ConfigDict, ValidationError


class ModelArgs(BaseModel):
    """Base of a model family's argument model: unknown arguments are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ArgumentRuleError(ValueError):
    """A cross-argument rule broken; raised by `refuse` inside an argument model's validator."""

    def __init__(self, arg: str, expected: str, got: object) -> None:
        super().__init__(f"{arg}: {expected} (got {got!r})")
        self.arg, self.expected, self.got = arg, expected, got


def refuse(arg: str, expected: str, got: object) -> NoReturn:
    """Refuse `got` for the argument `arg`: the error names it, as a field's own error would."""
    raise ArgumentRuleError(arg, expected, got)


class ModelArgumentError(ValueError):
    """A bad argument of a registered model: `arg` its (dotted) name, `problem` what was expected
    and what was given. A ValueError, as the checks of the factories were."""

    def __init__(self, model: str, arg: str, problem: str) -> None:
        super().__init__(f"model {model!r}: {arg}: {problem}")
        self.model, self.arg, self.problem = model, arg, problem


def config_class(factory: Callable[..., Any]) -> type[ModelArgs] | None:
    """The `ModelArgs` subclass a factory takes as its one parameter, or None for a plain function."""
    params = list(inspect.signature(factory).parameters)
    if len(params) != 1:
        return None
    hint = get_type_hints(factory).get(params[0])
    return hint if isinstance(hint, type) and issubclass(hint, ModelArgs) else None


def signature_model(factory: Callable[..., Any]) -> type[BaseModel]:
    """An argument model with one field per keyword parameter of a plain factory (its hint, or Any)."""
    hints = get_type_hints(factory, include_extras=True)  # keeps Annotated constraints (PositiveInt)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(factory).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            # A spec passes named values only, and each must be checkable by its name.
            raise TypeError(f"model factory {factory.__name__}: parameter {param} is not a named keyword")
        default = ... if param.default is param.empty else param.default
        fields[name] = (hints.get(name, Any), default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return pydantic.create_model(f"{factory.__name__}_args", __config__=config, **fields)


def validate_arguments(model: str, arguments: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """`values` validated by `arguments`; the first problem raised as a one-line `ModelArgumentError`."""
    try:
        return arguments.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        rule = error.get("ctx", {}).get("error")
        if isinstance(rule, ArgumentRuleError):
            raise ModelArgumentError(model, rule.arg, f"{rule.expected} (got {rule.got!r})") from None
        # "[key]" marks a dict key's own error (loss_weights.l1.[key]); the key is named already.
        arg = ".".join(str(part) for part in error["loc"] if part != "[key]")
        if error["type"] == "extra_forbidden":
            problem = f"unknown argument of model {model!r}; expected one of: {', '.join(arguments.model_fields)}"
        elif error["type"] == "missing":
            problem = "required argument is missing"
        else:
            problem = f"{error['msg']} (got {error['input']!r})"
        raise ModelArgumentError(model, arg, problem) from None
