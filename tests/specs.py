"""Small real specs for tests, built from the shipped YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from trainables.results.record import SearchRecord

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SEARCH_SPACES = PROJECT_ROOT / "search_spaces"


def write_spec(folder: Path, raw: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def tiny_mae_spec(experiment: str = "tiny") -> dict:
    """mae_sizes.yaml shrunk to seconds: tiny crops, two sizes, few steps."""
    raw = yaml.safe_load((SEARCH_SPACES / "mae_sizes.yaml").read_text())
    raw["experiment"] = experiment
    # One metric, as most tests assume (the shipped file ranks quality against parameters).
    raw.pop("objectives", None)
    raw.update(metric="val_mse", mode="min")
    raw["model"]["args"].update(img_size=8, patch_size=4, spectral_patch=5, in_chans=10)
    raw["data"].update(crop=8, window=16)
    raw["data"]["synthetic"].update(cubes=4, bands=10, height=32, width=32)
    raw["training"].update(epochs=3, batch_size=4, max_steps_per_epoch=2, warmup_epochs=0)
    raw["search"]["model.args.size"] = {"type": "choice", "values": ["tiny", "small"]}
    raw["budget"].update(trials=4, time_limit_minutes=None)
    # ASHA by epochs, as a seconds-long search needs (the shipped file judges by training seconds).
    raw["scheduler"] = {"type": "asha", "time_attr": "training_iteration", "grace_period": 1, "reduction_factor": 2}
    return raw


def read_record(out: Path) -> SearchRecord | None:
    """A search's record through the product's own reader (a line still being written is left
    for the next read), ranked by the spec the search saved; None before the launch wrote it."""
    from trainables.outputs import RECORD_FILE, SPEC_FILE
    from trainables.results.record import SearchRecord
    from trainables.spec.schema import SearchSpec, import_user_modules

    if not (out / RECORD_FILE).is_file():
        return None
    raw = yaml.safe_load((out / SPEC_FILE).read_text())
    import_user_modules(raw.get("imports") or [])  # a data kind of the user's own validates the spec
    return SearchRecord(out, SearchSpec.model_validate(raw).objective)


def recorded_epochs(out: Path) -> dict[str, list[dict]]:
    """Each trial's recorded epochs in order (its metrics, with ``epoch`` and ``time``), from
    the search's record (empty before it is written)."""
    record = read_record(out)
    return {trial.trial_id: [{**metrics, "epoch": epoch} for epoch, metrics in sorted(trial.epochs.items())]
            for trial in (record.trials.values() if record else ())}
