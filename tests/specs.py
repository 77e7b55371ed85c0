"""Small real specs for tests, built from the shipped YAML files."""

from __future__ import annotations

from pathlib import Path

import json

import yaml

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


def recorded_epochs(out: Path) -> dict[str, list[dict]]:
    """Each trial's recorded epochs in order (its metrics, with ``epoch`` and ``time``), read
    straight from the search's record (a line still being written is skipped)."""
    from trainables.outputs import RECORD_FILE

    rows: dict[str, list[dict]] = {}
    path = out / RECORD_FILE
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event["e"] == "trial":
            rows.setdefault(event["id"], [])
        elif event["e"] == "epoch":
            rows[event["id"]].append({**event["metrics"], "epoch": event["epoch"], "time": event["t"]})
    return rows
