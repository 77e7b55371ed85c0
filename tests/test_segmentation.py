"""Tests of the Attention U-Net and the segmentation data kind, on real HDF5 files in tmp_path (no mocks)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pydantic
import pytest
import torch
from torch.utils.data import DataLoader

from data import DataError, SegmentationDataConfig, SegmentationTiles, build_segmentation_datasets, build_splits
from data.kinds.segmentation import prepare_segmentation, tile_starts
from models import create_model
from models.attention_unet import AttentionGate, iou_and_dice, soft_dice_loss
from trainables.spec.loading import load_spec

SMALL_SYNTHETIC = {"images": 8, "height": 32, "width": 48}
NO_AUGMENT = {"hflip_p": 0, "vflip_p": 0, "rotate90_p": 0, "affine_p": 0, "elastic_p": 0, "dropout_p": 0}



def synthetic_cfg(cache: Path, **overrides) -> SegmentationDataConfig:
    settings = {"synthetic": SMALL_SYNTHETIC, "cache_dir": str(cache), "crop": 16, **overrides}
    return SegmentationDataConfig.model_validate(settings)


def write_file(path: Path, images: np.ndarray, masks: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("masks", data=masks)
    return path


def mask_in_image_file(path: Path, count: int = 6, size: int = 32) -> Path:
    """Rectangles whose mask is also channel 0 of the image (as 0 or 5), over a noise channel."""
    rng = np.random.default_rng(0)
    masks = np.zeros((count, 1, size, size), dtype=np.uint8)
    for n in range(count):
        y0, x0 = rng.integers(0, size // 2, size=2)
        masks[n, 0, y0:y0 + rng.integers(6, size // 2), x0:x0 + rng.integers(6, size // 2)] = 1
    images = np.concatenate([5.0 * masks, rng.standard_normal(masks.shape)], axis=1).astype(np.float32)
    return write_file(path, images, masks)


def agreement(item: dict[str, torch.Tensor]) -> float:
    """Share of pixels where channel 0 (the mask, standardised), thresholded halfway, and the item's mask agree."""
    channel = item["image"][0]
    return ((channel > (channel.min() + channel.max()) / 2) == (item["mask"][0] > 0.5)).float().mean().item()


# --- model ---------------------------------------------------------------------------


def tiny_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("attention_unet", **{"depth": 3, "base_width": 4, **overrides})


@pytest.mark.parametrize("in_channels", [2, 3])
def test_forward_backward_shapes(in_channels: int) -> None:
    model = tiny_model(in_channels=in_channels)
    image = torch.randn(2, in_channels, 16, 24)
    assert model.logits(image).shape == (2, 1, 16, 24)
    out = model({"image": image, "mask": (torch.rand(2, 1, 16, 24) > 0.5).float()})
    assert set(out) == {"loss", "bce", "dice_loss"}
    assert out["loss"].item() == pytest.approx(out["bce"].item() + out["dice_loss"].item(), rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters()), "every gate is on the gradient path"


def test_builds_and_runs_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = create_model("attention_unet", depth=5, base_width=32, in_channels=2)
        out = model({"image": torch.empty(2, 2, 64, 64), "mask": torch.empty(2, 1, 64, 64)})
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert out["loss"].device.type == "meta"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"depth": 1}, r"depth: Input should be greater than or equal to 2 \(got 1\)"),
        ({"in_channels": 0}, r"in_channels: Input should be greater than 0 \(got 0\)"),
        ({"dropout": 1.0}, r"dropout: Input should be less than 1 \(got 1.0\)"),
        ({"dice_weight": -0.1}, r"dice_weight: Input should be greater than or equal to 0 \(got -0.1\)"),
    ],
)
def test_invalid_arguments_raise_value_error(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("attention_unet", **overrides)


def test_crop_size_must_suit_the_depth() -> None:
    with pytest.raises(ValueError, match=r"multiples of 2\*\*\(depth-1\) = 4 for depth 3, got 16x18"):
        tiny_model().logits(torch.randn(1, 3, 16, 18))


def test_attention_gate_scales_the_skip_by_coefficients_in_0_1() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(skip_channels=4, gate_channels=8, inter_channels=2)
    x, g = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)
    alpha = gate.coefficients(x, g)
    assert alpha.shape == (2, 1, 8, 8) and ((alpha > 0) & (alpha < 1)).all()
    torch.testing.assert_close(gate(x, g), x * alpha)
    assert not torch.equal(gate.coefficients(x, -g), alpha), "the gating signal steers the coefficients"


# --- metrics -----------------------------------------------------------------------------


def test_iou_and_dice_by_hand() -> None:
    truth = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    predicted = torch.zeros_like(truth)
    truth[0, 0, :2, :2] = True  # 4 pixels
    predicted[0, 0, :2, 1:4] = True  # 6 pixels, 2 of them on the truth
    truth[1, 0, 0, 0] = True  # found nothing of 1 pixel
    # image 2: both empty
    iou, dice = iou_and_dice(predicted, truth)
    assert iou.item() == pytest.approx((2 / 8 + 0 + 1) / 3)
    assert dice.item() == pytest.approx((2 * 2 / 10 + 0 + 1) / 3)
    assert [v.item() for v in iou_and_dice(truth, truth)] == [1.0, 1.0]


def test_soft_dice_loss_is_0_for_confident_right_and_near_1_for_confident_wrong() -> None:
    masks = torch.zeros(2, 1, 4, 4)
    masks[:, :, 1:3, 1:3] = 1
    assert soft_dice_loss(40 * (2 * masks - 1), masks).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(-40 * (2 * masks - 1), masks).item() > 0.9


def test_validation_metrics_of_a_model() -> None:
    model = tiny_model(in_channels=2).eval()
    batch = {"image": torch.randn(3, 2, 16, 16), "mask": (torch.rand(3, 1, 16, 16) > 0.5).float()}
    metrics = model.validation_metrics(batch)
    assert set(metrics) == {"loss", "bce", "iou", "dice"}
    assert 0 <= metrics["iou"] <= metrics["dice"] <= 1


# --- data ------------------------------------------------------------------------------------


def test_synthetic_data_are_deterministic_cached_and_learnable(tmp_path: Path) -> None:
    first = prepare_segmentation(synthetic_cfg(tmp_path / "a"))
    assert prepare_segmentation(synthetic_cfg(tmp_path / "a")) == first
    assert Path(f"{first.path}.stats.json").is_file()
    other = prepare_segmentation(synthetic_cfg(tmp_path / "b"))
    with h5py.File(first.path) as f, h5py.File(other.path) as g:
        assert f["images"].shape == (8, 3, 32, 48) and f["masks"].shape == (8, 1, 32, 48)
        assert np.array_equal(f["images"][()], g["images"][()])
        images, masks = f["images"][()], f["masks"][()].astype(bool)
    assert 0.05 < masks.mean() < 0.6
    # Objects stand out in height and in slope, relative to their surroundings.
    assert images[:, 0][masks[:, 0]].mean() > images[:, 0][~masks[:, 0]].mean() + 0.3
    two = prepare_segmentation(synthetic_cfg(tmp_path, synthetic={**SMALL_SYNTHETIC, "channels": 2}))
    assert two.channels == 2


def test_items_are_standardised_tiles_with_binary_masks(tmp_path: Path) -> None:
    path = mask_in_image_file(tmp_path / "s.h5", size=40)
    train, val, split = build_segmentation_datasets(SegmentationDataConfig(path=str(path), crop=16))
    assert tile_starts(40, 16) == [0, 16, 24]  # the last tile is flush with the border
    assert len(val) == len(split.val) * 9 and len(train) == len(split.train) * 9
    item = val[0]
    assert item["image"].shape == (2, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert item["image"].dtype == item["mask"].dtype == torch.float32
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert agreement(item) == 1.0
    with h5py.File(path) as f:
        images = f["images"][()].astype(np.float64)
        raw = f["images"][split.val[0], :, :16, :16]
    mean, std = images.mean(axis=(0, 2, 3)), images.std(axis=(0, 2, 3))
    expected = (raw - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(item["image"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(val[0]["image"], item["image"]), "validation items are fixed"


def test_boolean_masks_are_read(tmp_path: Path) -> None:
    path = write_file(tmp_path / "b.h5", np.random.default_rng(0).random((3, 2, 16, 16)), np.ones((3, 1, 16, 16), bool))
    _, val, _ = build_segmentation_datasets(SegmentationDataConfig(path=str(path), crop=16))
    assert val[0]["mask"].sum() == 256


@pytest.mark.parametrize(
    "augment",
    [
        {"hflip_p": 1.0},
        {"vflip_p": 1.0},
        {"rotate90_p": 1.0},
        {"affine_p": 1.0},
        {"elastic_p": 1.0},
    ],
    ids=["hflip", "vflip", "rotate90", "affine", "elastic"],
)
def test_augmentations_move_image_and_mask_together(tmp_path: Path, augment: dict) -> None:
    path = mask_in_image_file(tmp_path / "s.h5")
    cfg = SegmentationDataConfig(path=str(path), crop=32, augment={**NO_AUGMENT, **augment})
    train, _, split = build_segmentation_datasets(cfg)
    plain = SegmentationTiles(train.prepared, split.train, crop=32, train=False)
    torch.manual_seed(0)
    items = [train[index] for index in range(len(train))]
    assert any(not torch.equal(item["mask"], plain[i]["mask"]) for i, item in enumerate(items)), "augmented"
    lossless = set(augment) <= {"hflip_p", "vflip_p", "rotate90_p"}
    for item in items:
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}, "the mask stays binary"
        # Lossless moves keep the two identical; interpolating ones differ only along edges.
        assert agreement(item) >= (1.0 if lossless else 0.97)


def test_coarse_dropout_blanks_the_image_but_keeps_the_mask(tmp_path: Path) -> None:
    path = mask_in_image_file(tmp_path / "s.h5")
    cfg = SegmentationDataConfig(path=str(path), crop=32, augment={**NO_AUGMENT, "dropout_p": 1.0})
    train, _, split = build_segmentation_datasets(cfg)
    plain = SegmentationTiles(train.prepared, split.train, crop=32, train=False)
    torch.manual_seed(0)
    item = train[0]
    assert torch.equal(item["mask"], plain[0]["mask"])
    holes = (item["image"] == 0).all(dim=0)
    assert holes.any() and torch.equal(item["image"][:, ~holes], plain[0]["image"][:, ~holes])


def test_augmentation_follows_torch_seed_and_spares_validation(tmp_path: Path) -> None:
    path = mask_in_image_file(tmp_path / "s.h5", size=48)
    cfg = SegmentationDataConfig(path=str(path), crop=32, augment={"elastic_p": 1.0, "affine_p": 1.0})
    train, val, _ = build_segmentation_datasets(cfg)
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        draws.append(train[0])
    assert torch.equal(draws[0]["image"], draws[1]["image"]) and torch.equal(draws[0]["mask"], draws[1]["mask"])
    assert not torch.equal(train[0]["image"], draws[0]["image"]), "the next draw differs"
    assert val.transform is None and agreement(val[0]) == 1.0


def test_lazy_file_in_dataloader_workers_and_pickle(tmp_path: Path) -> None:
    train, val, _ = build_segmentation_datasets(synthetic_cfg(tmp_path))
    val[0]  # opens the file in this process; the workers must open their own
    batches = list(DataLoader(val, batch_size=3, num_workers=2))
    assert torch.equal(torch.cat([b["mask"] for b in batches]), torch.stack([val[i]["mask"] for i in range(len(val))]))
    batch = next(iter(DataLoader(train, batch_size=4, num_workers=2)))  # augmented in the workers
    assert batch["image"].shape == (4, 3, 16, 16) and batch["mask"].shape == (4, 1, 16, 16)
    clone = pickle.loads(pickle.dumps(train))
    assert clone[0]["image"].shape == (3, 16, 16)


def test_split_is_by_image_seeded_and_recorded(tmp_path: Path) -> None:
    cfg = synthetic_cfg(tmp_path, split_seed=2)
    train, val, split = build_segmentation_datasets(cfg)
    assert sorted(split.train + split.val) == list(range(8)) and len(split.val) == 2  # 20% of 8, rounded
    assert {t[0] for t in val.tiles} == set(split.val) and {t[0] for t in train.tiles} == set(split.train)
    assert build_segmentation_datasets(cfg)[2] == split
    assert build_segmentation_datasets(cfg.model_copy(update={"split_seed": 3}))[2].val != split.val
    build_splits(cfg).manifest.to_json(tmp_path / "split.json")
    recorded = json.loads((tmp_path / "split.json").read_text())
    assert (recorded["train"], recorded["val"], recorded["seed"], recorded["val_fraction"]) == (
        split.train, split.val, 2, 0.2
    )  # fmt: skip


def test_channel_stats_sidecar_is_reused_and_refreshed(tmp_path: Path) -> None:
    path = mask_in_image_file(tmp_path / "s.h5")
    cfg = SegmentationDataConfig(path=str(path), crop=16)
    first = prepare_segmentation(cfg)
    sidecar = tmp_path / "s.h5.stats.json"
    mtime = sidecar.stat().st_mtime_ns
    assert prepare_segmentation(cfg) == first and sidecar.stat().st_mtime_ns == mtime
    with h5py.File(path, "r+") as f:
        f["images"][...] = f["images"][()] * 2
    assert prepare_segmentation(cfg).channel_std == pytest.approx([2 * s for s in first.channel_std])


def _missing_file(tmp_path: Path) -> tuple[dict, list[str]]:
    return {"path": str(tmp_path / "absent.h5")}, ["absent.h5"]


def _missing_masks(tmp_path: Path) -> tuple[dict, list[str]]:
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((3, 2, 16, 16)))
    return {"path": str(path)}, ["x.h5", "'masks' not found", "'images'"]


def _masks_misshapen(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((3, 2, 16, 16)), np.zeros((3, 1, 16, 8)))
    return {"path": str(path)}, ["x.h5", "'masks'", "(3, 1, 16, 8)", "(3, 1, 16, 16)"]


def _four_channels(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((3, 4, 16, 16)), np.zeros((3, 1, 16, 16)))
    return {"path": str(path)}, ["x.h5", "'images'", "4 channels", "expected 2"]


def _mask_not_binary(tmp_path: Path) -> tuple[dict, list[str]]:
    masks = np.zeros((3, 1, 16, 16), dtype=np.uint8)
    masks[2, 0, 3, 3] = 255
    path = write_file(tmp_path / "x.h5", np.zeros((3, 2, 16, 16)), masks)
    return {"path": str(path)}, ["x.h5", "'masks'", "mask 2", "0 and 1"]


def _images_smaller_than_crop(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((3, 2, 8, 32)), np.zeros((3, 1, 8, 32)))
    return {"path": str(path)}, ["x.h5", "'images'", "8x32", "data.crop"]


def _nan_pixel(tmp_path: Path) -> tuple[dict, list[str]]:
    images = np.zeros((3, 2, 16, 16))
    images[1, 1, 2, 2] = np.nan
    path = write_file(tmp_path / "x.h5", images, np.zeros((3, 1, 16, 16)))
    return {"path": str(path)}, ["x.h5", "'images'", "NaN"]


def _string_masks(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((3, 2, 16, 16)), np.full((3, 1, 16, 16), b"a"))
    return {"path": str(path)}, ["x.h5", "'masks'", "dtype"]


ERROR_CASES = [_missing_file, _missing_masks, _masks_misshapen, _four_channels, _mask_not_binary,
               _images_smaller_than_crop, _nan_pixel, _string_masks]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.__name__.lstrip("_") for c in ERROR_CASES])
def test_bad_files_raise_one_line_errors_naming_file_and_dataset(tmp_path: Path, case) -> None:
    settings, fragments = case(tmp_path)
    with pytest.raises(DataError) as caught:
        build_segmentation_datasets(SegmentationDataConfig(crop=16, **settings))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("settings", "location"),
    [
        ({"augment": {"blur_p": 0.5}}, ("augment", "blur_p")),  # unknown keys refused, nested too
        ({"crop": 256}, ()),  # larger than the default synthetic images
    ],
)
def test_config_refuses_bad_settings(settings: dict, location: tuple) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        SegmentationDataConfig.model_validate(settings)
    assert [error["loc"] for error in caught.value.errors()] == [location]


# --- learning -------------------------------------------------------------------------------------


def test_short_training_beats_all_background_and_all_foreground(tmp_path: Path) -> None:
    synthetic = {"images": 32, "height": 64, "width": 64, "channels": 2}
    train, val, _ = build_segmentation_datasets(synthetic_cfg(tmp_path, synthetic=synthetic, crop=32))
    val_batch = next(iter(DataLoader(val, batch_size=len(val))))
    masks = val_batch["mask"]
    background = iou_and_dice(torch.zeros_like(masks), masks)[1].item()
    foreground = iou_and_dice(torch.ones_like(masks), masks)[1].item()

    model = tiny_model(in_channels=2, base_width=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = DataLoader(train, batch_size=8, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    for _ in range(10):  # epochs of 12 steps: 120 steps, on augmented crops
        for batch in loader:
            optimizer.zero_grad()
            model(batch)["loss"].backward()
            optimizer.step()
    metrics = model.eval().validation_metrics(val_batch)
    trained = metrics["dice"].item()
    print(f"dice: all background {background:.2f}, all foreground {foreground:.2f}, trained {trained:.2f}, "
          f"iou {metrics['iou'].item():.2f}")
    assert trained > max(background, foreground) + 0.3


def test_shipped_search_space_is_valid_and_reports_its_metric() -> None:
    spec, _ = load_spec("segmentation.yaml")
    assert spec.data.kind == "segmentation" and spec.model.name == "attention_unet"
    assert {"data.augment.elastic_p", "model.args.dice_weight"} <= set(spec.search)
    assert spec.metric.removeprefix("val_") in tiny_model().validation_metrics(
        {"image": torch.zeros(1, 3, 16, 16), "mask": torch.zeros(1, 1, 16, 16)}
    )
