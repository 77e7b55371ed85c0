"""Attention U-Net for binary segmentation (Oktay et al. 2018, "Attention U-Net: Learning Where
to Look for the Pancreas").

A U-Net whose skip connections pass through additive attention gates: the decoder's
coarser features (the gating signal g) decide, pixel by pixel, how much of the encoder's
skip features x reach the decoder, so background clutter in x is suppressed. The gate
follows the paper's grid-attention block (ozan-oktay/Attention-Gated-Networks): x is
brought to g's resolution by a strided 2x2 convolution, the sum of both projections goes
through ReLU, a 1x1 convolution and a sigmoid, and the coefficients are upsampled back to
x's resolution.

The loss is BCE plus `dice_weight` times the soft Dice loss (BCE gives well-behaved
per-pixel gradients, Dice counters the imbalance of small foregrounds); validation reports
IoU and Dice of the thresholded mask.

Shapes: B batch, C input channels, H x W pixels; masks [B, 1, H, W] in {0, 1}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import Tensor, nn

from models.figures import as_numpy, new_figure, show_image
from models.registry import register_model
from models.unet_parts import ConvBlock, Encoder, UNetConfig, check_input_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class AttentionGate(nn.Module):
    """x [B, Cx, H, W] gated by g [B, Cg, H/2, W/2] -> x * alpha, alpha [B, 1, H, W] in (0, 1)."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter_channels, kernel_size=1)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)

    def coefficients(self, x: Tensor, g: Tensor) -> Tensor:
        """The attention map alpha [B, 1, H, W]."""
        alpha = torch.sigmoid(self.psi(F.relu(self.theta(x) + self.phi(g))))  # [B, 1, H/2, W/2]
        return F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        return x * self.coefficients(x, g)


def soft_dice_loss(logits: Tensor, masks: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice of sigmoid(logits) [B, 1, H, W] against masks, per image then averaged.

    `smooth` keeps an image with an empty mask and an empty prediction at loss 0, not 0/0.
    """
    probs = torch.sigmoid(logits).flatten(1)
    masks = masks.flatten(1)
    dice = (2 * (probs * masks).sum(1) + smooth) / (probs.sum(1) + masks.sum(1) + smooth)
    return 1 - dice.mean()


def iou_and_dice(predicted: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image IoU and Dice of binary [B, 1, H, W] masks, averaged over the batch.

    An image where both masks are empty scores 1 on both (nothing to find, nothing found).
    """
    predicted, masks = predicted.flatten(1).float(), masks.flatten(1).float()
    intersection = (predicted * masks).sum(1)
    total = predicted.sum(1) + masks.sum(1)
    union = total - intersection
    ones = torch.ones_like(total)
    iou = torch.where(union > 0, intersection / union.clamp_min(1), ones)
    dice = torch.where(total > 0, 2 * intersection / total.clamp_min(1), ones)
    return iou.mean(), dice.mean()


class AttentionUNetConfig(UNetConfig):
    """Arguments of `attention_unet`, an Attention U-Net for binary masks."""

    in_channels: PositiveInt = 3  # 2 geometric channels, or 3 with intensity
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1  # Dropout2d rate on the bottleneck
    dice_weight: NonNegativeFloat = 1.0  # weight of the soft Dice loss added to BCE


class AttentionUNet(nn.Module):
    def __init__(self, config: AttentionUNetConfig) -> None:
        super().__init__()
        depth = config.depth
        self.depth, self.dice_weight = depth, config.dice_weight
        self.encoder = Encoder(config.in_channels, depth, config.base_width)
        widths = self.encoder.widths
        # Dropout on the bottleneck only, where the features are widest and most prone to
        # co-adapt; the decoder's fine levels need every pixel's evidence.
        self.bottleneck_dropout = nn.Dropout2d(config.dropout)
        # At level i: gates[i] filters the skip with the coarser level i+1 as gating signal,
        # up[i] brings level i+1 to level i, decode[i] merges both.
        self.gates = nn.ModuleList(
            AttentionGate(widths[i], widths[i + 1], max(1, widths[i] // 2)) for i in range(depth - 1)
        )
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth - 1))
        self.decode = nn.ModuleList(ConvBlock(2 * widths[i], widths[i]) for i in range(depth - 1))
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)

    def logits(self, image: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, 1, H, W] foreground logits."""
        check_input_size(image, self.depth)
        features = self.encoder(image)
        g = self.bottleneck_dropout(features[-1])
        for level in reversed(range(self.depth - 1)):
            skip = self.gates[level](features[level], g)
            g = self.decode[level](torch.cat([skip, self.up[level](g)], dim=1))
        return self.head(g)

    def _losses(self, logits: Tensor, masks: Tensor) -> dict[str, Tensor]:
        # float32: under bf16 autocast, sums over every pixel lose precision.
        logits, masks = logits.float(), masks.float()
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        dice_loss = soft_dice_loss(logits, masks)
        return {"loss": bce + self.dice_weight * dice_loss, "bce": bce.detach(), "dice_loss": dice_loss.detach()}

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self._losses(self.logits(batch["image"]), batch["mask"])

    @torch.no_grad()
    def validation_metrics(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Batch means of the loss, BCE, and IoU and Dice of the mask thresholded at probability 0.5.

        `generator` is unused: nothing here is random (dropout is off in eval mode).
        """
        logits = self.logits(batch["image"])
        losses = self._losses(logits, batch["mask"])
        iou, dice = iou_and_dice(logits > 0, batch["mask"] > 0.5)
        return {"loss": losses["loss"], "bce": losses["bce"], "iou": iou, "dice": dice}

    @torch.no_grad()
    def validation_figures(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Figure]:
        """The true and the predicted mask overlaid on each input of the batch (a row each)."""
        predicted = self.logits(batch["image"]) > 0
        return {"segmentation_overlay": mask_overlay_figure(batch["image"], batch["mask"] > 0.5, predicted)}


def mask_overlay_figure(images: Tensor, true: Tensor, predicted: Tensor) -> Figure:
    """Rows: images [B, C, H, W]; columns: the true mask [B, 1, H, W] and the predicted one,
    tinted over the input, with the Dice of the prediction in its title."""
    figure, axes = new_figure(len(images), 2)
    for row in range(len(images)):
        _, dice = iou_and_dice(predicted[row : row + 1], true[row : row + 1])
        for ax, mask, title, colour in ((axes[row, 0], true[row], "true mask", "Greens"),
                                         (axes[row, 1], predicted[row], f"predicted (Dice {float(dice):.2f})", "Reds")):
            show_image(ax, images[row], title)
            values = as_numpy(mask[0])
            ax.imshow(np.ma.masked_where(values == 0, values), cmap=colour, alpha=0.5, vmin=0, vmax=1.2,
                      interpolation="nearest")
    return figure


@register_model
def attention_unet(config: AttentionUNetConfig) -> AttentionUNet:
    """Attention U-Net for binary masks; its arguments are `AttentionUNetConfig`'s."""
    return AttentionUNet(config)
