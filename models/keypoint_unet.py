"""Keypoint U-Net: one heatmap per landmark (vertebra corners on spine radiographs, say).

A plain U-Net (Ronneberger et al. 2015) maps the image to K heatmaps at full resolution,
regressed with MSE onto Gaussians of standard deviation `sigma` pixels centred on the true
keypoints (the heatmap regression of Tompson et al. 2014 and SimpleBaseline). The targets
are rendered here, from the coordinates in the batch, so that sigma is a model argument a
search can vary. Keypoints are read back as each heatmap's peak, refined to sub-pixel
precision by a Gaussian fit to the peak and its neighbours.

Shapes: B batch, C image channels, H x W pixels, K keypoints; coordinates are (x, y)
pixels with x along W and pixel centres at integers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import Tensor, nn

from models.figures import as_numpy, new_figure, show_image
from models.registry import register_model
from models.unet_parts import ConvBlock, Encoder, UNetConfig, check_input_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def render_heatmaps(keypoints: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """[B, K, 2] (x, y) -> [B, K, H, W] unnormalised Gaussians (peak 1 at a keypoint on a pixel centre)."""
    xs = torch.arange(width, device=keypoints.device, dtype=keypoints.dtype)
    ys = torch.arange(height, device=keypoints.device, dtype=keypoints.dtype)
    dx2 = (xs - keypoints[..., 0:1]) ** 2  # [B, K, W]
    dy2 = (ys - keypoints[..., 1:2]) ** 2  # [B, K, H]
    # Separable: exp(-(dx^2 + dy^2) / 2 s^2) as the outer product of two 1-D Gaussians.
    return torch.exp(-dy2 / (2 * sigma**2))[..., :, None] * torch.exp(-dx2 / (2 * sigma**2))[..., None, :]


def heatmap_peaks(heatmaps: Tensor) -> Tensor:
    """[B, K, H, W] -> [B, K, 2] (x, y): each map's argmax, refined to sub-pixel precision.

    The refinement fits a parabola through the log of the peak and its two neighbours,
    along x and along y: exact for a Gaussian peak, which is what the maps are trained to
    be (the Taylor step of DARK, Zhang et al. 2020, in its 1-D form). The shift never
    exceeds half a pixel, since the peak is the largest of the three. Values <= 0 count as
    a tiny positive, so a peak with no positive neighbour stays on its pixel, and so does
    a peak on the border along the axis where one neighbour is missing.
    """
    B, K, H, W = heatmaps.shape
    flat = heatmaps.flatten(2).argmax(-1)  # [B, K]
    y, x = flat // W, flat % W
    logs = F.pad(heatmaps, (1, 1, 1, 1)).clamp_min(1e-6).log()  # padding only keeps the indexing in range
    batch = torch.arange(B, device=heatmaps.device)[:, None]
    channel = torch.arange(K, device=heatmaps.device)[None, :]

    def at(dy: int, dx: int) -> Tensor:  # [B, K] log-values around the peaks
        return logs[batch, channel, y + 1 + dy, x + 1 + dx]

    centre = at(0, 0)

    def vertex(before: Tensor, after: Tensor, inside: Tensor) -> Tensor:
        curvature = before - 2 * centre + after  # < 0 at a strict maximum
        fits = inside & (curvature < 0)
        return torch.where(fits, 0.5 * (before - after) / curvature.clamp_max(-1e-12), 0.0)

    shift_x = vertex(at(0, -1), at(0, 1), (x > 0) & (x < W - 1))
    shift_y = vertex(at(-1, 0), at(1, 0), (y > 0) & (y < H - 1))
    return torch.stack([x + shift_x, y + shift_y], dim=-1)


def keypoint_errors(predicted: Tensor, true: Tensor) -> Tensor:
    """[B, K, 2] twice -> [B, K] Euclidean distances in pixels."""
    return (predicted - true).norm(dim=-1)


def pck(predicted: Tensor, true: Tensor, threshold: float) -> Tensor:
    """Percentage of correct keypoints, as a fraction: the share within `threshold` pixels of the truth."""
    return (keypoint_errors(predicted, true) <= threshold).float().mean()


class KeypointUNetConfig(UNetConfig):
    """Arguments of `keypoint_unet`, a U-Net regressing `num_keypoints` Gaussian heatmaps of `sigma` pixels."""

    num_keypoints: PositiveInt = 4
    sigma: PositiveFloat = 2.0  # pixels
    pck_fraction: Annotated[float, Field(gt=0, le=1)] = 0.05  # the PCK threshold as a share of the longer side


class KeypointUNet(nn.Module):
    def __init__(self, config: KeypointUNetConfig) -> None:
        super().__init__()
        depth, num_keypoints = config.depth, config.num_keypoints
        self.depth, self.num_keypoints = depth, num_keypoints
        self.sigma, self.pck_fraction = config.sigma, config.pck_fraction
        self.encoder = Encoder(config.in_channels, depth, config.base_width)
        widths = self.encoder.widths
        # up[i] takes level i+1 to level i's resolution and width; decode[i] merges it with the skip.
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth - 1))
        self.decode = nn.ModuleList(ConvBlock(2 * widths[i], widths[i]) for i in range(depth - 1))
        self.head = nn.Conv2d(widths[0], num_keypoints, kernel_size=1)

    def heatmaps(self, image: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, K, H, W]."""
        check_input_size(image, self.depth)
        features = self.encoder(image)
        x = features[-1]
        for level in reversed(range(self.depth - 1)):
            x = self.decode[level](torch.cat([features[level], self.up[level](x)], dim=1))
        return self.head(x)

    def _loss(self, heatmaps: Tensor, keypoints: Tensor) -> Tensor:
        target = render_heatmaps(keypoints.float(), heatmaps.shape[-2], heatmaps.shape[-1], self.sigma)
        # float32: under bf16 autocast, a mean over every pixel of K maps loses precision.
        return F.mse_loss(heatmaps.float(), target)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": self._loss(self.heatmaps(batch["image"]), batch["keypoints"])}

    @torch.no_grad()
    def validation_metrics(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Batch means of the heatmap loss, the keypoint error in pixels, and PCK at pck_fraction of the image.

        `generator` is unused: nothing here is random.
        """
        heatmaps = self.heatmaps(batch["image"])
        keypoints = batch["keypoints"].float()
        predicted = heatmap_peaks(heatmaps.float())
        threshold = self.pck_fraction * max(heatmaps.shape[-2:])
        return {
            "loss": self._loss(heatmaps, keypoints),
            "mean_error_px": keypoint_errors(predicted, keypoints).mean(),
            "pck": pck(predicted, keypoints, threshold),
        }

    @torch.no_grad()
    def validation_figures(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Figure]:
        """Predicted against true keypoints on each image of the batch."""
        predicted = heatmap_peaks(self.heatmaps(batch["image"]).float())
        return {"keypoints": keypoint_figure(batch["image"], batch["keypoints"].float(), predicted)}


def keypoint_figure(images: Tensor, true: Tensor, predicted: Tensor, columns: int = 4) -> Figure:
    """One panel per image [B, C, H, W]: true keypoints [B, K, 2] as circles, predicted as
    crosses, a line from each truth to its prediction, the mean error in the title."""
    rows = -(-len(images) // columns)
    figure, axes = new_figure(rows, min(columns, len(images)))
    for index, ax in enumerate(axes.flat):
        if index >= len(images):
            ax.set_axis_off()
            continue
        show_image(ax, images[index], f"image {index}: {float(keypoint_errors(predicted[index], true[index]).mean()):.1f} px")
        t, p = as_numpy(true[index]), as_numpy(predicted[index])
        for (tx, ty), (px, py) in zip(t, p):
            ax.plot([tx, px], [ty, py], color="yellow", linewidth=0.8)
        ax.scatter(t[:, 0], t[:, 1], s=28, facecolors="none", edgecolors="lime", label="true")
        ax.scatter(p[:, 0], p[:, 1], s=28, marker="x", color="red", label="predicted")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    return figure


@register_model
def keypoint_unet(config: KeypointUNetConfig) -> KeypointUNet:
    """Keypoint heatmap U-Net; its arguments are `KeypointUNetConfig`'s."""
    return KeypointUNet(config)
