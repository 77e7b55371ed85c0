"""The search spec's sections: what a spec may hold, its defaults, and the spec of one trial.

A spec comes from a YAML file through loading.py (``load_spec``), which words every problem
as one line. The resolved spec (every default filled in) is what gets saved next to the
results and what each trial starts from (``trial_spec``).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from data import DataConfig, HyperspectralDataConfig
from trainables.objective import Objective
from trainables.spec.distributions import Distribution, Grid
from trainables.spec.schedulers import PARETO, SchedulerSpec, default_scheduler
from trainables.spec.section import Section

# Paths a search may address; data settings are searchable too (crop size, say).
SEARCHABLE_SECTIONS = ("model", "training", "data")
# In a matrix, the trial config key holding the name of the one experiment (of the spec's
# `experiments:` section) that the trial runs.
EXPERIMENT_KEY = "experiment"


class SpecError(ValueError):
    """A bad spec: the message is one line naming the file, the key path and the expectation."""


_Section = Section


class ModelSpec(_Section):
    name: str  # a name from models.list_models()
    args: dict[str, Any] = {}  # keyword arguments for the model factory; checked by its argument model


class TrainingSpec(_Section):
    epochs: PositiveInt = 10  # full budget of a trial; the scheduler may stop or pause it sooner
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
    # Earlier output folders this search starts from (optuna only): their trials that the
    # space contains are told to TPE, and their best configurations are tried first
    # (trainables/search/warm_start.py). Made absolute when the spec loads (~ expanded,
    # relative to the current folder), so the saved spec names the folders it read.
    warm_start: list[str] = []

    @field_validator("warm_start", mode="before")
    @classmethod
    def _one_folder(cls, folders: Any) -> Any:
        return [folders] if isinstance(folders, str) else folders

    @field_validator("warm_start")
    @classmethod
    def _absolute(cls, folders: list[str]) -> list[str]:
        return [str(Path(folder).expanduser().resolve()) for folder in folders]


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
    # Several objectives instead of metric/mode: a list of {metric, mode}, the first the quality
    # that picks best/ (and becomes metric/mode), the others what it costs, e.g. cost_params
    # (trainables/objective.py names the costs measured for every trial). A spec gives either
    # metric/mode or objectives; the resolved spec holds both (objectives = [metric/mode] for one).
    objectives: list[Objective] = []
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
            import_user_modules(imports)
        return _primary_from_objectives(raw)

    @field_validator("objectives")
    @classmethod
    def _objectives_agree(cls, objectives: list[Objective], info: ValidationInfo) -> list[Objective]:
        metrics = [o.metric for o in objectives]
        twice = sorted({m for m in metrics if metrics.count(m) > 1})
        if twice:
            raise ValueError(f"metric {twice[0]} is named twice; each objective is a different metric")
        primary = (info.data.get("metric"), info.data.get("mode"))
        if objectives and primary != (objectives[0].metric, objectives[0].mode):
            raise ValueError(f"give either metric and mode (one objective) or objectives, not both "
                             f"(metric: {primary[0]} ({primary[1]}), objectives starts with "
                             f"{objectives[0].metric} ({objectives[0].mode}))")
        return objectives

    @model_validator(mode="after")
    def _one_list_of_objectives(self) -> "SearchSpec":
        if not self.objectives:  # one owner of the list: a single metric is a list of one
            self.objectives = [Objective(self.metric, self.mode)]
        return self

    @property
    def max_t(self) -> int:
        """Where the scheduler ends a trial, in its own count (training.epochs by default)."""
        return getattr(self.scheduler, "max_t", None) or self.training.epochs

    @property
    def objective(self) -> Objective:
        """What "better" means for this search: its primary objective (metric and mode), the
        one that picks best/ and that single-objective schedulers rank by."""
        return self.objectives[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def registered_model(self) -> str:
        return self.registry.model_name or self.experiment


def _primary_from_objectives(raw: Any) -> Any:
    """A spec that names ``objectives`` and no metric/mode gets its first as metric/mode, and,
    with several and no ``scheduler:``, the Pareto scheduler. The user's dict is not changed."""
    objectives = raw.get("objectives") if isinstance(raw, dict) else None
    if not isinstance(objectives, list) or not objectives:
        return raw
    first = objectives[0]
    first = {"metric": first.metric, "mode": first.mode} if isinstance(first, Objective) else first
    raw = dict(raw)
    if isinstance(first, dict) and {"metric", "mode"} <= first.keys() and not {"metric", "mode"} & raw.keys():
        raw.update(metric=first.get("metric"), mode=first.get("mode"))
    if len(objectives) > 1 and "scheduler" not in raw:
        raw["scheduler"] = {"type": PARETO}
    return raw


def compile_matrix(spec: SearchSpec) -> SearchSpec:
    """An experiment matrix is a grid over one categorical value, the experiment's name: it
    becomes that grid search here, so nothing downstream treats a matrix apart (only
    ``trial_spec`` writes the named experiment's overrides in, and the end of the search adds
    experiment_summary.csv)."""
    if not spec.experiments:
        return spec
    return spec.model_copy(update={"search": matrix_search(spec),
                                   "searcher": spec.searcher.model_copy(update={"type": "grid"})})


def matrix_search(spec: SearchSpec) -> dict[str, Distribution]:
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


def import_user_modules(modules: Iterable[str]) -> None:
    """Import a spec's ``imports`` (models and data kinds of the user's own): the one place
    they are imported, in every process that builds a spec's model or data (the driver, a
    trial actor, a Ray Train worker, a loaded checkpoint). Registering twice is harmless:
    a module is imported once per process."""
    for module in modules:
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


