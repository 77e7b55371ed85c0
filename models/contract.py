"""The contract between a model and the service: everything the service calls on a model.

A model is a ``torch.nn.Module`` built by a factory registered with ``@register_model``
(registry.py; its arguments are a ``ModelArgs`` subclass, arguments.py). Read this file and
one family (``models/classifier.py`` is the shortest with every hook) to add your own.

Required (``SearchableModel``):

- ``forward(batch) -> dict``: ``batch`` is the data kind's dict of tensors for one
  micro-batch. The dict returned holds ``"loss"``, the scalar tensor the optimiser steps
  on; every entry (loss parts, say) is averaged over the epoch and reported as
  ``train_<key>``.
- ``validation_metrics(batch, generator=None) -> dict``: scalar tensors for one validation
  batch, averaged over the epoch (weighted by batch size, across DDP ranks) and reported as
  ``val_<key>``. ``generator`` is seeded the same at every epoch: draw any randomness
  (masks, noise) from it, so the same weights give the same score. A spec's ``metric`` names
  one of them with ``val_`` in front. A key ``baseline_<name>`` (``baseline_key``) is a
  trivial prediction's value of ``<name>`` on the same batch, which the console, the report
  and its curves show beside the metric.

Optional (``OptionalHooks``; a model without one gets the default written beside it). The
service reaches them only through the functions below, so this file is where they live:

- ``fit_to_data(train_dataset)``: called once before the first step, on the training split;
  for statistics the model keeps in its state (class weights from the labels, say).
- ``on_epoch_start(epoch, epochs)``: before each epoch (1-based); schedules the model owns,
  such as unfreezing a backbone.
- ``ddp_find_unused_parameters`` (bool attribute, default False): True when some parameters
  get no gradient at some steps (a frozen branch), which DDP must then be told.
- ``validation_figures(batch, generator=None) -> dict[str, Figure]``: matplotlib figures of
  a few validation samples, drawn every ``training.figures_every`` epochs and logged to MLflow.
- ``figure_samples`` (int attribute, default ``FIGURE_SAMPLES``): how many validation samples
  that batch holds.
- ``evaluation(loader) -> dict``: a fuller evaluation of the best checkpoint at the end of a
  search (per-class scores, a confusion matrix), saved as ``evaluation.json`` beside it.
- ``costs() -> dict[str, float]``: what the model costs in its own terms, asked after each
  epoch; each key ``k`` is reported as ``cost_k`` (FLOPs per sample as ``cost_flops``, say),
  so a spec's ``objectives`` can name it. A key the loop measures itself (``params``,
  ``train_s_per_sample``, ``accelerator_s``; trainables/objective.py) is replaced by the
  model's value: a model that counts only its trainable parameters returns ``{"params": n}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset

Batch = dict[str, Any]  # a data kind's dict of tensors (and, for some kinds, lists)

FIGURE_SAMPLES = 4  # validation samples drawn for figures when the model does not say
BASELINE_PREFIX = "baseline_"


def baseline_key(name: str) -> str:
    """The key under which ``validation_metrics`` reports a trivial baseline of ``name``."""
    return f"{BASELINE_PREFIX}{name}"


@runtime_checkable
class SearchableModel(Protocol):
    """What every model must have."""

    def forward(self, batch: Batch) -> dict[str, Tensor]: ...

    def validation_metrics(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, Tensor]: ...


class OptionalHooks(Protocol):
    """What a model may have, with the signatures the service calls."""

    ddp_find_unused_parameters: bool
    figure_samples: int

    def fit_to_data(self, train_dataset: Dataset) -> None: ...

    def on_epoch_start(self, epoch: int, epochs: int) -> None: ...

    def validation_figures(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, Figure]: ...

    def evaluation(self, loader: Iterable[Batch]) -> dict: ...

    def costs(self) -> dict[str, float]: ...


# ----- the service's only ways to the optional hooks -----

def fit_to_data(model: torch.nn.Module, train_dataset: Dataset) -> None:
    if hasattr(model, "fit_to_data"):
        model.fit_to_data(train_dataset)


def on_epoch_start(model: torch.nn.Module, epoch: int, epochs: int) -> None:
    if hasattr(model, "on_epoch_start"):
        model.on_epoch_start(epoch, epochs)


def ddp_find_unused_parameters(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "ddp_find_unused_parameters", False))


def figure_samples(model: torch.nn.Module) -> int:
    """Validation samples to draw figures of: 0 for a model that draws none."""
    return getattr(model, "figure_samples", FIGURE_SAMPLES) if hasattr(model, "validation_figures") else 0


def validation_figures(model: torch.nn.Module, batch: Batch, generator: torch.Generator) -> dict[str, Figure]:
    return model.validation_figures(batch, generator=generator) if hasattr(model, "validation_figures") else {}


def evaluation(model: torch.nn.Module, loader: Callable[[], Iterable[Batch]]) -> dict | None:
    """The model's own evaluation on ``loader()``, or None (and no loader built) without one."""
    if not hasattr(model, "evaluation"):
        return None
    with torch.no_grad():
        return model.evaluation(loader())


def costs(model: torch.nn.Module) -> dict[str, float]:
    """The model's own costs (name -> value, without the ``cost_`` prefix), or none."""
    return {str(k): float(v) for k, v in model.costs().items()} if hasattr(model, "costs") else {}


def contract_violations(model: torch.nn.Module) -> list[str]:
    """How ``model`` breaks the contract: a required method missing, or a method (required or
    optional) that cannot be called the way the service calls it. Empty when it holds."""
    problems = []
    for protocol, required in ((SearchableModel, True), (OptionalHooks, False)):
        for name, expected in vars(protocol).items():
            if name.startswith("_") or not callable(expected):
                continue
            method = getattr(model, name, None)
            if method is None:
                if required:
                    problems.append(f"{type(model).__name__} has no {name}()")
                continue
            wanted = [p for p in inspect.signature(expected).parameters if p != "self"]
            try:
                inspect.signature(method).bind(*wanted)  # positionally, as the service calls it
            except TypeError as exc:
                problems.append(f"{type(model).__name__}.{name}{inspect.signature(method)} cannot take "
                                f"({', '.join(wanted)}): {exc}")
    for name, kind in OptionalHooks.__annotations__.items():
        if hasattr(model, name) and not isinstance(getattr(model, name), {"bool": bool, "int": int}[kind]):
            problems.append(f"{type(model).__name__}.{name} should be {kind}, is {getattr(model, name)!r}")
    return problems
