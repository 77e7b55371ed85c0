"""What a checkpoint holds, and the one call that turns an exported checkpoint into a model.

A checkpoint is a folder with ``checkpoint.pt`` (model, optimizer, scheduler and scaler
state, epoch, metrics) and ``config.yaml`` (the resolved spec the trial ran). Loading uses
``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from importlib import import_module
from pathlib import Path
from typing import Any

import torch
import yaml

from data import build_splits
from models import create_model
from trainables.spec import SearchSpec

STATE_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.json"  # the best model's own report on its validation split


def config_text(config: dict[str, Any]) -> str:
    """The resolved spec as it is stored in every checkpoint (made once per trial: dumping
    YAML at every epoch costs more than saving a small model)."""
    return yaml.safe_dump(config, sort_keys=False)


def save_checkpoint(folder: Path, state: dict[str, Any], config: str) -> Path:
    """Write ``state`` and the ``config_text`` of the trial's spec to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / STATE_FILE)
    (folder / CONFIG_FILE).write_text(config)
    return folder


STAGING_PREFIX = "hpsearch-ckpt-"


def staging_folder() -> Path:
    """An empty folder, one per process, where a checkpoint is written before Ray copies it.

    Tune may abandon a stopped trial's thread inside ``report`` and workers may be killed,
    so a temporary folder per checkpoint would leak (tens of MB each). One folder per
    process, emptied before each use, bounds that; folders of processes that are gone are
    removed too (once per process: scanning the temp folder at every epoch costs more than the
    checkpoint of a small model).
    """
    root = Path(tempfile.gettempdir())
    _remove_stale_staging_folders(root, os.getpid())
    folder = root / f"{STAGING_PREFIX}{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


@functools.cache
def _remove_stale_staging_folders(root: Path, pid: int) -> None:
    for stale in root.glob(f"{STAGING_PREFIX}*"):
        owner = stale.name.removeprefix(STAGING_PREFIX)
        if owner.isdigit() and int(owner) != pid and not _process_exists(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


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
    for module in config.get("imports", []):  # where a user's own model is registered
        import_module(module)
    model = create_model(config["model"]["name"], **config["model"]["args"])
    model.load_state_dict(load_state(folder, map_location)["model"])
    return model.to(map_location).eval()


def write_model_report(folder: str | Path, batch_size: int = 64) -> Path | None:
    """Run the model's own ``report(loader)`` (a classification report and confusion matrix,
    say) on the validation split it was trained with; saved as ``report.json`` in ``folder``.
    Returns None for models without a report."""
    model = load_model(folder)
    if not hasattr(model, "report"):
        return None
    spec = SearchSpec.model_validate(load_config(folder))
    loader = torch.utils.data.DataLoader(build_splits(spec.data).val, batch_size=batch_size)
    with torch.no_grad():
        report = model.report(loader)
    path = Path(folder) / REPORT_FILE
    path.write_text(json.dumps(report, indent=2, default=float))
    return path
