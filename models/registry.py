"""Model registry in the style of timm: factories register by name, callers build by name.

A search space names a model and its keyword arguments; `create_model` is the only way
from that name to a module, so a typo fails with the list of valid names instead of an
import error deep inside a trial. Each registered model has an argument model (see
`models.arguments`) that checks those keyword arguments, for `create_model` and for the
spec loader alike.
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel

from models.arguments import config_class, signature_model, validate_arguments


@dataclass(frozen=True)
class _Registered:
    factory: Callable[..., torch.nn.Module]  # keyword arguments in, validated, model out
    arguments: type[BaseModel]


_MODELS: dict[str, _Registered] = {}


class UnknownModelError(ValueError):
    """Raised for a model name nobody registered.

    A ValueError rather than a KeyError: KeyError's str() wraps the message in quotes,
    which garbles the list of known names in logs.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(list_models())}")


def register_model(fn: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    """Decorator: register `fn` as the factory for the model named `fn.__name__`.

    `fn` takes either one `ModelArgs` subclass (its family's arguments) or plain keyword
    arguments with type hints. Either way the decorator returns a factory of keyword
    arguments that validates them first (`models.arguments.ModelArgumentError`) and whose
    signature lists them with their types and defaults.
    """
    name = fn.__name__
    if name in _MODELS:
        # Silently replacing a factory would make results depend on import order.
        raise ValueError(f"model {name!r} is already registered")
    config = config_class(fn)
    arguments = config or signature_model(fn)

    @functools.wraps(fn)
    def factory(**kwargs: Any) -> torch.nn.Module:
        args = validate_arguments(name, arguments, kwargs)
        return fn(args) if config else fn(**dict(args))

    factory.__signature__ = inspect.signature(arguments).replace(
        return_annotation=inspect.signature(fn).return_annotation)
    _MODELS[name] = _Registered(factory, arguments)
    return factory


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def _registered(name: str) -> _Registered:
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(name) from None


def model_factory(name: str) -> Callable[..., torch.nn.Module]:
    """The registered factory: keyword arguments, validated, to a model."""
    return _registered(name).factory


def model_arguments(name: str) -> type[BaseModel]:
    """The argument model of the model registered as `name`."""
    return _registered(name).arguments


def check_model_args(name: str, args: dict[str, Any]) -> BaseModel:
    """`args` validated for the model `name` without building it (the spec loader's check):
    `UnknownModelError` for the name, `ModelArgumentError` for the first bad argument."""
    return validate_arguments(name, model_arguments(name), args)


def create_model(name: str, **kwargs: object) -> torch.nn.Module:
    """Build the model registered as `name` with the factory's keyword arguments."""
    return model_factory(name)(**kwargs)
