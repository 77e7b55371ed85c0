"""Per-trial validation figures: when they are drawn, on which samples, and where they go.

The loop draws a model's optional ``validation_figures(batch, generator)`` hook (a dict of
name -> matplotlib Figure) every ``training.figures_every`` epochs and on the last one,
into ``figures/`` of the checkpoint it is about to report, so the figures travel with the
checkpoint (into ``best/`` for the best trial). On the driver, the tracking listener copies
them out of each new checkpoint into ``<out>/figures/<trial>/epoch_NNN/`` (a folder that
outlives the checkpoint, for MLflow writes that wait while a server is down) and logs them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from models import contract
from trainables.outputs import FIGURES_DIR
from trainables.spec.schema import TrainingSpec

FIGURE_SEED = 1234  # the same masks (MAE) at every epoch, so figures of one trial compare


def figures_due(cfg: TrainingSpec, epoch: int, last: bool) -> bool:
    return cfg.figures_every > 0 and (last or epoch % cfg.figures_every == 0)


def save_validation_figures(model: torch.nn.Module, dataset: Dataset, folder: Path,
                            device: torch.device) -> list[Path]:
    """Draw the model's figures on the first samples of ``dataset`` into ``folder`` as PNGs.

    Returns the files written; none for a model without the hook or an empty dataset.
    """
    count = min(contract.figure_samples(model), len(dataset))
    if count == 0:
        return []
    batch = default_collate([dataset[i] for i in range(count)])
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    generator = torch.Generator(device=device).manual_seed(FIGURE_SEED)
    was_training = model.training
    model.eval()
    try:
        figures = contract.validation_figures(model, batch, generator)
    finally:
        model.train(was_training)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        paths.append(folder / f"{name}.png")
        figure.savefig(paths[-1])
    return paths


def write_best_figures(folder: Path) -> list[Path]:
    """Draw the figures of an exported checkpoint whose epoch drew none (a best epoch that
    fell between figure epochs), on its validation split; nothing when figures are off."""
    from data import build_splits
    from trainables.spec.schema import SearchSpec
    from trainables.trial.checkpoints import load_config, load_model

    spec = SearchSpec.model_validate(load_config(folder))
    if (folder / FIGURES_DIR).exists() or spec.training.figures_every == 0:
        return []
    with torch.no_grad():
        return save_validation_figures(load_model(folder), build_splits(spec.data).val, folder / FIGURES_DIR,
                                       torch.device("cpu"))
