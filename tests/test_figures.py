"""Per-trial validation figures: each model family's `validation_figures` on real tiny models
and tensors, drawn into matplotlib Figures whose contents are checked, and saved as PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from models import create_model
from trainables.trial.figures import figures_due, save_validation_figures
from trainables.spec.schema import TrainingSpec


def _items(n: int, **shapes) -> list[dict[str, torch.Tensor]]:
    return [{key: make(i) for key, make in shapes.items()} for i in range(n)]


def test_mae_figures_show_input_masked_input_baseline_reconstruction_band_error_and_spectra() -> None:
    torch.manual_seed(0)
    model = create_model("mae_vit", size="tiny", img_size=8, patch_size=4, spectral_patch=5, in_chans=10).eval()
    batch = {"cube": torch.randn(4, 10, 8, 8)}
    figures = model.validation_figures(batch, generator=torch.Generator().manual_seed(0))
    assert set(figures) == {"mae_reconstruction", "mae_band_error", "mae_spectra"}
    grid = figures["mae_reconstruction"].axes
    assert len(grid) == 4 * 4 and all(len(ax.images) == 1 for ax in grid)
    assert [ax.get_title().split(" (")[0] for ax in grid[:4]] == ["input", "masked input", "band-mean baseline",
                                                                 "reconstruction"]
    (bars,) = figures["mae_band_error"].axes
    assert len(bars.patches) == 10  # one bar per band
    spectra = figures["mae_spectra"].axes
    assert len(spectra) == 3 and all(len(ax.get_lines()) == 3 for ax in spectra)  # input, reconstruction, baseline
    assert len(spectra[0].get_lines()[0].get_ydata()) == 10


def test_segmentation_figure_overlays_true_and_predicted_masks_on_each_input() -> None:
    model = create_model("attention_unet", depth=2, base_width=4).eval()
    batch = {"image": torch.randn(3, 3, 16, 16), "mask": (torch.rand(3, 1, 16, 16) > 0.5).float()}
    (figure,) = model.validation_figures(batch).values()
    assert len(figure.axes) == 3 * 2
    assert all(len(ax.images) == 2 for ax in figure.axes)  # the input and its mask overlay
    assert figure.axes[0].get_title() == "true mask" and figure.axes[1].get_title().startswith("predicted (Dice")


def test_keypoint_figure_marks_true_and_predicted_points() -> None:
    model = create_model("keypoint_unet", depth=2, base_width=4, num_keypoints=4).eval()
    batch = {"image": torch.randn(5, 1, 16, 16), "keypoints": torch.rand(5, 4, 2) * 15}
    (figure,) = model.validation_figures(batch).values()
    drawn = [ax for ax in figure.axes if ax.images]
    assert len(drawn) == 5
    for ax in drawn:
        true, predicted = ax.collections
        assert len(true.get_offsets()) == len(predicted.get_offsets()) == 4


@pytest.mark.parametrize("name, args, batch, panels", [
    ("image_classifier", {"width": 4, "depth": 1},
     {"images": torch.randn(30, 1, 8, 8), "labels": torch.arange(30) % 10}, 1),
    ("resnet3d_multitask", {"width": 4, "clip_frames": 4},
     {"clips": torch.rand(6, 2, 1, 4, 16, 16), "labels_phase": torch.arange(6) % 3,
      "labels_quality": torch.arange(6) % 2}, 2),
])
def test_classifiers_draw_a_confusion_matrix_per_task_over_the_batch(name, args, batch, panels) -> None:
    model = create_model(name, **args).eval()
    (figure,) = model.validation_figures(batch).values()
    assert len(figure.axes) == panels
    for ax in figure.axes:
        assert ax.images[0].get_array().sum() == len(batch["labels" if "labels" in batch else "labels_phase"])


def test_figures_are_saved_as_png_on_the_first_validation_samples(tmp_path: Path) -> None:
    model = create_model("keypoint_unet", depth=2, base_width=4).train()
    dataset = [{"image": torch.randn(1, 16, 16), "keypoints": torch.rand(4, 2) * 15} for _ in range(7)]
    (path,) = save_validation_figures(model, dataset, tmp_path / "figures", torch.device("cpu"))
    assert path == tmp_path / "figures" / "keypoints.png"
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
    assert model.training  # the loop's model is left in the mode it was in
    assert save_validation_figures(torch.nn.Linear(1, 1), dataset, tmp_path / "none", torch.device("cpu")) == []


def test_figures_are_due_every_k_epochs_and_on_the_last_and_never_when_off() -> None:
    every3 = TrainingSpec(figures_every=3)
    assert [e for e in range(1, 8) if figures_due(every3, e, last=e == 7)] == [3, 6, 7]
    off = TrainingSpec(figures_every=0)
    assert not any(figures_due(off, e, last=True) for e in range(1, 4))
