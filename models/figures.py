"""Chart helpers the models use to draw their own validation outputs (`validation_figures`).

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot: no global
figure registry to leak from a long-running trial process, and no GUI backend needed.
matplotlib is imported inside the functions so that importing a model stays fast.

Images come in as [C, H, W] tensors; `display_image` turns one into something `imshow`
shows: grey for one channel, RGB for three, each channel stretched between its 2nd and
98th percentiles (standardised data has no fixed range).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PANEL_INCHES = 2.4  # side of one image panel
DPI = 80  # small files: a trial logs a few of these every few epochs


def new_figure(rows: int, cols: int, width: float = PANEL_INCHES, height: float = PANEL_INCHES) -> tuple[Figure, np.ndarray]:
    """A figure with a rows x cols grid of axes (always a 2-D array)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(cols * width, rows * height), dpi=DPI, layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False)


def display_image(image: Tensor, reference: Tensor | None = None) -> np.ndarray:
    """[C, H, W] -> [H, W] (C == 1, or the first channel when C is 2) or [H, W, 3] in [0, 1].

    The stretch comes from `reference` when given (an input and its reconstruction then
    share one scale, so their difference shows).
    """
    def channels(x: Tensor) -> Tensor:
        x = x.detach().float().cpu()
        return x[:3] if x.shape[0] >= 3 else x[:1]

    image = channels(image)
    flat = channels(image if reference is None else reference).flatten(1)
    low = flat.quantile(0.02, dim=1)[:, None, None]
    high = flat.quantile(0.98, dim=1)[:, None, None]
    stretched = ((image - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
    return stretched[0].numpy() if stretched.shape[0] == 1 else stretched.permute(1, 2, 0).numpy()


def show_image(ax: Axes, image: Tensor, title: str = "", reference: Tensor | None = None) -> None:
    ax.imshow(display_image(image, reference), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def confusion_figure(matrices: dict[str, Tensor]) -> Figure:
    """One confusion matrix per entry (rows true, columns predicted), drawn by scikit-learn."""
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = new_figure(1, len(matrices), width=3.6, height=3.4)
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        ConfusionMatrixDisplay(confusion_matrix=matrix.cpu().numpy()).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(title, fontsize=9)
    return figure


def masked_band_spans(masked: Tensor) -> list[tuple[int, int]]:
    """[C] booleans -> (first, last) band of each run of masked bands, for shading."""
    spans, start = [], None
    for band, is_masked in enumerate(masked.tolist() + [False]):
        if is_masked and start is None:
            start = band
        elif not is_masked and start is not None:
            spans.append((start, band - 1))
            start = None
    return spans


def as_numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()

