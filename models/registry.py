"""Model registry in the style of timm: factories register by name, callers build by name.

A search space names a model and its keyword arguments; `create_model` is the only way
from that name to a module, so a typo fails with the list of valid names instead of an
import error deep inside a trial.
"""

from collections.abc import Callable

import torch

_MODEL_FACTORIES: dict[str, Callable[..., torch.nn.Module]] = {}


class UnknownModelError(ValueError):
    """Raised for a model name nobody registered.

    A ValueError rather than a KeyError: KeyError's str() wraps the message in quotes,
    which garbles the list of known names in logs.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(list_models())}")


def register_model(fn: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    """Decorator: register `fn` as the factory for the model named `fn.__name__`."""
    name = fn.__name__
    if name in _MODEL_FACTORIES:
        # Silently replacing a factory would make results depend on import order.
        raise ValueError(f"model {name!r} is already registered")
    _MODEL_FACTORIES[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODEL_FACTORIES)


def model_factory(name: str) -> Callable[..., torch.nn.Module]:
    """The registered factory itself, so a spec validator can inspect its signature."""
    try:
        return _MODEL_FACTORIES[name]
    except KeyError:
        raise UnknownModelError(name) from None


def create_model(name: str, **kwargs: object) -> torch.nn.Module:
    """Build the model registered as `name` with the factory's keyword arguments."""
    return model_factory(name)(**kwargs)
