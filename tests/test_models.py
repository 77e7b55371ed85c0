"""Tests of the model registry, the contract every model follows, and the spectral MAE."""

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from pydantic import PositiveInt

from models import (
    ModelArgumentError,
    UnknownModelError,
    check_model_args,
    create_model,
    list_models,
    model_factory,
    register_model,
)
from models import contract
from models.mae_vit import MAE_SIZE_NAMES, MAE_SIZES, band_image_metrics

# Models shipped in models/ (other test modules register test-only ones in this process).
SHIPPED_MODELS = [name for name in list_models() if model_factory(name).__module__.startswith("models.")]


def smooth_cube(batch: int = 2, bands: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """[batch, bands, size, size] mixtures of 3 smooth spectra in smooth proportions.

    Standardised per band, like the real data.
    """
    g = torch.Generator().manual_seed(seed)
    wavelength = torch.linspace(0, 1, bands)
    freq, phase = torch.rand(3, 1, generator=g) * 3, torch.rand(3, 1, generator=g) * math.pi
    spectra = torch.cos(2 * math.pi * freq * wavelength + phase)  # [3, bands]
    coarse = torch.randn(batch, 3, 4, 4, generator=g)
    abundance = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).softmax(1)
    cube = torch.einsum("kc,bkhw->bchw", spectra, abundance)
    return (cube - cube.mean((0, 2, 3), keepdim=True)) / cube.std((0, 2, 3), keepdim=True)


@dataclass(frozen=True)
class ModelCase:
    kwargs: dict  # a tiny config, fast on CPU
    batch: Callable[[], dict[str, torch.Tensor]]
    patch_embed: str  # the first parameter the input meets; gradients must reach it
    validation_keys: frozenset[str]


# One entry per registered model; a new model without one fails test_every_model_has_a_case.
MODEL_CASES = {
    "mae_vit": ModelCase(
        kwargs=dict(size="tiny", img_size=16, in_chans=8, patch_size=4, spectral_patch=2),
        batch=lambda: {"cube": smooth_cube()},
        patch_embed="patch_embed.weight",
        validation_keys=frozenset({"loss", "mse", "sam", "psnr", "ssim", "baseline_mse"}),
    ),
    "resnet3d_multitask": ModelCase(
        kwargs=dict(width=4, fusion="attention", clip_frames=4),
        batch=lambda: {
            "clips": torch.randn(2, 2, 1, 6, 16, 16, generator=torch.Generator().manual_seed(0)),  # [B, V, C, T, H, W]
            "labels_phase": torch.tensor([0, 2]),
            "labels_quality": torch.tensor([1, 0]),
        },
        patch_embed="stem.0.weight",
        validation_keys=frozenset({"loss", "acc", "f1", "acc_phase", "f1_phase", "acc_quality", "f1_quality"}),
    ),
    "image_classifier": ModelCase(
        kwargs=dict(width=8, depth=2),
        batch=lambda: {
            "images": torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
            "labels": torch.tensor([0, 1, 2, 3]),
        },
        patch_embed="features.0.weight",
        validation_keys=frozenset({"loss", "accuracy"}),
    ),
    "keypoint_unet": ModelCase(
        kwargs=dict(depth=3, base_width=4),
        batch=lambda: {
            "image": torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)),
            "keypoints": torch.rand(2, 4, 2, generator=torch.Generator().manual_seed(1)) * 15,  # (x, y) pixels
        },
        patch_embed="encoder.levels.0.0.weight",
        validation_keys=frozenset({"loss", "mean_error_px", "pck"}),
    ),
    "attention_unet": ModelCase(
        kwargs=dict(depth=3, base_width=4, in_channels=2),
        batch=lambda: {
            "image": torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)),
            "mask": (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.7).float(),
        },
        patch_embed="encoder.levels.0.0.weight",
        validation_keys=frozenset({"loss", "bce", "iou", "dice"}),
    ),
}

# Full-size configuration of the spectral MAE: 500 x 500 pixels, 30 bands.
FULL_MAE = dict(img_size=500, patch_size=25, in_chans=30, spectral_patch=5)



# --- registry ---------------------------------------------------------------------------


def test_list_models_is_sorted_and_has_mae_vit() -> None:
    assert "mae_vit" in list_models()
    assert list_models() == sorted(list_models())


def test_duplicate_registration_refused() -> None:
    def mae_vit() -> torch.nn.Module:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="already registered"):
        register_model(mae_vit)
    assert model_factory("mae_vit") is not mae_vit


def test_a_plain_factory_is_validated_by_its_type_hints() -> None:
    def hinted_linear(features: PositiveInt = 4, bias: Literal["yes", "no"] = "yes") -> torch.nn.Module:
        return torch.nn.Linear(features, 1, bias=bias == "yes")

    factory = register_model(hinted_linear)
    assert list(inspect.signature(factory).parameters) == ["features", "bias"]
    assert create_model("hinted_linear", features="3").in_features == 3  # lax, as YAML values are typed
    assert create_model("hinted_linear", bias="no").bias is None
    for args, message in [({"features": 0}, "features: Input should be greater than 0 (got 0)"),
                          ({"bias": True}, "bias: Input should be 'yes' or 'no' (got True)"),
                          ({"width": 2}, ("width: unknown argument of model 'hinted_linear'; "
                                          "expected one of: features, bias"))]:
        with pytest.raises(ModelArgumentError) as caught:
            create_model("hinted_linear", **args)
        assert str(caught.value) == f"model 'hinted_linear': {message}"
        assert isinstance(caught.value, ValueError)
        with pytest.raises(ModelArgumentError, match=message.split(" (")[0]):
            check_model_args("hinted_linear", args)


@pytest.mark.parametrize("lookup", [create_model, model_factory])
def test_unknown_name_lists_known_models(lookup: Callable) -> None:
    with pytest.raises(UnknownModelError) as info:
        lookup("foo")
    assert str(info.value) == f"unknown model 'foo'; known models: {', '.join(list_models())}"
    assert isinstance(info.value, ValueError)


# --- the contract every registered model follows ----------------------------------------


def test_every_model_has_a_case() -> None:
    assert set(SHIPPED_MODELS) <= set(MODEL_CASES), "add a tiny ModelCase for each new model"


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_meets_the_contract(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert isinstance(model, contract.SearchableModel)
    assert contract.contract_violations(model) == []


def test_the_contract_check_names_what_breaks_it() -> None:
    class NoMetrics(torch.nn.Module):
        figure_samples = "many"

        def forward(self, batch: dict) -> dict:
            return {"loss": torch.zeros(())}

        def on_epoch_start(self, epoch: int) -> None:  # the service passes (epoch, epochs)
            pass

    problems = contract.contract_violations(NoMetrics())
    assert not isinstance(NoMetrics(), contract.SearchableModel)
    assert problems[0] == "NoMetrics has no validation_metrics()"
    assert problems[1].startswith("NoMetrics.on_epoch_start(epoch: int) -> None cannot take (epoch, epochs)")
    assert problems[2] == "NoMetrics.figure_samples should be int, is 'many'"
    assert len(problems) == 3


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_factory_takes_annotated_keywords_with_defaults(name: str) -> None:
    for param in inspect.signature(model_factory(name)).parameters.values():
        assert param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY), param
        assert param.default is not param.empty, f"{param.name} has no default"
        assert param.annotation is not param.empty, f"{param.name} has no type hint"


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_forward_and_backward(name: str) -> None:
    case = MODEL_CASES[name]
    torch.manual_seed(0)
    model = create_model(name, **case.kwargs)
    out = model(case.batch())

    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    # DDP only syncs gradients of the graph built inside forward.
    assert loss.grad_fn is not None, "the loss must come from forward"
    for key, value in out.items():
        assert value.ndim == 0 and torch.isfinite(value), key
        assert key == "loss" or not value.requires_grad, f"{key} must be detached"

    loss.backward()
    params = dict(model.named_parameters())
    # DDP without find_unused_parameters needs a gradient for every parameter.
    for param_name, param in params.items():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    assert params[case.patch_embed].grad.abs().sum() > 0


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_validation_metrics_are_finite_and_reproducible(name: str) -> None:
    case = MODEL_CASES[name]
    torch.manual_seed(0)
    model = create_model(name, **case.kwargs).eval()
    batch = case.batch()
    with torch.no_grad():
        first = model.validation_metrics(batch, torch.Generator().manual_seed(7))
        torch.rand(10)  # moves the global RNG: results must depend on the generator only
        second = model.validation_metrics(batch, torch.Generator().manual_seed(7))

    assert set(first) == case.validation_keys
    for key, value in first.items():
        assert value.ndim == 0 and torch.isfinite(value), key
        assert torch.equal(value, second[key]), key


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_meta_device_construction_allocates_nothing(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, **MODEL_CASES[name].kwargs)
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}


# --- spectral MAE ----------------------------------------------------------------------


def tiny_mae(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = dict(size="tiny", img_size=16, in_chans=30, patch_size=4, spectral_patch=5)
    return create_model("mae_vit", **{**kwargs, **overrides})


def test_patchify_round_trip_with_30_bands() -> None:
    model = tiny_mae()
    cube = torch.randn(2, 30, 16, 16)
    patches = model.patchify(cube)
    assert patches.shape == (2, (30 // 5) * (16 // 4) ** 2, 5 * 4 * 4)
    assert torch.equal(model.unpatchify(patches), cube)


def test_patchify_token_order_matches_patch_embedding() -> None:
    # The mask is drawn in the embedding's token order and the loss reads `patchify`'s;
    # they agree only if the Conv3d is exactly a linear layer on `patchify` output.
    model = tiny_mae()
    cube = torch.randn(2, 30, 16, 16)
    conv = model.patch_embed
    embedded = conv(cube.unsqueeze(1)).flatten(2).transpose(1, 2)
    linear = model.patchify(cube) @ conv.weight.flatten(1).T + conv.bias
    torch.testing.assert_close(embedded, linear, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mask_ratio", [0.5, 0.75, 0.9])
def test_random_masking_masks_the_requested_fraction(mask_ratio: float) -> None:
    model = tiny_mae(mask_ratio=mask_ratio)
    num_tokens, dim = 6 * 4 * 4, 3
    tokens = torch.arange(4 * num_tokens * dim, dtype=torch.float32).reshape(4, num_tokens, dim)
    kept, mask, ids_restore = model.random_masking(tokens, mask_ratio, torch.Generator().manual_seed(0))

    num_kept = int(num_tokens * (1 - mask_ratio))
    assert kept.shape == (4, num_kept, dim)
    assert (mask.sum(1) == num_tokens - num_kept).all()
    assert not torch.equal(mask[0], mask[1]), "masks are drawn per sample"
    # The kept tokens are exactly the unmasked ones.
    for sample in range(4):
        assert torch.equal(kept[sample].sort(0).values, tokens[sample][mask[sample] == 0].sort(0).values)
    assert ids_restore.sort(1).values.equal(torch.arange(num_tokens).expand(4, -1))


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_reconstruct_keeps_visible_pixels_and_masks_whole_patches(norm_pix_loss: bool) -> None:
    model = tiny_mae(norm_pix_loss=norm_pix_loss).eval()
    cube = torch.randn(2, 30, 16, 16)
    recon, mask = model.reconstruct(cube, torch.Generator().manual_seed(0))
    assert recon.shape == mask.shape == cube.shape
    assert torch.equal(recon[mask == 0], cube[mask == 0])
    assert mask.mean().item() == pytest.approx(1 - int(96 * 0.25) / 96)
    patches = model.patchify(mask)
    assert torch.equal(patches.amin(-1), patches.amax(-1)), "a patch is masked entirely or not at all"


def test_norm_pix_loss_gives_finite_losses_and_metrics() -> None:
    model = tiny_mae(norm_pix_loss=True)
    batch = {"cube": torch.randn(2, 30, 16, 16)}
    out = model(batch)
    out["loss"].backward()
    with torch.no_grad():
        metrics = model.validation_metrics(batch, torch.Generator().manual_seed(0))
    for key, value in {**out, **metrics}.items():
        assert torch.isfinite(value), key


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_baseline_mse_is_the_band_mean_of_visible_pixels_on_the_masked_patches(norm_pix_loss: bool) -> None:
    model = tiny_mae(norm_pix_loss=norm_pix_loss)
    cube = torch.randn(2, 30, 16, 16)
    mask = model.random_masking(model.patchify(cube), 0.75, torch.Generator().manual_seed(0))[1]
    # Written out once, value by value: each band's mean over its visible pixels.
    mask_cube = model.unpatchify(mask[..., None].expand(-1, -1, 5 * 4 * 4))
    expected = torch.empty_like(cube)
    for sample in range(2):
        for band in range(30):
            expected[sample, band] = cube[sample, band][mask_cube[sample, band] == 0].mean()
    pred = model.patchify(expected)
    target = model.patchify(cube)
    if norm_pix_loss:
        mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
        pred, target = (pred - mean) / std, (target - mean) / std
    per_token = ((pred - target) ** 2).mean(-1)
    torch.testing.assert_close(model.baseline_mse(cube, mask), per_token[mask == 1].mean())
    # Bands constant over the crop: the band means are exact.
    flat = torch.randn(2, 30, 1, 1).expand(2, 30, 16, 16)
    assert model.baseline_mse(flat, mask).item() < 1e-10 or norm_pix_loss


def test_mae_overfits_one_batch_far_below_the_baseline(tmp_path) -> None:
    """Real synthetic crops (linear mixing, 5 endmembers, noise), one batch and one mask: a
    model whose loss, mask or patch order were wrong could not drive the masked-patch MSE to
    a small fraction of predicting each band's visible mean."""
    from data import HyperspectralDataConfig, build_splits

    synthetic = dict(cubes=2, bands=30, height=32, width=32, endmembers=5, noise=0.01, seed=0)
    val = build_splits(HyperspectralDataConfig(synthetic=synthetic, crop=8, window=8, cache_dir=str(tmp_path))).val
    cube = torch.stack([val[i]["cube"] for i in range(4)])
    model = tiny_mae(img_size=8, spectral_patch=10, mask_ratio=0.5,
                     loss_weights={"sam": 0.0, "variance": 0.0, "range": 0.0})
    # 2e-4: at 1e-3 this 20-block model still sat at 0.6 of the baseline after 150 steps.
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
    for _ in range(150):
        pred, mask = model.forward_prediction(cube, torch.Generator().manual_seed(0))
        loss = model.forward_loss(cube, pred, mask)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    metrics = model.eval().validation_metrics({"cube": cube}, torch.Generator().manual_seed(0))
    assert metrics["mse"] < 0.2 * metrics["baseline_mse"]


@pytest.mark.parametrize("size", [5, 8, 16])
def test_ssim_window_fits_small_crops(size: int) -> None:
    # Default SSIM needs 11 px; smaller crops get the largest odd window that fits.
    cube = torch.randn(2, 3, size, size)
    psnr, ssim = band_image_metrics(cube + 0.1 * torch.randn_like(cube), cube)
    assert torch.isfinite(psnr) and 0 < ssim < 1
    assert band_image_metrics(cube, cube)[1].item() == pytest.approx(1.0)


def test_parameter_counts_of_all_sizes_on_meta_device() -> None:
    counts, encoder = {}, {}
    for size in MAE_SIZE_NAMES:
        with torch.device("meta"):
            model = create_model("mae_vit", size=size, **FULL_MAE)
        params = dict(model.named_parameters())
        assert all(p.device.type == "meta" for p in params.values()), size
        counts[size] = sum(p.numel() for p in params.values())
        encoder[size] = sum(
            p.numel() for n, p in params.items() if not n.startswith("decoder_") and n != "mask_token"
        )
    assert counts["tiny"] < counts["small"] < counts["base"]
    assert counts["medium"] < counts["large"] < counts["huge"]
    # A ViT block of width D holds 12 D^2 + 13 D weights: qkv 3D^2+3D, proj D^2+D,
    # MLP 8D^2+5D, two LayerNorms 4D. ViT-Base's 12 blocks: ~85M; the patch embedding
    # (25*25*5 inputs) adds a few percent.
    depth, width = MAE_SIZES["base"].depth, MAE_SIZES["base"].embed_dim
    expected = depth * (12 * width**2 + 13 * width)
    assert encoder["base"] == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(("decoder_depth", "blocks"), [(None, MAE_SIZES["tiny"].decoder_depth), (2, 2)])
def test_decoder_depth_overrides_the_size(decoder_depth: int | None, blocks: int) -> None:
    with torch.device("meta"):
        model = create_model("mae_vit", size="tiny", decoder_depth=decoder_depth, **FULL_MAE)
    assert len(model.decoder_blocks) == blocks
    assert len(model.blocks) == MAE_SIZES["tiny"].depth  # the encoder is the size's either way


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"size": "gigantic"}, r"size: Input should be 'tiny', 'small', 'base', 'medium', 'large' or 'huge' "
                               r"\(got 'gigantic'\)"),
        ({"img_size": 30, "patch_size": 8}, r"img_size: must be a multiple of patch_size = 8 \(got 30\)"),
        ({"patch_size": 0}, r"patch_size: Input should be greater than 0 \(got 0\)"),
        ({"in_chans": 31, "spectral_patch": 5}, r"in_chans: must be a multiple of spectral_patch = 5 \(got 31\)"),
        ({"mask_ratio": 0.0}, r"mask_ratio: Input should be greater than 0 \(got 0.0\)"),
        ({"mask_ratio": 1.0}, r"mask_ratio: Input should be less than 1 \(got 1.0\)"),
        ({"mask_ratio": -0.5}, r"mask_ratio: Input should be greater than 0 \(got -0.5\)"),
        (
            {"img_size": 8, "patch_size": 8, "in_chans": 5, "mask_ratio": 0.5},
            r"mask_ratio: leaves none of the 1 patches visible; expected a lower mask_ratio .* \(got 0.5\)",
        ),
        ({"loss_weights": {"l1": 1.0}}, r"loss_weights.l1: Input should be 'mse', 'sam', 'variance' or 'range'"),
        ({"loss_weights": {"sam": -1.0}}, r"loss_weights.sam: Input should be greater than or equal to 0"),
        ({"decoder_dim": 100}, r"decoder_dim: must be a multiple of the 3 decoder heads of size 'tiny' \(got 100\)"),
        ({"decoder_depth": 0}, r"decoder_depth: Input should be greater than 0 \(got 0\)"),
    ],
)
def test_invalid_arguments_raise_value_error(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("mae_vit", **overrides)


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = create_model("mae_vit", size="tiny", img_size=16, in_chans=8, patch_size=4, spectral_patch=2)
    batch = {"cube": smooth_cube(batch=4)}

    def validation_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = model.validation_metrics(batch, torch.Generator().manual_seed(0))["loss"].item()
        model.train()
        return loss

    before = validation_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    for _ in range(30):
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    assert validation_loss() < 0.7 * before
