"""Loading a spec: the YAML file, ``--set`` overrides, and every problem worded as one line.

``load_spec`` is the only way in from a file. Every problem becomes a ``SpecError`` whose
message is one line: ``<file>: <key.path>: <what was expected>``. The spec's sections (what
a spec may hold) are in schema.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from data import DATA_KINDS
from trainables.outputs import RECORD_FILE, SPEC_FILE
from trainables.spec.distributions import DISTRIBUTION_TYPES, Choice, Grid
from trainables.spec.schedulers import SCHEDULER_SECTIONS, SCHEDULER_TYPES
from trainables.spec.schema import (
    SEARCHABLE_SECTIONS,
    ModelSpec,
    SearchSpec,
    SpecError,
    compile_matrix,
    import_user_modules,
    matrix_search,
    set_path,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # trainables/spec/loading.py -> the project
SEARCH_SPACES_DIR = PROJECT_ROOT / "search_spaces"


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
    _check_warm_start(spec, where)
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
            import_user_modules([module])
        # ValueError: a module whose registration fails (a data kind or model already registered).
        except (ImportError, ValueError, TypeError) as exc:
            raise SpecError(f"{where}: imports.{index}: cannot import {module!r} ({exc})") from None


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
    if len(parts) > 1 and parts[0] == "scheduler" and parts[1] in SCHEDULER_TYPES:
        del parts[1]
    return parts


# The sections whose kind a tag picks: the tag's key, what its value is called, the message
# when it is missing, and the kinds (a callable: a user's imports may register data kinds).
_TAGGED = {"search": ("type", "distribution type", "a distribution needs a type", lambda: DISTRIBUTION_TYPES),
           "data": ("kind", "data kind", "data needs a kind", lambda: tuple(DATA_KINDS)),
           "scheduler": ("type", "scheduler type", "a scheduler needs a type", lambda: SCHEDULER_TYPES)}


def _explain(error: dict[str, Any], loc: list[str], raw: dict[str, Any]) -> str:
    kind = error["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # the latter: an objectives entry
        allowed = ["metric", "mode"] if loc[:1] == ["objectives"] else _allowed_keys(loc[:-1], raw)
        return f"unknown key; expected one of: {', '.join(allowed)}" if allowed else "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag, what, missing, expected = _TAGGED.get(loc[0] if loc else "", _TAGGED["search"])
        if kind == "union_tag_not_found":
            return f"{missing}, one of: {', '.join(expected())}"
        return f"unknown {what} {error['input'].get(tag)!r}; expected one of: {', '.join(expected())}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{message} (got {error['input']!r})" if kind not in ("value_error",) else message


def _allowed_keys(loc: list[str], raw: dict[str, Any]) -> list[str]:
    """Field names of the section at ``loc`` (for the 'unknown key' message)."""
    model: Any = SearchSpec
    if loc[:1] == ["data"]:  # data sections: the config class of the kind the section names
        model, loc = DATA_KINDS.get(str(raw.get("data", {}).get("kind"))), loc[1:]
    elif loc[:1] == ["scheduler"]:  # the scheduler: the section of the kind its type names
        model, loc = SCHEDULER_SECTIONS.get(str(raw.get("scheduler", {}).get("type"))), loc[1:]
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
    if spec.experiments and spec.search == matrix_search(spec):
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
    if spec.search and spec.search != matrix_search(spec):
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


def _check_warm_start(spec: SearchSpec, where: str) -> None:
    """Each warm-start folder must hold a search ranked as this one is: its values are what
    the sampler learns from. Its spec.yaml and record.jsonl are only read."""
    if spec.searcher.warm_start and spec.multi_objective:
        raise SpecError(f"{where}: searcher.warm_start: not yet for several objectives (objectives); "
                        f"warm start a search with one metric")
    if spec.searcher.warm_start and (spec.experiments or spec.searcher.type != "optuna"):
        raise SpecError(f"{where}: searcher.warm_start: needs searcher.type optuna and a search section "
                        f"(TPE learns from earlier trials; random, grid and experiment matrices do not)")
    for index, folder in enumerate(spec.searcher.warm_start):
        key, path = f"searcher.warm_start.{index}", Path(folder)
        if not path.is_dir():
            raise SpecError(f"{where}: {key}: no such folder: {folder}")
        for name in (RECORD_FILE, SPEC_FILE):
            if not (path / name).is_file():
                raise SpecError(f"{where}: {key}: {folder} is not the output folder of a search (no {name} in it)")
        earlier = yaml.safe_load((path / SPEC_FILE).read_text())
        metric, mode = (earlier.get("metric"), earlier.get("mode")) if isinstance(earlier, dict) else (None, None)
        if (metric, mode) != (spec.metric, spec.mode):
            raise SpecError(f"{where}: {key}: the search in {folder} ranks trials by {metric} ({mode}), "
                            f"this spec by {spec.metric} ({spec.mode}); warm start from a search with the same "
                            f"metric and mode")
        if folder in spec.searcher.warm_start[:index]:
            raise SpecError(f"{where}: {key}: {folder} is named twice")


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
