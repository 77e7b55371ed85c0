"""Spec loading: overrides, resolution, and every validation error (one line, file + key + expectation)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.processes import launch_py, run_to_end
from tests.specs import SEARCH_SPACES, tiny_mae_spec, write_spec
from trainables.spec.distributions import Choice, Grid, IntRange, LogUniform
from trainables.spec.schema import EXPERIMENT_KEY, SpecError, trial_spec
from trainables.spec.loading import load_spec


def _with(raw: dict, path: str, value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    keys = path.split("/")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return raw


_DELETE = object()

# (case, path to change ("/"-separated), new value, text the error must contain): one case per
# rule of ours (the one-line wording of pydantic's errors is one rule: "wrong type" shows it;
# pydantic's own constraint messages are not tested again here).
BAD_SPECS = [
    ("unknown top-level key", "epochs", 3, "epochs: unknown key; expected one of:"),
    ("unknown training key", "training/epoch", 3, "training.epoch: unknown key; expected one of: batch_size"),
    ("wrong type", "training/epochs", "many", "training.epochs: Input should be a valid integer (got 'many')"),
    ("missing model", "model", _DELETE, "model: required key is missing"),
    ("unknown model", "model/name", "resnet9000", "model.name: unknown model 'resnet9000'; known models: "),
    ("unknown model argument", "model/args/depth", 3, "model.args.depth: unknown argument of model 'mae_vit'"),
    ("model argument type", "model/args/mask_ratio", "high",
     "model.args.mask_ratio: Input should be a valid number, unable to parse string as a number (got 'high')"),
    ("model arguments that do not fit", "model/args/img_size", 10,
     "model.args.img_size: must be a multiple of patch_size = 4 (got 10)"),
    ("low > high", "search/training.lr", {"type": "uniform", "low": 0.1, "high": 0.01},
     "search.training.lr: low must be < high"),
    ("log with low <= 0", "search/training.lr", {"type": "loguniform", "low": 0.0, "high": 0.01},
     "search.training.lr: low must be > 0 for loguniform (got 0.0)"),
    ("int log with low <= 0", "search/training.batch_size", {"type": "int", "low": 0, "high": 8, "log": True},
     "search.training.batch_size: low must be > 0 when log is true"),
    ("unknown distribution", "search/training.lr", {"type": "normal", "low": 0.0, "high": 1.0},
     "search.training.lr: unknown distribution type 'normal'; expected one of: uniform, loguniform, int, choice, grid"),
    ("distribution without type", "search/training.lr", {"low": 0.0, "high": 1.0},
     "search.training.lr: a distribution needs a type"),
    ("unknown distribution key", "search/training.lr", {"type": "uniform", "low": 0.1, "high": 0.2, "hi": 1},
     "search.training.lr.hi: unknown key"),
    ("searched value invalid", "search/training.epochs", {"type": "int", "low": 0, "high": 4},
     "search.training.epochs: value 0 is not valid for training.epochs: Input should be greater than 0"),
    ("search outside sections", "search/budget.trials", {"type": "int", "low": 1, "high": 4},
     "search.budget.trials: a searched path starts with one of: model, training, data"),
    ("grid with optuna", "search/training.batch_size", {"type": "grid", "values": [4, 8]},
     "search.training.batch_size: grid values need searcher.type: random"),
    ("missing data file", "data/path", "/nonexistent/cubes.h5",
     "data.path: no such file or directory: /nonexistent/cubes.h5"),
    ("unknown data key", "data/crops", 8, "data.crops: unknown key; expected one of: cache_dir, crop"),
    ("unknown data kind", "data/kind", "tabular", "data: unknown data kind 'tabular'; expected one of: "),
    ("resources on unsearched path", "resources/depends_on", "training.lr",
     "resources.depends_on: expected a searched path with choice or grid values"),
    ("unknown scheduler", "scheduler", {"type": "pbt"},
     "scheduler: unknown scheduler type 'pbt'; expected one of: promotion, pareto, asha, hyperband, none"),
    ("unknown scheduler key", "scheduler", {"type": "asha", "trust_pairs": 3},
     "scheduler.trust_pairs: unknown key; expected one of: grace_period, max_t, reduction_factor, time_attr, type"),
    ("grace period past the budget", "scheduler/grace_period", 9,
     "scheduler.grace_period: must be <= scheduler.max_t (training.epochs by default) = 3 (got 9)"),
    ("grid searcher with a range", "searcher", {"type": "grid"},
     "search.training.lr: searcher.type grid tries every combination, so it takes choice or grid values only "
     "(got a loguniform range)"),
    ("matrix and search together", "experiments", {"base": {}},
     "experiments: an experiment matrix runs exactly its experiments; remove the search section"),
    ("bad experiment name", "experiment", "../escape", "experiment: String should match pattern"),
    ("experiment name longer than a file name", "experiment", "x" * 256,
     "experiment: String should have at most 255 characters"),
    ("true where a number is expected", "training/epochs", True, "training.epochs: Input should be a valid integer"),
]


@pytest.mark.parametrize("case,path,value,expected", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_one_clear_line(tmp_path: Path, case: str, path: str, value, expected: str) -> None:
    spec_file = write_spec(tmp_path, _with(tiny_mae_spec(), path, value), "bad.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec(str(spec_file))
    message = str(caught.value)
    assert "\n" not in message
    assert "bad.yaml: " in message, message
    assert expected in message, message


def _clips_spec(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((SEARCH_SPACES / "clips.yaml").read_text())
    for path, value in changes.items():
        raw = _with(raw, path.replace("__", "/"), value)
    return write_spec(tmp_path, raw, "clips.yaml")


@pytest.mark.slow
def test_a_bad_model_argument_is_refused_at_load_as_one_line(tmp_path: Path) -> None:
    spec_file = _clips_spec(tmp_path, model__args__fusion="max")
    with pytest.raises(SpecError) as caught:
        load_spec(str(spec_file))
    assert str(caught.value) == f"{spec_file}: model.args.fusion: Input should be 'mean' or 'attention' (got 'max')"

    result = _launch("--space", str(spec_file), "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "model.args.fusion: Input should be 'mean' or 'attention' (got 'max')" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_searched_model_argument_value_is_checked_by_the_argument_model(tmp_path: Path) -> None:
    spec_file = _clips_spec(tmp_path, **{"search__model.args.fusion": {"type": "choice", "values": ["mean", "max"]}})
    with pytest.raises(SpecError) as caught:
        load_spec(str(spec_file))
    assert str(caught.value) == (f"{spec_file}: search.model.args.fusion: value 'max' is not valid for "
                                 "model.args.fusion: Input should be 'mean' or 'attention' (got 'max')")
    # A cross-argument rule, through a searched value: task weights of tasks the model lacks.
    spec_file = _clips_spec(tmp_path, **{"search__model.args.task_weights.other": {"type": "choice", "values": [1.0]}})
    with pytest.raises(SpecError, match=r"model.args.task_weights: has unknown tasks \['other'\]"):
        load_spec(str(spec_file))


def test_not_yaml_names_the_line(tmp_path: Path) -> None:
    spec_file = tmp_path / "broken.yaml"
    spec_file.write_text("experiment: x\nmodel: {name: mae_vit\n")
    with pytest.raises(SpecError, match=r"broken.yaml: line \d+: not valid YAML"):
        load_spec(str(spec_file))


def test_a_key_given_twice_names_it_and_its_line(tmp_path: Path) -> None:
    spec_file = tmp_path / "twice.yaml"
    text = yaml.safe_dump(tiny_mae_spec(), sort_keys=False).replace("  epochs: 3\n", "  epochs: 3\n  epochs: 30\n")
    spec_file.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(str(spec_file))
    line = text.splitlines().index("  epochs: 30") + 1
    assert str(caught.value) == f"{spec_file}: line {line}: not valid YAML (key 'epochs' is given twice)"


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) would read 5e-4 as the string '5e-4' and refuse it as "not a number".
    raw = tiny_mae_spec()
    raw["training"]["lr"] = "LR"
    spec_file = tmp_path / "exp.yaml"
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False).replace("LR", "5e-4"))
    spec, _ = load_spec(str(spec_file), ["training.weight_decay=1E-2",
                                         "search.training.lr={type: loguniform, low: 1e-5, high: 1e-3}"])
    assert spec.training.lr == 5e-4
    assert spec.training.weight_decay == 0.01
    assert (spec.search["training.lr"].low, spec.search["training.lr"].high) == (1e-5, 1e-3)
    with pytest.raises(SpecError, match=r"training.lr: Input should be a valid number"):
        load_spec(str(spec_file), ["training.lr=1e"])


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    spec_file = tmp_path / "list.yaml"
    spec_file.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="list.yaml: expected a mapping"):
        load_spec(str(spec_file))


def test_unknown_space_lists_known_ones() -> None:
    with pytest.raises(SpecError, match=r"no_such_space.yaml: no such file .*mae_sizes.yaml"):
        load_spec("no_such_space.yaml")


def test_name_finds_search_spaces_file_and_resolves_defaults() -> None:
    spec, path = load_spec("mae_sizes.yaml")
    assert path == (SEARCH_SPACES / "mae_sizes.yaml").resolve()
    assert spec.experiment == "mae_sizes"
    assert spec.max_t == spec.scheduler.max_t == 360  # the file gives a trial's budget in training seconds
    assert spec.scheduler.type == "pareto"  # the file ranks quality against parameters
    unset, _ = load_spec("mae_sizes.yaml", ["scheduler.max_t=null"])
    assert unset.max_t == unset.training.epochs  # ASHA's max_t defaults to the epoch budget
    assert isinstance(spec.search["training.lr"], LogUniform)
    assert isinstance(spec.search["model.args.size"], Choice)


def test_overrides_apply_with_file_validation(tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path, tiny_mae_spec())
    spec, _ = load_spec(str(spec_file), [
        "training.epochs=7",
        "model.args.loss_weights.sam=0.25",
        "search.training.lr.high=0.01",
        "search.training.batch_size={type: int, low: 2, high: 8}",
    ])
    assert spec.training.epochs == 7
    assert spec.model.args["loss_weights"]["sam"] == 0.25
    assert spec.search["training.lr"].high == 0.01
    assert isinstance(spec.search["training.batch_size"], IntRange)
    with pytest.raises(SpecError, match=r"spec.yaml \(with --set training.epoch=3\): training.epoch: unknown key"):
        load_spec(str(spec_file), ["training.epoch=3"])
    with pytest.raises(SpecError, match="expected --set key.path=value"):
        load_spec(str(spec_file), ["training.epochs"])
    with pytest.raises(SpecError, match=r"training.epochs: Input should be a valid integer"):
        load_spec(str(spec_file), ["training.epochs=true"])


def test_trial_spec_writes_sampled_values_into_the_resolved_spec(tmp_path: Path) -> None:
    spec, _ = load_spec(str(write_spec(tmp_path, tiny_mae_spec())))
    trial = trial_spec(spec, {"model.args.size": "small", "training.lr": 0.002, "model.args.loss_weights.sam": 0.3})
    assert trial.model.args["size"] == "small"
    assert trial.training.lr == 0.002
    assert trial.model.args["loss_weights"] == {"mse": 1.0, "sam": 0.3, "variance": 0.05, "range": 0.05}
    assert trial.search == {}


def _launch(*args: str) -> subprocess.CompletedProcess:
    return run_to_end(launch_py(*args))


@pytest.mark.slow
def test_cli_bad_input_exits_2_with_one_line_before_ray(tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path, _with(tiny_mae_spec(), "training/epochs", -1), "neg.yaml")
    result = _launch("--space", str(spec_file), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "neg.yaml" in result.stderr and "training.epochs" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written, no cluster started


@pytest.mark.slow
def test_cli_corrupt_data_file_is_one_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "cubes.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00garbage" * 64)
    spec_file = write_spec(tmp_path, _with(tiny_mae_spec(), "data/path", str(corrupt)))
    result = _launch("--space", str(spec_file), "--dry-run")
    assert result.returncode == 2
    assert str(corrupt) in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


@pytest.mark.slow
def test_cli_dry_run_previews_without_ray(tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path, tiny_mae_spec())
    result = _launch("--space", str(spec_file), "--dry-run", "--set", "budget.trials=5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    resolved = yaml.safe_load(out.split("# Resolved spec\n")[1].split("\n# ")[0])
    assert resolved["budget"]["trials"] == 5
    assert out.count("\n1. ") == 1 and "\n3. model.args.size=" in out
    assert "model.args.size='tiny': " in out and "model.args.size='small': " in out
    assert "Ray cluster" not in out and "dashboard" not in out.lower()


def test_experiment_matrix_validates_each_experiment(tmp_path: Path) -> None:
    raw = tiny_mae_spec()
    del raw["search"]
    raw["resources"] = {"workers": 1}
    raw["experiments"] = {"baseline": {}, "longer": {"training.epochs": 6}, "broken": {"training.epochs": 0}}
    with pytest.raises(SpecError, match=r"experiments.broken: this experiment is not valid for training.epochs: "
                                        r"Input should be greater than 0"):
        load_spec(str(write_spec(tmp_path, raw)))
    raw["experiments"]["broken"] = {"model.args.size": "gigantic"}
    spec, _ = load_spec(str(write_spec(tmp_path, raw)), ["experiments.broken={model.args.size: small}"])
    assert trial_spec(spec, {EXPERIMENT_KEY: "longer"}).training.epochs == 6
    assert trial_spec(spec, {EXPERIMENT_KEY: "broken"}).model.args["size"] == "small"
    assert trial_spec(spec, {EXPERIMENT_KEY: "baseline"}).training.epochs == spec.training.epochs


def test_experiment_matrix_is_compiled_into_a_grid_over_its_names(tmp_path: Path) -> None:
    raw = tiny_mae_spec()
    del raw["search"]
    raw["resources"] = {"workers": 1}
    raw["experiments"] = {"baseline": {}, "longer": {"training.epochs": 6}}
    spec, _ = load_spec(str(write_spec(tmp_path, raw)))
    assert spec.searcher.type == "grid" and list(spec.search) == [EXPERIMENT_KEY]
    assert isinstance(spec.search[EXPERIMENT_KEY], Grid) and spec.search[EXPERIMENT_KEY].values == ["baseline", "longer"]
    # The resolved spec (as saved in the output folder) reads back to the same spec.
    resolved = write_spec(tmp_path, spec.model_dump(mode="json"), "resolved.yaml")
    assert load_spec(str(resolved))[0] == spec


# --- data kinds of a user's own (tests/user_data_kinds.py, through `imports:`) -------------------

def _user_kind_spec() -> dict:
    raw = tiny_mae_spec()
    raw["imports"] = ["tests.user_data_kinds"]
    raw["data"] = {"kind": "noise_cubes", "cubes": 6, "bands": 10, "size": 8}
    return raw


def test_a_data_kind_registered_by_an_imported_module_loads_and_builds(tmp_path: Path) -> None:
    from data import DATA_KINDS, build_splits

    spec, _ = load_spec(str(write_spec(tmp_path, _user_kind_spec())))
    assert type(spec.data).__module__ == "tests.user_data_kinds" and spec.data.cubes == 6
    assert "noise_cubes" in DATA_KINDS
    # The resolved spec round-trips (what each trial and spec.yaml start from).
    assert trial_spec(spec, {"training.lr": 1e-3}).data == spec.data
    splits = build_splits(spec.data)
    assert (len(splits.train), len(splits.val)) == (4, 2) and splits.train[0]["cube"].shape == (10, 8, 8)


@pytest.mark.slow
def test_dry_run_accepts_a_data_kind_of_the_users_own(tmp_path: Path) -> None:
    result = _launch("--space", str(write_spec(tmp_path, _user_kind_spec())), "--dry-run")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout.split("# Resolved spec\n")[1].split("\n# ")[0])
    assert resolved["data"] == {"kind": "noise_cubes", "cubes": 6, "bands": 10, "size": 8, "seed": 0,
                                "val_fraction": 0.25}


@pytest.mark.parametrize("data,expected", [
    ({"kind": "noise_cubes", "cube": 6}, "data.cube: unknown key; expected one of: bands, cubes, kind, seed, size, "
                                         "val_fraction"),
    ({"kind": "tabular"}, "data: unknown data kind 'tabular'; expected one of: "),
    ({"cubes": 6}, "data: data needs a kind, one of: "),
])
def test_a_user_data_kinds_errors_are_one_line(tmp_path: Path, data: dict, expected: str) -> None:
    raw = _user_kind_spec()
    raw["data"] = data
    with pytest.raises(SpecError) as caught:
        load_spec(str(write_spec(tmp_path, raw, "bad.yaml")))
    message = str(caught.value)
    assert "\n" not in message and expected in message, message
    if "one of: " in expected and "unknown key" not in expected:  # the kinds listed: the user's and the built-in
        assert "noise_cubes" in message and "hyperspectral" in message, message


def test_a_module_that_registers_a_taken_data_kind_is_one_line(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "clashing_kind.py").write_text(
        "from data import ClipsDataConfig, register_data_kind\n"
        "register_data_kind(ClipsDataConfig)(lambda cfg: None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = tiny_mae_spec()
    raw["imports"] = ["clashing_kind"]
    with pytest.raises(SpecError, match=r"^.*bad.yaml: imports.0: cannot import 'clashing_kind' "
                                        r"\(data kind 'clips' is already registered"):
        load_spec(str(write_spec(tmp_path, raw, "bad.yaml")))
