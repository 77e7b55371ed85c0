"""Spectral masked autoencoder (MAE, He et al. 2021) for hyperspectral cubes.

Follows facebookresearch/mae `models_mae.py` step by step (`patchify`, `random_masking`,
`forward_encoder`, `forward_decoder`, `forward_loss`, `unpatchify`), with three changes:

* Patches are 3-D: `patch_size` x `patch_size` pixels by `spectral_patch` bands, so the
  encoder must infer masked bands from neighbouring bands as well as neighbouring pixels.
  Any band count works (the original hard-codes 3 channels).
* No cls token: MAE fine-tunes with global average pooling by default, and without it the
  token bookkeeping in masking and unshuffling has no off-by-one.
* The loss adds spectral terms (angle, variance, range) to the masked-patch MSE.

Shapes: B batch, C bands, H x W pixels, s = spectral_patch, p = patch_size,
L = (C/s)(H/p)(W/p) tokens ordered (band group, row, column), D encoder width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveInt, model_validator
from torch import Tensor, nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from models.arguments import ModelArgs, refuse
from models.figures import as_numpy, masked_band_spans, new_figure, show_image
from models.registry import register_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class MAESize:
    depth: int
    num_heads: int
    embed_dim: int
    decoder_depth: int
    decoder_num_heads: int


MAE_SIZES: dict[str, MAESize] = {
    "tiny": MAESize(12, 3, 192, 8, 3),
    "small": MAESize(12, 6, 384, 8, 6),
    "base": MAESize(12, 12, 768, 8, 12),
    "medium": MAESize(16, 16, 512, 8, 16),
    "large": MAESize(24, 16, 1024, 8, 16),
    "huge": MAESize(32, 16, 1280, 8, 16),
}
MAE_SIZE_NAMES: tuple[str, ...] = tuple(MAE_SIZES)

# Default decoder width = 32 per decoder head: 96 ... 512, so the three big sizes get the
# original MAE's 512-wide, 16-head decoder and the small ones a proportionally lighter one.
DECODER_HEAD_DIM = 32

# mse is the MAE objective (~1 for standardised data predicted as its mean). sam is in
# radians (pi/2 for an untrained model), so 0.1 shapes the spectra without outweighing the
# mse. variance and range are zero for a good reconstruction; they only push back against
# the flat, mean-spectrum predictions plain MSE drifts towards early in training.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"mse": 1.0, "sam": 0.1, "variance": 0.05, "range": 0.05}
LossPart = Literal[tuple(DEFAULT_LOSS_WEIGHTS)]

# Keeps acos away from +-1, where its gradient is infinite.
_COS_LIMIT = 1.0 - 1e-6


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, N, D/heads]
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    """Pre-norm transformer block: timm's ViT Block without dropout or drop-path.

    MAE pre-training uses neither.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_pos_embed_1d(dim: int, pos: Tensor) -> Tensor:
    """[N] positions -> [N, dim] sin-cos embedding (MAE's formula; odd dims get one zero column)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / max(dim // 2, 1))
    angles = pos.float()[:, None] * omega[None]  # [N, dim/2]
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim % 2))


def sincos_pos_embed_3d(dim: int, grid: tuple[int, int, int]) -> Tensor:
    """[1, L, dim] fixed embedding of a (bands, rows, cols) token grid, flattened in that order.

    Fixed rather than learned, as in MAE (which found it as good): it costs no parameters,
    so parameter counts are the learnable weights only, and it needs no initialisation to
    get right for every grid shape a search tries. Each spatial axis gets an even third of
    the width; the spectral axis the rest.
    """
    spatial = 2 * (dim // 6)
    dims = (dim - 2 * spatial, spatial, spatial)
    coords = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    parts = [sincos_pos_embed_1d(d, c.flatten()) for d, c in zip(dims, coords)]
    return torch.cat(parts, dim=1)[None]


def spectral_angle(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean angle (radians) between predicted and true spectra, over each pixel's masked bands.

    pred, target, mask: [B, C, H, W], mask 1 = masked. A pixel's spectrum spans C/s tokens,
    some visible; restricting the angle to masked bands keeps copied inputs from diluting it.
    Pixels with no masked band are left out.
    """
    dot = (mask * pred * target).sum(1)  # [B, H, W]
    norms = (mask * pred**2).sum(1) * (mask * target**2).sum(1)
    cos = dot / norms.clamp_min(1e-12).sqrt()
    angle = torch.acos(cos.clamp(-_COS_LIMIT, _COS_LIMIT))
    pixels = mask.amax(1)
    return (angle * pixels).sum() / pixels.sum()


def masked_patch_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error of [B, L, s*p*p] patches over the masked tokens (mask [B, L], 1 = masked)."""
    per_token = ((pred - target) ** 2).mean(dim=-1)  # [B, L]
    return (per_token * mask).sum() / mask.sum()


def variance_deficit(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean of relu(var_true - var_pred) across each pixel's masked bands.

    Penalises only predictions flatter than the truth: MSE alone rewards regressing to the
    mean spectrum, which erases the absorption features that distinguish materials.
    """
    n = mask.sum(1)  # [B, H, W] masked bands per pixel

    def band_var(x: Tensor) -> Tensor:
        mean = (mask * x).sum(1, keepdim=True) / n.clamp_min(1)[:, None]
        return (mask * (x - mean) ** 2).sum(1) / n.clamp_min(1)

    pixels = (n >= 2).to(pred.dtype)  # a variance needs two bands
    deficit = F.relu(band_var(target) - band_var(pred))
    return (deficit * pixels).sum() / pixels.sum().clamp_min(1)


def range_penalty(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared distance of masked predictions from the batch target's [min, max]."""
    outside = pred - pred.clamp(target.min(), target.max())  # 0 inside the range
    return (mask * outside**2).sum() / mask.sum()


def band_image_metrics(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """PSNR and SSIM of [B, C, H, W] cubes, each band a 2-D image, data range from the target.

    PSNR is pooled over all band images: a per-band mean would be +inf whenever all of one
    band's patches happen to be visible, and a searcher would take that as the best trial.
    """
    B, C, H, W = target.shape
    pred, target = pred.float().reshape(B * C, 1, H, W), target.float().reshape(B * C, 1, H, W)
    data_range = (target.max() - target.min()).item()
    # torchmetrics sizes the Gaussian window from sigma (radius int(3.5 sigma + 0.5)) and
    # ignores kernel_size, so a window that fits small crops needs a smaller sigma.
    radius = min(5, (min(H, W) - 1) // 2)
    sigma = 1.5 if radius == 5 else radius / 3.5
    psnr = peak_signal_noise_ratio(pred, target, data_range=data_range)
    ssim = structural_similarity_index_measure(pred, target, sigma=sigma, data_range=data_range)
    return psnr, ssim


class MAEConfig(ModelArgs):
    """Arguments of `mae_vit`, a spectral MAE-ViT of one of `MAE_SIZE_NAMES`.

    A lighter decoder (decoder_depth) is a knob for CPU budgets: on 16-pixel crops, tiny
    with 2 decoder blocks takes about 20% less time a step than with 8.
    """

    size: Literal[MAE_SIZE_NAMES] = "tiny"  # encoder depth, width and heads; decoder heads
    img_size: PositiveInt = 32  # crop side in pixels
    in_chans: PositiveInt = 30  # bands
    patch_size: PositiveInt = 8  # pixels per patch side
    spectral_patch: PositiveInt = 5  # bands per patch
    mask_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.75
    loss_weights: dict[LossPart, NonNegativeFloat] = Field(default_factory=dict)  # overrides of DEFAULT_LOSS_WEIGHTS
    decoder_dim: PositiveInt | None = None  # None: DECODER_HEAD_DIM per decoder head
    decoder_depth: PositiveInt | None = None  # None: the size's (8 blocks, as MAE)
    norm_pix_loss: bool = False  # MAE's per-patch normalised target

    @model_validator(mode="after")
    def _shapes_fit(self) -> MAEConfig:
        if self.img_size % self.patch_size:
            refuse("img_size", f"must be a multiple of patch_size = {self.patch_size}", self.img_size)
        if self.in_chans % self.spectral_patch:
            refuse("in_chans", f"must be a multiple of spectral_patch = {self.spectral_patch}", self.in_chans)
        heads = self.arch.decoder_num_heads
        if self.decoder_width % heads:
            refuse("decoder_dim", f"must be a multiple of the {heads} decoder heads of size {self.size!r}",
                   self.decoder_dim)
        patches = self.grid[0] * self.grid[1] * self.grid[2]
        if int(patches * (1 - self.mask_ratio)) < 1:
            refuse("mask_ratio", f"leaves none of the {patches} patches visible; expected a lower mask_ratio "
                   "or smaller patches", self.mask_ratio)
        return self

    @property
    def arch(self) -> MAESize:
        return MAE_SIZES[self.size]

    @property
    def decoder_width(self) -> int:
        return self.decoder_dim or DECODER_HEAD_DIM * self.arch.decoder_num_heads

    @property
    def decoder_blocks(self) -> int:
        return self.decoder_depth or self.arch.decoder_depth

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens along (bands, rows, columns)."""
        side = self.img_size // self.patch_size
        return self.in_chans // self.spectral_patch, side, side


class MaskedAutoencoderViT(nn.Module):
    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        self.grid = config.grid
        self.img_size, self.in_chans = config.img_size, config.in_chans
        self.patch_size, self.spectral_patch = config.patch_size, config.spectral_patch
        self.mask_ratio = config.mask_ratio
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **config.loss_weights}
        self.norm_pix_loss = config.norm_pix_loss
        arch, embed_dim, decoder_dim = config.arch, config.arch.embed_dim, config.decoder_width
        patch_dim = config.spectral_patch * config.patch_size**2

        # Encoder. Conv3d over a 1-channel volume == a linear layer on `patchify` output.
        kernel = (config.spectral_patch, config.patch_size, config.patch_size)
        self.patch_embed = nn.Conv3d(1, embed_dim, kernel_size=kernel, stride=kernel)
        # Buffers, not parameters: recomputed from the config, so kept out of checkpoints.
        self.register_buffer("pos_embed", sincos_pos_embed_3d(embed_dim, self.grid), persistent=False)
        self.blocks = nn.Sequential(*(Block(embed_dim, arch.num_heads) for _ in range(arch.depth)))
        self.norm = nn.LayerNorm(embed_dim)

        # Decoder.
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed_3d(decoder_dim, self.grid), persistent=False
        )
        self.decoder_blocks = nn.Sequential(
            *(Block(decoder_dim, arch.decoder_num_heads) for _ in range(config.decoder_blocks))
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch_dim)

        self.initialize_weights()

    def initialize_weights(self) -> None:
        # As MAE: the patch embedding initialised like the linear layer it is.
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.weight.shape[0], -1))
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, cube: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, L, s*p*p]; tokens flattened (band, row, col) like the Conv3d kernel."""
        s, p = self.spectral_patch, self.patch_size
        c, h, w = self.grid
        x = cube.reshape(cube.shape[0], c, s, h, p, w, p)
        x = torch.einsum("ncshpwq->nchwspq", x)
        return x.reshape(cube.shape[0], c * h * w, s * p * p)

    def unpatchify(self, x: Tensor) -> Tensor:
        """[B, L, s*p*p] -> [B, C, H, W]; the exact inverse of `patchify`."""
        s, p = self.spectral_patch, self.patch_size
        c, h, w = self.grid
        x = x.reshape(x.shape[0], c, h, w, s, p, p)
        x = torch.einsum("nchwspq->ncshpwq", x)
        return x.reshape(x.shape[0], c * s, h * p, w * p)

    def random_masking(
        self, x: Tensor, mask_ratio: float, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Keep a random (1 - mask_ratio) of each sample's tokens, by argsort of uniform noise.

        x: [B, L, D] -> kept tokens [B, L_keep, D], mask [B, L] (1 = masked), ids_restore [B, L].
        """
        B, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        # Noise drawn on the generator's device, so a CPU generator also seeds GPU validation.
        noise_device = generator.device if generator is not None else x.device
        noise = torch.rand(B, L, generator=generator, device=noise_device).to(x.device)
        ids_shuffle = noise.argsort(dim=1)  # ascending: the smallest noise is kept
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = x.gather(1, ids_keep[..., None].expand(-1, -1, D))
        mask = torch.ones(B, L, device=x.device)
        mask[:, :len_keep] = 0
        return x_masked, mask.gather(1, ids_restore), ids_restore

    def forward_encoder(
        self, cube: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """[B, C, H, W] -> latent [B, L_keep, D], mask [B, L], ids_restore [B, L]."""
        expected = (self.in_chans, self.img_size, self.img_size)
        if tuple(cube.shape[1:]) != expected:
            # The positional embedding fixes the grid; say so rather than fail in a broadcast.
            raise ValueError(
                f"expected a cube of shape [B, {', '.join(map(str, expected))}], got {list(cube.shape)}"
            )
        x = self.patch_embed(cube.unsqueeze(1))  # [B, D, C/s, H/p, W/p]
        x = x.flatten(2).transpose(1, 2) + self.pos_embed  # [B, L, D]
        x, mask, ids_restore = self.random_masking(x, self.mask_ratio, generator)
        return self.norm(self.blocks(x)), mask, ids_restore

    def forward_decoder(self, x: Tensor, ids_restore: Tensor) -> Tensor:
        """latent [B, L_keep, D] -> predicted patches [B, L, s*p*p]."""
        x = self.decoder_embed(x)  # [B, L_keep, Dd]
        B, len_keep, Dd = x.shape
        mask_tokens = self.mask_token.expand(B, ids_restore.shape[1] - len_keep, Dd)
        x = torch.cat([x, mask_tokens], dim=1)  # [B, L, Dd] in shuffled order
        x = x.gather(1, ids_restore[..., None].expand(-1, -1, Dd))  # unshuffle
        x = x + self.decoder_pos_embed
        return self.decoder_pred(self.decoder_norm(self.decoder_blocks(x)))

    def target_stats(self, target: Tensor) -> tuple[Tensor, Tensor]:
        """Per-patch mean and std of [B, L, s*p*p] patches, as MAE's norm_pix_loss uses them."""
        return target.mean(dim=-1, keepdim=True), (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()

    def loss_target(self, cube: Tensor) -> Tensor:
        """[B, C, H, W] -> the patches [B, L, s*p*p] the decoder learns to predict (float32):
        per-patch normalised with norm_pix_loss, as they are otherwise."""
        target = self.patchify(cube.float())
        if self.norm_pix_loss:
            mean, std = self.target_stats(target)
            target = (target - mean) / std
        return target

    def band_mean_prediction(self, cube: Tensor, mask_cube: Tensor) -> Tensor:
        """The trivial prediction [B, C, H, W]: every pixel of each band is that band's mean over
        the crop's visible pixels (mask_cube [B, C, H, W], 1 = masked).

        A band with no visible pixel in the crop is predicted as 0, the dataset's band mean
        after the data kind's standardisation.
        """
        visible = 1.0 - mask_cube
        means = (cube * visible).sum(dim=(2, 3)) / visible.sum(dim=(2, 3)).clamp_min(1)  # [B, C]
        return means[..., None, None].expand_as(cube)

    def baseline_mse(self, cube: Tensor, mask: Tensor) -> Tensor:
        """The masked-patch MSE of `band_mean_prediction`: the same crop, the same masked
        patches and the same units as `mse` (with norm_pix_loss the prediction is normalised
        with the true patch's statistics, as the target is), so `mse` below it is what the
        model learned beyond the band means it can see. mask [B, L], 1 = masked.
        """
        cube = cube.float()
        baseline = self.patchify(self.band_mean_prediction(cube, self.mask_cube(mask)))
        if self.norm_pix_loss:
            mean, std = self.target_stats(self.patchify(cube))
            baseline = (baseline - mean) / std
        return masked_patch_mse(baseline, self.loss_target(cube), mask)

    def forward_loss(self, cube: Tensor, pred: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Weighted sum of the loss parts on masked patches; parts returned detached for logging.

        cube [B, C, H, W], pred [B, L, s*p*p], mask [B, L] with 1 = masked.
        """
        # float32: under bf16 autocast, the sums over bands and pixels lose precision.
        pred, target = pred.float(), self.loss_target(cube)
        mse = masked_patch_mse(pred, target, mask)
        # The spectral terms work per pixel, so on the cube layout.
        mask_cube = self.mask_cube(mask)
        pred_cube, target_cube = self.unpatchify(pred), self.unpatchify(target)
        parts = {
            "mse": mse,
            "sam": spectral_angle(pred_cube, target_cube, mask_cube),
            "variance": variance_deficit(pred_cube, target_cube, mask_cube),
            "range": range_penalty(pred_cube, target_cube, mask_cube),
        }
        loss = sum(self.loss_weights[name] * value for name, value in parts.items())
        return {"loss": loss, **{name: value.detach() for name, value in parts.items()}}

    def forward_prediction(self, cube: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Mask, encode, decode: predicted patches [B, L, s*p*p] and mask [B, L] (1 = masked)."""
        latent, mask, ids_restore = self.forward_encoder(cube, generator)
        return self.forward_decoder(latent, ids_restore), mask

    def mask_cube(self, mask: Tensor) -> Tensor:
        """Token mask [B, L] -> [B, C, H, W], 1 where a value is masked."""
        return self.unpatchify(mask[..., None].expand(-1, -1, self.spectral_patch * self.patch_size**2))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        pred, mask = self.forward_prediction(batch["cube"])
        return self.forward_loss(batch["cube"], pred, mask)

    def fill_masked(self, cube: Tensor, pred: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The input cube with its masked patches replaced by the prediction.

        Returns the reconstruction and the mask, both [B, C, H, W] (mask 1 = masked).
        """
        pred = pred.float()
        if self.norm_pix_loss:
            # The prediction is in per-patch normalised units; like MAE's visualisation,
            # undo that with the true patch's statistics, so the masked patches' mean and
            # std leak into the reconstruction and PSNR/SSIM measure structure only.
            mean, std = self.target_stats(self.patchify(cube.float()))
            pred = pred * std + mean
        mask_cube = self.mask_cube(mask).to(cube.dtype)
        recon = torch.where(mask_cube.bool(), self.unpatchify(pred).to(cube.dtype), cube)
        return recon, mask_cube

    @torch.no_grad()
    def reconstruct(
        self, cube: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mask, encode, decode: (reconstruction [B, C, H, W], mask [B, C, H, W] with 1 = masked)."""
        return self.fill_masked(cube, *self.forward_prediction(cube, generator))

    @torch.no_grad()
    def validation_metrics(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Batch means of loss, mse, sam (degrees), psnr and ssim of the filled-in cube, and
        `baseline_mse`, the mse of predicting each band's visible mean on the same patches.

        Seed `generator` the same way to mask the same tokens and get the same numbers.
        """
        cube = batch["cube"]
        pred, mask = self.forward_prediction(cube, generator)
        metrics = self.forward_loss(cube, pred, mask)
        del metrics["variance"], metrics["range"]  # training regularisers, not quality measures
        metrics["sam"] = torch.rad2deg(metrics["sam"])
        metrics["baseline_mse"] = self.baseline_mse(cube, mask)
        recon, _ = self.fill_masked(cube, pred, mask)
        metrics["psnr"], metrics["ssim"] = band_image_metrics(recon, cube)
        return metrics

    @torch.no_grad()
    def validation_figures(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Figure]:
        """Pictures of a few validation cubes: RGB renderings of input, masked input and
        reconstruction, the error per band, and input against reconstructed spectra.

        Seed `generator` as for `validation_metrics` to mask the same tokens every time.
        """
        cube = batch["cube"].float()
        recon, mask = self.reconstruct(cube, generator)
        # The trivial prediction `baseline_mse` scores, filled in the same masked patches: a
        # reconstruction that learned nothing looks like it.
        baseline = torch.where(mask.bool(), self.band_mean_prediction(cube, mask), cube)
        return {
            "mae_reconstruction": reconstruction_figure(cube, recon, mask, baseline),
            "mae_band_error": band_error_figure(cube, recon, mask),
            "mae_spectra": spectra_figure(cube, recon, mask, baseline),
        }


def rgb_bands(bands: int) -> list[int]:
    """Three bands spread over the spectrum, the longest wavelength shown as red."""
    return [min(bands - 1, round(bands * f)) for f in (0.8, 0.5, 0.2)]


def reconstruction_figure(cube: Tensor, recon: Tensor, mask: Tensor, baseline: Tensor) -> Figure:
    """Rows: cubes [B, C, H, W]; columns: input, masked input (masked values black), the band-mean
    baseline and the reconstruction, both filled into the masked patches."""
    bands = rgb_bands(cube.shape[1])
    masked_input = torch.where(mask.bool(), cube.min(), cube)
    panels = {"input": cube, "masked input": masked_input, "band-mean baseline": baseline, "reconstruction": recon}
    figure, axes = new_figure(len(cube), len(panels))
    for row in range(len(cube)):
        reference = cube[row, bands]  # one stretch per row, so the panels compare
        for ax, (title, image) in zip(axes[row], panels.items()):
            show_image(ax, image[row, bands], f"{title} (cube {row})", reference)
    return figure


def band_error_figure(cube: Tensor, recon: Tensor, mask: Tensor) -> Figure:
    """Mean squared error of the masked values, per band (a band never masked has no bar)."""
    masked = mask.sum(dim=(0, 2, 3))
    error = ((recon - cube) ** 2 * mask).sum(dim=(0, 2, 3)) / masked.clamp_min(1)
    error = torch.where(masked > 0, error, torch.nan)
    figure, axes = new_figure(1, 1, width=5.5, height=2.8)
    ax = axes[0, 0]
    ax.bar(range(len(error)), as_numpy(error), color="tab:red")
    ax.set_xlabel("band")
    ax.set_ylabel("MSE of masked values")
    ax.set_title("reconstruction error per band", fontsize=9)
    return figure


def spectra_figure(cube: Tensor, recon: Tensor, mask: Tensor, baseline: Tensor, pixels: int = 3) -> Figure:
    """Input against reconstructed and band-mean baseline spectra at the centre pixel of the first
    `pixels` cubes; masked bands shaded."""
    count = min(pixels, len(cube))
    row, col = cube.shape[2] // 2, cube.shape[3] // 2
    figure, axes = new_figure(1, count, width=3.4, height=2.6)
    for index, ax in enumerate(axes[0]):
        for first, last in masked_band_spans(mask[index, :, row, col] > 0):
            ax.axvspan(first - 0.5, last + 0.5, color="0.88", linewidth=0)
        ax.plot(as_numpy(cube[index, :, row, col]), label="input")
        ax.plot(as_numpy(recon[index, :, row, col]), "--", label="reconstruction")
        ax.plot(as_numpy(baseline[index, :, row, col]), ":", color="0.4", label="band-mean baseline")
        ax.set_title(f"cube {index}, pixel ({row}, {col})", fontsize=8)
        ax.set_xlabel("band", fontsize=8)
    axes[0, 0].legend(fontsize=7, title="shaded: masked", title_fontsize=7)
    return figure


@register_model
def mae_vit(config: MAEConfig) -> MaskedAutoencoderViT:
    """Spectral MAE-ViT; its arguments are `MAEConfig`'s."""
    return MaskedAutoencoderViT(config)
