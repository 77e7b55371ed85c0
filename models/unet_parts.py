"""Building blocks shared by the U-Net families (keypoint heatmaps, attention segmentation).

A U-Net of `depth` levels (Ronneberger et al. 2015) has `base_width * 2**i` channels at
level i and halves the resolution from one level to the next, so an input's height and
width must be multiples of 2**(depth - 1).

GroupNorm rather than BatchNorm: trials run at a few images per batch on CPU, where batch
statistics are noisy and running averages lag behind the weights at validation time.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field, PositiveInt
from torch import Tensor, nn

from models.arguments import ModelArgs

NORM_GROUPS = 8  # at most; fewer when a level has fewer channels


class UNetConfig(ModelArgs):
    """The arguments every U-Net family shares; each family's config adds its own."""

    # Resolution levels, one downsampling at least; input sides must be multiples of 2**(depth-1).
    depth: Annotated[int, Field(ge=2)] = 4
    base_width: PositiveInt = 16  # channels of the first level, doubled at each level below
    in_channels: PositiveInt = 1


def check_input_size(image: Tensor, depth: int) -> None:
    """Say which sizes fit rather than fail in a skip connection's concatenation."""
    multiple = 2 ** (depth - 1)
    height, width = image.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(f"image height and width must be multiples of 2**(depth-1) = {multiple} "
                         f"for depth {depth}, got {height}x{width}")


class ConvBlock(nn.Sequential):
    """(3x3 conv, GroupNorm, ReLU) twice: [B, in, H, W] -> [B, out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size=3, padding=1, bias=False),  # the norm has the bias
                nn.GroupNorm(math.gcd(NORM_GROUPS, out_channels), out_channels),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class Encoder(nn.Module):
    """The contracting path: [B, C, H, W] -> features of every level, finest first.

    Level i gives [B, base_width * 2**i, H / 2**i, W / 2**i]; the last is the bottleneck.
    """

    def __init__(self, in_channels: int, depth: int, base_width: int) -> None:
        super().__init__()
        self.widths = [base_width * 2**level for level in range(depth)]
        self.levels = nn.ModuleList(
            ConvBlock(in_channels if level == 0 else self.widths[level - 1], width)
            for level, width in enumerate(self.widths)
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for level, block in enumerate(self.levels):
            x = block(x if level == 0 else self.pool(x))
            features.append(x)
        return features
