"""Checks and previews that run before Ray starts: data, model-versus-data shapes, the output
folder, and the ``--dry-run`` report (sampled configurations and parameter counts)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import yaml

from data import DataError, build_splits
from trainables.disk_space import free_bytes, size_text
from models import create_model
from trainables.outputs import RECORD_FILE, SPEC_FILE, SPLIT_FILE
from trainables.spec.distributions import Choice, Grid
from trainables.spec.resources import TrialResources, trial_resources
from trainables.spec.schema import SearchSpec, SpecError, trial_spec


def check_data_and_model(spec: SearchSpec, where: str) -> dict[str, torch.Tensor]:
    """Prepare the data (generating synthetic data on first use) and run every model variant
    the search can sample on the meta device against a real sample's shape. Returns the sample."""
    try:
        sample = build_splits(spec.data).train[0]
    except DataError as exc:
        raise SpecError(f"{where}: data: {exc}") from None
    # A batch of two: BatchNorm refuses a training-mode batch of one on 1x1 feature maps.
    batch = {k: v.unsqueeze(0).expand(2, *v.shape).to("meta") for k, v in sample.items() if torch.is_tensor(v)}
    for label, variant in model_variants(spec):
        try:
            with torch.device("meta"):
                model = create_model(variant.model.name, **variant.model.args)
                model(batch)
        except (ValueError, RuntimeError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpecError(f"{where}: model{label}: does not fit the data sample "
                            f"{tuple(next(iter(sample.values())).shape)}: {detail}") from None
    return sample


def write_split_manifest(spec: SearchSpec, out_dir: Path) -> Path:
    """Record the train/validation split the trials use (each trial re-derives the same seeded
    split from the data settings, so workers on other nodes need no shared file)."""
    path = out_dir / SPLIT_FILE
    build_splits(spec.data).manifest.to_json(path)
    return path


def model_variants(spec: SearchSpec) -> list[tuple[str, SearchSpec]]:
    """The spec's model plus one variant per candidate value of each searched model argument."""
    variants = [("", spec)]
    for path, dist in spec.search.items():
        if path.startswith("model."):
            for value in dist.candidate_values():
                variants.append((f" ({path}={value!r})", trial_spec(spec, {path: value})))
    return variants


def parameter_counts(spec: SearchSpec) -> list[tuple[str, int]]:
    """Parameters of the spec's model and of each searched discrete model choice (sizes, say),
    counted on the meta device (no weights allocated)."""
    counts = []
    discrete = [f" ({path}=" for path, dist in spec.search.items() if isinstance(dist, (Choice, Grid))]
    for label, variant in model_variants(spec):
        if label and not any(label.startswith(prefix) for prefix in discrete):
            continue
        with torch.device("meta"):
            model = create_model(variant.model.name, **variant.model.args)
        counts.append((label.strip(" ()") or "as specified", sum(p.numel() for p in model.parameters())))
    return counts


def resource_table(spec: SearchSpec) -> list[tuple[str, TrialResources]]:
    res = spec.resources
    if not res.depends_on:
        return [("every trial", trial_resources(spec, {}, gpus=True))]
    values = spec.search[res.depends_on].values  # type: ignore[union-attr]
    return [(f"{res.depends_on}={v}", trial_resources(spec, {res.depends_on: v}, gpus=True)) for v in values]


def sample_configs(spec: SearchSpec, count: int) -> list[dict[str, Any]]:
    """A few configurations drawn from the search space (random draws; TPE starts the same way)."""
    rng = random.Random(spec.searcher.seed)
    configs = []
    for index in range(count):
        config = {}
        for path, dist in spec.search.items():
            if isinstance(dist, Grid):
                config[path] = dist.values[index % len(dist.values)]
            else:
                config[path] = dist.to_tune().sample(random_state=rng.randrange(2**31))
        configs.append(config)
    return configs


def check_warm_start(spec: SearchSpec, out_dir: Path, where: str) -> None:
    """A search cannot start from its own folder (loading.py checks each folder is an earlier
    search with this spec's metric and mode)."""
    own = str(out_dir.expanduser().resolve())
    for index, folder in enumerate(spec.searcher.warm_start):
        if folder == own:
            raise SpecError(f"{where}: searcher.warm_start.{index}: {folder} is this search's own output folder; "
                            f"name an earlier search's (or choose another folder with --out)")


def make_output_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"{out_dir}: output folder is not writable ({exc.strerror})") from None


def prepare_output(spec: SearchSpec, out_dir: Path, resume: bool) -> bool:
    """Make (or reopen) the search's folder; returns True when continuing a search there.

    Nothing in an existing folder is written over. A search that did not finish (interrupted,
    or its launcher killed) with the same spec is continued, as with ``resume``; a finished
    one is reopened only with ``resume``; one with a different spec is refused. A folder
    whose search never started (only the spec written, say a failed resource check) is
    taken over. The caller holds the folder's lock (trainables.folder_lock).
    """
    from trainables.results.record import SEARCH_FINISHED, SearchRecord

    resolved = resolved_yaml(spec)
    spec_path = out_dir / SPEC_FILE
    if (out_dir / RECORD_FILE).exists():
        if not spec_path.exists() or spec_path.read_text() != resolved:
            raise SpecError(f"{out_dir}: holds a search with a different spec ({spec_path}); "
                            f"choose another folder with --out")
        state = SearchRecord(out_dir, spec.objective).state
        if state == SEARCH_FINISHED and not resume:
            raise SpecError(f"{out_dir}: holds a finished search ({out_dir / RECORD_FILE}); "
                            f"pass --resume to reopen it, or choose another folder with --out")
        return True
    make_output_folder(out_dir)
    try:
        spec_path.write_text(resolved)
    except OSError as exc:
        raise SpecError(f"{out_dir}: output folder is not writable ({exc.strerror})") from None
    return False


def resolved_yaml(spec: SearchSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def default_out_dir(spec: SearchSpec) -> Path:
    return Path("results") / spec.experiment


def dry_run_report(spec: SearchSpec, out_dir: Path, samples: int = 3) -> str:
    lines = ["# Resolved spec", resolved_yaml(spec).rstrip(), ""]
    if spec.experiments:
        lines.append(f"# {len(spec.experiments)} experiments (one trial each, {spec.budget.trials} time(s))")
        lines += [f"{name}: {overrides or 'the shared defaults'}" for name, overrides in spec.experiments.items()]
    else:
        lines.append(f"# {samples} sampled configurations")
        for index, config in enumerate(sample_configs(spec, samples), 1):
            lines.append(f"{index}. " + ", ".join(f"{k}={_fmt(v)}" for k, v in config.items()))
    lines += ["", "# Model parameters (counted on the meta device)"]
    lines += [f"{label}: {count / 1e6:.2f}M" for label, count in parameter_counts(spec)]
    lines += ["", f"# Resources per trial where the cluster has GPUs (without GPUs: {spec.resources.workers} "
                  f"worker(s) per trial, no GPU, the same CPUs and memory)"]
    lines += [f"{label}: {r.workers} worker(s) x ({r.describe()})" for label, r in resource_table(spec)]
    from trainables.prepare.space import space_needed

    need = space_needed(spec, out_dir)
    lines += ["", f"# Disk: a search of this spec needs {need.describe()}; "
                  f"{size_text(free_bytes(out_dir))} free where {out_dir}/ is"]
    lines += ["", f"Spec and data are valid. A real run writes to {out_dir}/"]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
