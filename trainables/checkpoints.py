"""What a checkpoint holds, and the one call that turns an exported checkpoint into a model.

A checkpoint is a folder with ``checkpoint.pt`` (model, optimizer, scheduler and scaler
state, epoch, metrics) and ``config.yaml`` (the resolved spec the trial ran). Loading uses
``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from models import create_model

STATE_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"


def save_checkpoint(folder: Path, state: dict[str, Any], config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / STATE_FILE)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def load_state(folder: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(folder) / STATE_FILE, map_location=map_location, weights_only=True)


def load_config(folder: str | Path) -> dict[str, Any]:
    return yaml.safe_load((Path(folder) / CONFIG_FILE).read_text())


def load_model(folder: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the trained model from a checkpoint folder (for instance ``results/<exp>/best``).

    Returns the model in eval mode with the trained weights; ``load_config(folder)`` gives the
    spec it was trained with (data settings included, for the normalisation it expects).
    """
    config = load_config(folder)
    model = create_model(config["model"]["name"], **config["model"]["args"])
    model.load_state_dict(load_state(folder, map_location)["model"])
    return model.to(map_location).eval()
