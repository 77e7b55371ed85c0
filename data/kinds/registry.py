"""The registry of data kinds: the `data:` section of a spec names one by its `kind`, and
`build_splits` turns its validated config into the training and validation datasets plus the
split manifest.

To add a kind (here, or in a module of your own that a spec lists under `imports:`): write
its pydantic config, with a `kind: Literal["name"]` field and `extra="forbid"`, and a builder
returning (train, val, split manifest), or with a held-out test split (train, val, split
manifest, test), and register the builder::

    @register_data_kind(MyDataConfig)
    def build_my_datasets(cfg: MyDataConfig) -> tuple[Dataset, Dataset, IndexSplit]: ...

A config may have `loader_workers` (DataLoader worker processes per trial; 0 without it)
and `path` (checked to exist when the spec is loaded). The training loop and the spec loader
need no change: a spec's `data:` section is validated
by looking its kind up here when it is validated, so a kind registered by a user's module
is known as soon as that module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, PlainValidator, SerializeAsAny
from pydantic_core import PydanticKnownError
from torch.utils.data import Dataset


class Manifest(Protocol):
    def to_json(self, path: str | Path) -> None: ...


@dataclass
class DataSplits:
    train: Dataset  # items are dicts of tensors (the batch a model's forward takes)
    val: Dataset
    manifest: Manifest  # the train/validation split, written next to the results
    # A held-out test split (kinds that have an official one, e.g. mnist1d), None otherwise:
    # never used to train or select, only to score the selected model once.
    test: Dataset | None = None


Builder = Callable[[Any], tuple[Any, ...]]  # config -> (train, val, split manifest[, test])
B = TypeVar("B", bound=Builder)

# kind name -> its config class, in registration order (the order messages list kinds in).
DATA_KINDS: dict[str, type[BaseModel]] = {}
_BUILDERS: dict[type[BaseModel], Builder] = {}


def register_data_kind(config: type[BaseModel]) -> Callable[[B], B]:
    """Decorator: register the builder of the data kind whose config class is `config`; the
    kind's name is the default of the config's `kind` field."""
    field = config.model_fields.get("kind")
    name = field.default if field is not None else None
    if not isinstance(name, str):
        raise TypeError(f"{config.__name__} needs a field kind: Literal['<name>'] = '<name>' to be a data kind")

    def register(builder: B) -> B:
        if name in DATA_KINDS:
            # Silently replacing a kind would make results depend on import order.
            raise ValueError(f"data kind {name!r} is already registered (by {DATA_KINDS[name].__module__})")
        DATA_KINDS[name] = config
        _BUILDERS[config] = builder
        return builder

    return register


def _validate_data_config(value: Any) -> BaseModel:
    """The `data:` section as its kind's config, the kind looked up in the registry now.

    Failures are the error types pydantic's own discriminated union raises (the spec loader
    words them), and the config's own errors keep their locations inside the section.
    """
    if type(value) in _BUILDERS:
        return value  # already a config (a spec built in Python, or a model_copy)
    if not isinstance(value, dict):
        raise PydanticKnownError("model_attributes_type")
    if "kind" not in value:
        raise PydanticKnownError("union_tag_not_found", {"discriminator": "'kind'"})
    config = DATA_KINDS.get(value["kind"]) if isinstance(value["kind"], str) else None
    if config is None:
        raise PydanticKnownError("union_tag_invalid", {
            "discriminator": "'kind'", "tag": str(value["kind"]),
            "expected_tags": ", ".join(repr(name) for name in DATA_KINDS)})
    return config.model_validate(value)


# The type of a spec's `data:` field: any registered kind's config, chosen by its `kind`,
# and written out with all of that config's fields (not only those of BaseModel, i.e. none).
DataConfig = SerializeAsAny[Annotated[BaseModel, PlainValidator(_validate_data_config)]]


def build_splits(cfg: BaseModel) -> DataSplits:
    """Datasets and split for any registered data kind (synthetic data are generated on first use)."""
    return DataSplits(*_BUILDERS[type(cfg)](cfg))
