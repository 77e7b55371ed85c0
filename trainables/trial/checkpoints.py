"""What a checkpoint holds, and the one call that turns an exported checkpoint into a model.

A checkpoint is a folder with ``checkpoint.pt`` (model, optimizer, scheduler and scaler
state, epoch, metrics) and ``config.yaml`` (the resolved spec the trial ran). Loading uses
``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from data import build_splits
from models import contract, create_model
from trainables.disk_space import as_disk_full
from trainables.outputs import (
    CHECKPOINT_CONFIG_FILE,
    CHECKPOINT_STATE_FILE,
    MODEL_EVALUATION_FILE,
    checkpoint_name,
)
from trainables.spec.schema import SearchSpec, import_user_modules



def config_text(config: dict[str, Any]) -> str:
    """The resolved spec as it is stored in every checkpoint (made once per trial: dumping
    YAML at every epoch costs more than saving a small model)."""
    return yaml.safe_dump(config, sort_keys=False)


def save_checkpoint(trial_folder: Path, epoch: int, state: dict[str, Any], config: str,
                    extra: Callable[[Path], None] | None = None) -> Path:
    """Write one epoch's checkpoint into the trial's folder of the output folder.

    Written beside its final name and renamed, so a checkpoint folder is always whole: a kill
    mid-write leaves only a ``.tmp`` folder, removed by the trial's next save. A full disk
    raises DiskFullError (an environment fault, never the trial's: see trainables/disk_space.py)
    and the partial folder is removed, giving its space back.
    """
    final = trial_folder / checkpoint_name(epoch)
    tmp = trial_folder / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        # Through a Python file: torch's own writer turns ENOSPC into a RuntimeError with no errno.
        with (tmp / CHECKPOINT_STATE_FILE).open("wb") as handle:
            torch.save(state, handle)
        (tmp / CHECKPOINT_CONFIG_FILE).write_text(config)
        if extra is not None:  # more files that belong with the epoch (its validation figures)
            extra(tmp)
    except Exception as exc:
        full = as_disk_full(exc, trial_folder, f"the checkpoint of epoch {epoch}")
        if full is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise full from exc
    shutil.rmtree(final, ignore_errors=True)  # an unrecorded copy of this epoch from a killed run
    tmp.rename(final)
    return final


# What a checkpoint keeps once its trial will not train again: what loading and fine-tuning
# need (the weights, and what they scored), not the optimizer state that doubles an AdamW
# checkpoint's size twice over.
FINAL_STATE_KEYS = ("model", "epoch", "metrics", "best_value")


def slim_checkpoint(folder: Path) -> None:
    """Drop the training state of a checkpoint whose trial has ended (rewritten in place, atomically)."""
    state = load_state(folder)
    if set(state) <= set(FINAL_STATE_KEYS):
        return
    tmp = folder / f".{CHECKPOINT_STATE_FILE}.tmp"
    torch.save({k: state[k] for k in FINAL_STATE_KEYS if k in state}, tmp)
    tmp.replace(folder / CHECKPOINT_STATE_FILE)


def latest_checkpoint(trial_folder: Path) -> Path | None:
    """The trial's newest whole checkpoint, or None for a trial starting afresh."""
    found = sorted(p for p in trial_folder.glob("epoch_*") if p.is_dir() and (p / CHECKPOINT_STATE_FILE).exists())
    return found[-1] if found else None


def load_state(folder: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(folder) / CHECKPOINT_STATE_FILE, map_location=map_location, weights_only=True)


def load_config(folder: str | Path) -> dict[str, Any]:
    return yaml.safe_load((Path(folder) / CHECKPOINT_CONFIG_FILE).read_text())


def load_model(folder: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the trained model from a checkpoint folder (for instance ``results/<exp>/best``).

    Returns the model in eval mode with the trained weights; ``load_config(folder)`` gives the
    spec it was trained with (data settings included, for the normalisation it expects).
    """
    config = load_config(folder)
    import_user_modules(config.get("imports", []))  # where a user's own model is registered
    model = create_model(config["model"]["name"], **config["model"]["args"])
    model.load_state_dict(load_state(folder, map_location)["model"])
    return model.to(map_location).eval()


def write_model_evaluation(folder: str | Path, batch_size: int = 64) -> Path | None:
    """Run the model's own ``evaluation(loader)`` (per-class scores and a confusion matrix,
    say) on the validation split it was trained with; saved as ``evaluation.json`` in
    ``folder``. Returns None for models without an evaluation."""
    spec = SearchSpec.model_validate(load_config(folder))
    evaluation = contract.evaluation(load_model(folder), lambda: torch.utils.data.DataLoader(
        build_splits(spec.data).val, batch_size=batch_size))
    if evaluation is None:
        return None
    path = Path(folder) / MODEL_EVALUATION_FILE
    path.write_text(json.dumps(evaluation, indent=2, default=float))
    return path
