"""The search spec: one YAML file, loaded, overridden, validated and resolved before Ray starts.

``load_spec`` is the only way in. Every problem becomes a ``SpecError`` whose message is one
line: ``<file>: <key.path>: <what was expected>``. The resolved spec (every default filled
in) is what gets saved next to the results and what each trial starts from.
"""

from __future__ import annotations

import copy
import re
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from data import DATA_KINDS, DataConfig, HyperspectralDataConfig
from trainables.objective import Objective
from trainables.spec.distributions import DISTRIBUTION_TYPES, Choice, Distribution, Grid
from trainables.spec.schedulers import SchedulerSpec, default_scheduler
from trainables.spec.section import Section

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # trainables/spec/schema.py -> the project
SEARCH_SPACES_DIR = PROJECT_ROOT / "search_spaces"
# Paths a search may address; data settings are searchable too (crop size, say).
SEARCHABLE_SECTIONS = ("model", "training", "data")
EXPERIMENT_KEY = "experiments"  # the trial config key naming an experiment of a matrix


class SpecError(ValueError):
    """A bad spec: the message is one line naming the file, the key path and the expectation."""


_Section = Section


class ModelSpec(_Section):
    name: str  # a name from models.list_models()
    args: dict[str, Any] = {}  # keyword arguments for the model factory; checked by its argument model


class TrainingSpec(_Section):
    epochs: PositiveInt = 10  # full budget of a trial; ASHA may stop it sooner
    batch_size: PositiveInt = 16  # per worker; the global batch is batch_size * workers
    max_steps_per_epoch: PositiveInt | None = None  # cap optimizer steps per epoch (quick CPU runs)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3  # peak learning rate, reached after warm-up
    weight_decay: NonNegativeFloat = 0.05
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)  # sgd only
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # decay after warm-up
    warmup_epochs: NonNegativeFloat = 0.0  # linear warm-up, fractions allowed
    grad_accum_steps: PositiveInt = 1  # micro-batches per optimizer step
    grad_clip_norm: PositiveFloat | None = 1.0  # None turns clipping off
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 needs a GPU
    early_stopping_patience: PositiveInt | None = None  # epochs without improvement before stopping
    seed: int = 0
    # Draw the model's validation figures every this many epochs and on the last one
    # (into the checkpoint, logged to the trial's MLflow run); 0 turns them off.
    figures_every: NonNegativeInt = 5


class SearcherSpec(_Section):
    type: Literal["optuna", "random", "grid"] = "optuna"  # optuna = TPE; grid = every combination
    seed: int = 0
    startup_trials: PositiveInt = 5  # random trials before TPE starts modelling (optuna only)
    # Where the Optuna study lives (optuna only): null = optuna.db in the output folder; a
    # database URL (postgresql://...) on a cluster. optuna-dashboard reads it live.
    storage: str | None = None


class BudgetSpec(_Section):
    trials: PositiveInt = 10  # number of sampled configurations (per grid point with grid values)
    time_limit_minutes: PositiveFloat | None = None  # stop the whole search after this long
    max_failures: NonNegativeInt = 2  # retries of a trial that raised or lost a worker, from its last checkpoint
    max_concurrent: PositiveInt | None = None  # default: what the cluster can run at once
    # When the search ends, the best checkpoint of this many of its best trials is kept (in
    # trials/, best/ sharing the first's files); every other checkpoint is deleted.
    keep_checkpoints: PositiveInt = 1


class ResourceOverride(_Section):
    workers: PositiveInt | None = None
    cpus_per_worker: PositiveFloat | None = None
    gpus_per_worker: NonNegativeFloat | None = None
    memory_gb: PositiveFloat | None = None


class ResourcesSpec(_Section):
    workers: PositiveInt = 1  # > 1 trains the trial with DDP under Ray Train's TorchTrainer
    cpus_per_worker: PositiveFloat = 1.0
    gpus_per_worker: NonNegativeFloat = 1.0  # fractions share a GPU; used only when use_gpu allows
    # Host memory Ray reserves per worker (its `memory` resource), so that two trials of a
    # model that needs most of a node's memory never run on it together; None = no reservation.
    memory_gb: PositiveFloat | None = None
    use_gpu: Literal["auto", "yes", "no"] = "auto"  # auto: use GPUs when the cluster has any
    depends_on: str | None = None  # a searched path with choice/grid values, e.g. model.args.size
    per_value: dict[str, ResourceOverride] = {}  # value of depends_on -> overrides (others ignored)


class RegistrySpec(_Section):
    # The MLflow registered model that each finished search adds its best checkpoint to, as a
    # new version; null = the experiment's name.
    model_name: str | None = Field(default=None, min_length=1)


class SearchSpec(_Section):
    # Also the results folder's name, so at most what a file name may be (255 bytes).
    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=255)
    description: str = ""
    # Python modules imported (on the driver and in every trial) before models and data are
    # built: where your own @register_model factories live, e.g. [my_project.models].
    imports: list[str] = []
    metric: str = "val_loss"  # reported each epoch; "val_" + a model validation metric
    mode: Literal["min", "max"] = "min"
    model: ModelSpec
    data: DataConfig = Field(default_factory=HyperspectralDataConfig)  # a `kind` from data.kinds
    training: TrainingSpec = TrainingSpec()
    search: dict[str, Distribution] = {}  # dotted path -> distribution
    # An experiment matrix instead of a search: name -> {dotted path: value} overrides of
    # this spec; each named experiment runs as one trial (budget.trials times).
    experiments: dict[str, dict[str, Any]] = {}
    searcher: SearcherSpec = SearcherSpec()
    scheduler: SchedulerSpec = Field(default_factory=default_scheduler)
    budget: BudgetSpec = BudgetSpec()
    resources: ResourcesSpec = ResourcesSpec()
    registry: RegistrySpec = RegistrySpec()

    @model_validator(mode="before")
    @classmethod
    def _import_user_modules(cls, raw: Any) -> Any:
        # Before any section is validated: a user's module may register the data kind that
        # `data:` names. Every process that validates a spec (the driver, a trial actor, a Ray
        # Train worker, a report) thus has the user's kinds and models; a module that cannot be
        # imported raises ImportError here (validate_spec has imported them with one-line errors).
        imports = raw.get("imports") if isinstance(raw, dict) else None
        if isinstance(imports, list) and all(isinstance(module, str) for module in imports):
            for module in imports:
                import_module(module)
        return raw

    @property
    def max_t(self) -> int:
        """Where the scheduler ends a trial, in its own count (training.epochs by default)."""
        return getattr(self.scheduler, "max_t", None) or self.training.epochs

    @property
    def objective(self) -> Objective:
        """What "better" means for this search: its metric and mode."""
        return Objective(self.metric, self.mode)

    @property
    def registered_model(self) -> str:
        return self.registry.model_name or self.experiment


def resolve_space_path(name_or_path: str) -> Path:
    """``mae_sizes.yaml`` finds ``search_spaces/mae_sizes.yaml``; a real path is taken as is."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    for candidate in (SEARCH_SPACES_DIR / name_or_path, SEARCH_SPACES_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate.resolve()
    known = ", ".join(sorted(p.name for p in SEARCH_SPACES_DIR.glob("*.yaml")))
    raise SpecError(f"{name_or_path}: no such file (and not in search_spaces/: {known})")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads `5e-4` and `1e5` as strings, so `lr: 5e-4` or `--set training.lr=5e-4`
# would be refused as "not a number"; YAML 1.2 and every user read them as floats.
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_spec(name_or_path: str, overrides: list[str] = ()) -> tuple[SearchSpec, Path]:
    """Read, override (``key.path=value``) and validate a spec; return it with its file's path."""
    path = resolve_space_path(name_or_path)
    where = _display_path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{where}: {line}not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping of sections at the top level")
    for override in overrides:
        where_override = f"{where} (with --set {override})"
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{where_override}: expected --set key.path=value")
        try:
            value = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError:
            raise SpecError(f"{where_override}: {key}: the value is not valid YAML") from None
        set_path(raw, key.strip(), value)
    label = where if not overrides else f"{where} (with --set {' --set '.join(overrides)})"
    return validate_spec(raw, label), path


def validate_spec(raw: dict[str, Any], where: str) -> SearchSpec:
    """Validate a raw spec dict; every failure is a one-line ``SpecError``."""
    _import_modules(raw, where)
    spec = _parse(raw, where)
    _check_model(spec.model, where, "model")
    _check_search(spec, raw, where)
    _check_experiments(spec, raw, where)
    _check_resources(spec, where)
    if (getattr(spec.scheduler, "grace_period", None) or 0) > spec.max_t:
        raise SpecError(f"{where}: scheduler.grace_period: must be <= scheduler.max_t "
                        f"(training.epochs by default) = {spec.max_t} (got {spec.scheduler.grace_period})")
    if getattr(spec.data, "path", None) is not None and not Path(spec.data.path).expanduser().exists():
        raise SpecError(f"{where}: data.path: no such file or directory: {spec.data.path}")
    return compile_matrix(spec)


def _import_modules(raw: dict[str, Any], where: str) -> None:
    """Import the spec's ``imports`` before anything is validated: they may register the data
    kind (or the model) the spec names. A malformed ``imports`` is left for _parse to word."""
    imports = raw.get("imports")
    if not isinstance(imports, list):
        return
    for index, module in enumerate(imports):
        if not isinstance(module, str):
            return
        try:
            import_module(module)
        # ValueError: a module whose registration fails (a data kind or model already registered).
        except (ImportError, ValueError, TypeError) as exc:
            raise SpecError(f"{where}: imports.{index}: cannot import {module!r} ({exc})") from None


def compile_matrix(spec: SearchSpec) -> SearchSpec:
    """An experiment matrix is a grid over one categorical value, the experiment's name: it
    becomes that grid search here, so nothing downstream treats a matrix apart (only
    ``trial_spec`` writes the named experiment's overrides in, and the end of the search adds
    experiment_summary.csv)."""
    if not spec.experiments:
        return spec
    return spec.model_copy(update={"search": _matrix_search(spec),
                                   "searcher": spec.searcher.model_copy(update={"type": "grid"})})


def _matrix_search(spec: SearchSpec) -> dict[str, Distribution]:
    return {EXPERIMENT_KEY: Grid(type="grid", values=list(spec.experiments))}


def trial_spec(spec: SearchSpec, sampled: dict[str, Any]) -> SearchSpec:
    """The spec one trial runs: the resolved spec with the sampled values written in (or,
    in an experiment matrix, the named experiment's overrides)."""
    raw = spec.model_dump(mode="json")
    sampled = dict(sampled)
    overrides = spec.experiments.get(sampled.pop(EXPERIMENT_KEY, None), {})
    for path, value in {**overrides, **sampled}.items():
        set_path(raw, path, value)
    raw["search"], raw["experiments"] = {}, {}
    return SearchSpec.model_validate(raw)


def import_user_modules(spec: SearchSpec) -> None:
    """Import the spec's ``imports`` (models and data kinds of the user's own), in a process
    that may be fresh: a trial actor, a Ray Train worker."""
    for module in spec.imports:
        import_module(module)


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Write ``value`` at ``a.b.c``; keys that themselves hold dots (search paths) are matched first."""
    parts = dotted.split(".")
    node = raw
    while len(parts) > 1:
        # The longest prefix naming an existing key wins, so `search.training.lr.low` finds
        # the `training.lr` entry of `search`.
        for n in range(len(parts) - 1, 0, -1):
            key = ".".join(parts[:n])
            if isinstance(node, dict) and isinstance(node.get(key), dict):
                node, parts = node[key], parts[n:]
                break
        else:
            if node is raw.get("search"):  # a new search entry: the rest of the path is its key
                node[".".join(parts)] = value
                return
            child = node.setdefault(parts[0], {})
            if not isinstance(child, dict):
                raise SpecError(f"{dotted}: {parts[0]} holds a value, not a section")
            node, parts = child, parts[1:]
    node[parts[0]] = value


def _parse(raw: dict[str, Any], where: str) -> SearchSpec:
    try:
        return SearchSpec.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = _clean_loc(error["loc"])
        raise SpecError(f"{where}: {'.'.join(loc) or '(top level)'}: {_explain(error, loc, raw)}") from None


def _clean_loc(loc: tuple[Any, ...]) -> list[str]:
    # pydantic puts discriminator tags into locations (search.x.loguniform.low); the user's
    # file has no such level, so drop them. (The data kinds' dispatch adds none: data.crop.)
    parts = [str(p) for p in loc]
    if len(parts) > 2 and parts[0] == "search" and parts[2] in DISTRIBUTION_TYPES:
        del parts[2]
    return parts


def _explain(error: dict[str, Any], loc: list[str], raw: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], raw)
        return f"unknown key; expected one of: {', '.join(allowed)}" if allowed else "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        expected = DISTRIBUTION_TYPES if loc[:1] == ["search"] else tuple(DATA_KINDS)
        what = "distribution type" if loc[:1] == ["search"] else "data kind"
        return f"unknown {what} {error['input'].get('type', error['input'].get('kind'))!r}; expected one of: {', '.join(expected)}"
    if kind == "union_tag_not_found":
        if loc[:1] == ["data"]:
            return f"data needs a kind, one of: {', '.join(DATA_KINDS)}"
        return f"a distribution needs a type, one of: {', '.join(DISTRIBUTION_TYPES)}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{message} (got {error['input']!r})" if kind not in ("value_error",) else message


def _allowed_keys(loc: list[str], raw: dict[str, Any]) -> list[str]:
    """Field names of the section at ``loc`` (for the 'unknown key' message)."""
    model: Any = SearchSpec
    if loc[:1] == ["data"]:  # data sections: the config class of the kind the section names
        model, loc = DATA_KINDS.get(str(raw.get("data", {}).get("kind"))), loc[1:]
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
        # Unwrap Optional[...] / X | None.
        for arg in getattr(model, "__args__", ()):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
    return sorted(getattr(model, "model_fields", {}))


def _check_model(model: ModelSpec, where: str, key: str) -> None:
    """``model.args`` through the model's own argument model, as ``create_model`` will take them."""
    from models import ModelArgumentError, UnknownModelError, check_model_args

    try:
        check_model_args(model.name, model.args)
    except UnknownModelError as exc:
        raise SpecError(f"{where}: {key}.name: {exc.args[0]}") from None
    except ModelArgumentError as exc:
        raise SpecError(f"{where}: {key}.args.{exc.arg}: {exc.problem}") from None


def _check_search(spec: SearchSpec, raw: dict[str, Any], where: str) -> None:
    if spec.experiments and spec.search == _matrix_search(spec):
        return  # a resolved matrix read back (see compile_matrix)
    for path, dist in spec.search.items():
        key = f"search.{path}"
        if path.split(".")[0] not in SEARCHABLE_SECTIONS:
            raise SpecError(f"{where}: {key}: a searched path starts with one of: {', '.join(SEARCHABLE_SECTIONS)}")
        if isinstance(dist, Grid) and spec.searcher.type == "optuna":
            raise SpecError(f"{where}: {key}: grid values need searcher.type: random or grid "
                            f"(Optuna refuses grid search)")
        if spec.searcher.type == "grid" and not isinstance(dist, (Choice, Grid)):
            raise SpecError(f"{where}: {key}: searcher.type grid tries every combination, so it takes "
                            f"choice or grid values only (got a {dist.type} range)")
        # Each candidate value must make a valid spec: `training.epochs: {low: 0...}` fails here.
        for value in dist.candidate_values():
            _check_overrides(raw, {path: value}, where, key, f"value {value!r}")


def _check_experiments(spec: SearchSpec, raw: dict[str, Any], where: str) -> None:
    if not spec.experiments:
        return
    if spec.search and spec.search != _matrix_search(spec):
        raise SpecError(f"{where}: experiments: an experiment matrix runs exactly its experiments; "
                        f"remove the search section (or the experiments)")
    for name, overrides in spec.experiments.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise SpecError(f"{where}: experiments.{name}: a name of letters, digits, _ . - is expected")
        if not isinstance(overrides, dict):
            raise SpecError(f"{where}: experiments.{name}: expected a mapping of key.path: value (or {{}})")
        for path in overrides:
            if path.split(".")[0] not in SEARCHABLE_SECTIONS:
                raise SpecError(f"{where}: experiments.{name}.{path}: an override starts with one of: "
                                f"{', '.join(SEARCHABLE_SECTIONS)}")
        _check_overrides(raw, overrides, where, f"experiments.{name}", "this experiment")


def _check_overrides(raw: dict[str, Any], overrides: dict[str, Any], where: str, key: str, what: str) -> None:
    """The spec with ``overrides`` written in must be valid, model arguments included."""
    trial_raw = copy.deepcopy(raw)
    trial_raw.pop("search", None)
    trial_raw.pop("experiments", None)
    for path, value in overrides.items():
        set_path(trial_raw, path, value)
    try:
        trial = _parse(trial_raw, where)
        _check_model(trial.model, where, "model")
    except SpecError as exc:
        detail = str(exc).removeprefix(f"{where}: ")
        raise SpecError(f"{where}: {key}: {what} is not valid for {detail}") from None


def _check_resources(spec: SearchSpec, where: str) -> None:
    res = spec.resources
    if res.depends_on is None:
        if res.per_value:
            raise SpecError(f"{where}: resources.per_value: needs resources.depends_on naming a searched path")
        return
    dist = spec.search.get(res.depends_on)
    if not isinstance(dist, (Choice, Grid)):
        raise SpecError(
            f"{where}: resources.depends_on: expected a searched path with choice or grid values "
            f"(got {res.depends_on!r})"
        )
    # per_value may name values the search does not sample (yet): a GPU table kept ready for
    # `--set search.model.args.size.values=[...]`; the dry run prints what each value gets.


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
