"""Tests of the keypoint U-Net and the keypoints data kind, on real HDF5 files in tmp_path (no mocks)."""

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

from data import DataError, KeypointImages, KeypointsDataConfig, build_keypoint_datasets, build_splits
from data.kinds.keypoints import prepare_keypoints
from models import create_model
from models.keypoint_unet import heatmap_peaks, keypoint_errors, pck, render_heatmaps
from trainables.spec.loading import load_spec

SMALL_SYNTHETIC = {"images": 12, "size": 32}



def synthetic_cfg(cache: Path, **overrides) -> KeypointsDataConfig:
    return KeypointsDataConfig.model_validate({"synthetic": SMALL_SYNTHETIC, "cache_dir": str(cache), **overrides})


def write_file(path: Path, images: np.ndarray, keypoints: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("keypoints", data=keypoints)
    return path


def marked_file(path: Path, count: int = 5, size: int = 16) -> Path:
    """Images that are 0 except value 10 + k at keypoint k, which sits on a pixel centre."""
    rng = np.random.default_rng(0)
    keypoints = rng.integers(0, size, size=(count, 4, 2)).astype(np.float32)
    images = np.zeros((count, 1, size, size), dtype=np.float32)
    for n in range(count):
        for k, (x, y) in enumerate(keypoints[n].astype(int)):
            images[n, 0, y, x] = 10 + k
    return write_file(path, images, keypoints)


# --- model ---------------------------------------------------------------------------


def tiny_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("keypoint_unet", **{"depth": 3, "base_width": 4, **overrides})


def test_forward_backward_shapes() -> None:
    model = tiny_model(num_keypoints=3, in_channels=2)
    image = torch.randn(2, 2, 16, 24)
    assert model.heatmaps(image).shape == (2, 3, 16, 24)
    out = model({"image": image, "keypoints": torch.rand(2, 3, 2) * 15})
    assert set(out) == {"loss"} and out["loss"].ndim == 0
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_builds_and_runs_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = create_model("keypoint_unet", depth=5, base_width=32)
        out = model({"image": torch.empty(2, 1, 64, 32), "keypoints": torch.empty(2, 4, 2)})
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert out["loss"].device.type == "meta"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"depth": 1}, r"depth: Input should be greater than or equal to 2 \(got 1\)"),
        ({"base_width": 0}, r"base_width: Input should be greater than 0 \(got 0\)"),
        ({"num_keypoints": 0}, r"num_keypoints: Input should be greater than 0 \(got 0\)"),
        ({"sigma": 0.0}, r"sigma: Input should be greater than 0 \(got 0.0\)"),
        ({"pck_fraction": 0.0}, r"pck_fraction: Input should be greater than 0 \(got 0.0\)"),
        ({"pck_fraction": 1.5}, r"pck_fraction: Input should be less than or equal to 1 \(got 1.5\)"),
    ],
)
def test_invalid_arguments_raise_value_error(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("keypoint_unet", **overrides)


def test_image_size_must_suit_the_depth() -> None:
    with pytest.raises(ValueError, match=r"multiples of 2\*\*\(depth-1\) = 4 for depth 3, got 18x16"):
        tiny_model().heatmaps(torch.randn(1, 1, 18, 16))


# --- targets, decoding and metrics ---------------------------------------------------------


def test_rendered_heatmaps_are_gaussians_around_the_keypoints() -> None:
    heatmaps = render_heatmaps(torch.tensor([[[3.0, 5.0], [0.0, 0.0]]]), height=8, width=10, sigma=2.0)
    assert heatmaps.shape == (1, 2, 8, 10)
    assert heatmaps[0, 0, 5, 3] == 1.0 and heatmaps[0, 0].argmax() == 5 * 10 + 3  # (x, y) -> row y, column x
    assert heatmaps[0, 0, 5, 5].item() == pytest.approx(np.exp(-0.5))  # one sigma away, along x
    assert heatmaps[0, 0, 7, 3].item() == pytest.approx(np.exp(-0.5))  # one sigma away, along y
    assert heatmaps[0, 1, 0, 0] == 1.0


def test_peaks_of_known_heatmaps() -> None:
    one_hot = torch.zeros(1, 2, 8, 10)
    one_hot[0, 0, 2, 7] = 1.0
    one_hot[0, 1, 7, 0] = 0.5  # in a corner: fewer neighbours
    assert heatmap_peaks(one_hot).tolist() == [[[7.0, 2.0], [0.0, 7.0]]]

    off_grid = torch.tensor([[[4.3, 5.6], [6.8, 1.2]]])
    recovered = heatmap_peaks(render_heatmaps(off_grid, 12, 12, sigma=1.0))
    assert keypoint_errors(recovered, off_grid).max() < 1e-3, "the fit is exact for Gaussian peaks"

    negative = -torch.ones(1, 1, 4, 4)
    negative[0, 0, 1, 2] = -0.5  # the largest value, yet no positive neighbour: stays on its pixel
    assert heatmap_peaks(negative).tolist() == [[[2.0, 1.0]]]


def test_keypoint_error_and_pck_by_hand() -> None:
    true = torch.zeros(1, 4, 2)
    predicted = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [0.0, 2.0], [6.0, 8.0]]])  # 0, 5, 2 and 10 px off
    assert keypoint_errors(predicted, true).tolist() == [[0.0, 5.0, 2.0, 10.0]]
    assert pck(predicted, true, threshold=4.9).item() == 0.5
    assert pck(predicted, true, threshold=5.0).item() == 0.75  # the threshold itself counts as correct

    # The same numbers from the model: heatmaps peaking at the predicted corners.
    model = tiny_model(pck_fraction=5.0 / 16)  # 5 px on 16x16 images
    heatmaps = render_heatmaps(predicted, 16, 16, sigma=1.0)
    decoded = heatmap_peaks(heatmaps)
    assert keypoint_errors(decoded, true).mean().item() == pytest.approx(4.25, abs=1e-4)
    assert pck(decoded, true, model.pck_fraction * 16).item() == 0.75


def test_validation_metrics_of_a_model() -> None:
    model = tiny_model().eval()
    batch = {"image": torch.randn(3, 1, 16, 16), "keypoints": torch.rand(3, 4, 2) * 15}
    metrics = model.validation_metrics(batch)
    assert set(metrics) == {"loss", "mean_error_px", "pck"}
    assert 0 <= metrics["pck"] <= 1 and metrics["mean_error_px"] >= 0


# --- data -------------------------------------------------------------------------------------


def test_synthetic_data_are_deterministic_cached_and_well_formed(tmp_path: Path) -> None:
    first = prepare_keypoints(synthetic_cfg(tmp_path / "a"))
    assert prepare_keypoints(synthetic_cfg(tmp_path / "a")) == first
    other = prepare_keypoints(synthetic_cfg(tmp_path / "b"))
    with h5py.File(first.path) as f, h5py.File(other.path) as g:
        assert f["images"].shape == (12, 1, 32, 32) and f["keypoints"].shape == (12, 4, 2)
        assert np.array_equal(f["images"][()], g["images"][()])
        corners = f["keypoints"][()]
        images = f["images"][()]
    assert ((corners >= 0) & (corners <= 31)).all(), "the labelled vertebra lies inside the image"
    # Corners are ordered top-left, top-right, bottom-right, bottom-left in the vertebra's frame.
    assert (corners[:, 1, 0] > corners[:, 0, 0]).all() and (corners[:, 3, 1] > corners[:, 0, 1]).all()
    # The labelled vertebra is bright: its centre is far above the image's median.
    centres = corners.mean(axis=1).round().astype(int)
    assert all(images[n, 0, y, x] > np.median(images[n]) + 0.5 for n, (x, y) in enumerate(centres))


def test_items_are_standardised_images_with_their_keypoints(tmp_path: Path) -> None:
    path = marked_file(tmp_path / "k.h5")
    train, val, split = build_keypoint_datasets(KeypointsDataConfig(path=str(path), hflip_p=0.0))
    item = val[0]
    assert item["image"].shape == (1, 16, 16) and item["keypoints"].shape == (4, 2)
    assert item["image"].dtype == item["keypoints"].dtype == torch.float32
    assert item["image"].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert item["image"].std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    with h5py.File(path) as f:
        assert np.array_equal(item["keypoints"].numpy(), f["keypoints"][split.val[0]])
    assert len(train) + len(val) == 5


def test_flips_move_keypoints_with_the_image(tmp_path: Path) -> None:
    path = marked_file(tmp_path / "k.h5")
    train, _, split = build_keypoint_datasets(KeypointsDataConfig(path=str(path), hflip_p=1.0, val_fraction=0.2))
    plain = KeypointImages(train.prepared, split.train, train=False)
    flipped, original = train[0], plain[0]
    assert torch.equal(flipped["image"], original["image"].flip(-1))
    # Keypoint i of the flipped image is keypoint flip_order[i] of the original, mirrored in x...
    expected = original["keypoints"][[1, 0, 3, 2]]
    expected[:, 0] = 15 - expected[:, 0]
    assert torch.equal(flipped["keypoints"], expected)
    # ...so each flipped keypoint still sits on the pixel marked for the original keypoint it came from.
    for i, (x, y) in enumerate(flipped["keypoints"].long().tolist()):
        j = [1, 0, 3, 2][i]
        ox, oy = original["keypoints"][j].long().tolist()
        assert flipped["image"][0, y, x] == original["image"][0, oy, ox]


def test_validation_items_are_never_flipped(tmp_path: Path) -> None:
    path = marked_file(tmp_path / "k.h5")
    _, val, split = build_keypoint_datasets(KeypointsDataConfig(path=str(path), hflip_p=1.0))
    with h5py.File(path) as f:
        assert np.array_equal(val[0]["keypoints"].numpy(), f["keypoints"][split.val[0]])


def test_lazy_file_in_dataloader_workers_and_pickle(tmp_path: Path) -> None:
    train, val, _ = build_keypoint_datasets(synthetic_cfg(tmp_path))
    val[0]  # opens the file in this process; the workers must open their own
    batches = list(DataLoader(val, batch_size=2, num_workers=2))
    every = torch.stack([val[i]["image"] for i in range(len(val))])
    assert torch.equal(torch.cat([b["image"] for b in batches]), every)
    batch = next(iter(DataLoader(train, batch_size=4, num_workers=2)))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["keypoints"].shape == (4, 4, 2)
    assert torch.equal(pickle.loads(pickle.dumps(val))[0]["image"], val[0]["image"])


def test_split_is_seeded_disjoint_complete_and_recorded(tmp_path: Path) -> None:
    cfg = synthetic_cfg(tmp_path, val_fraction=0.25, split_seed=3)
    _, _, split = build_keypoint_datasets(cfg)
    assert sorted(split.train + split.val) == list(range(12)) and len(split.val) == 3
    assert build_keypoint_datasets(cfg)[2] == split
    assert build_keypoint_datasets(cfg.model_copy(update={"split_seed": 4}))[2].val != split.val
    manifest = build_splits(cfg).manifest
    manifest.to_json(tmp_path / "split.json")
    recorded = json.loads((tmp_path / "split.json").read_text())
    assert (recorded["train"], recorded["val"], recorded["seed"], recorded["val_fraction"]) == (
        split.train, split.val, 3, 0.25
    )  # fmt: skip


def _missing_file(tmp_path: Path) -> tuple[dict, list[str]]:
    return {"path": str(tmp_path / "absent.h5")}, ["absent.h5"]


def _missing_keypoints(tmp_path: Path) -> tuple[dict, list[str]]:
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((3, 1, 8, 8)))
    return {"path": str(path)}, ["x.h5", "'keypoints' not found", "'images'"]


def _keypoints_not_xy(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((3, 1, 8, 8)), np.zeros((3, 4, 3)))
    return {"path": str(path)}, ["x.h5", "'keypoints'", "(3, 4, 3)", "(3, K, 2)"]


def _counts_differ(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((3, 1, 8, 8)), np.zeros((2, 4, 2)))
    return {"path": str(path)}, ["x.h5", "'keypoints'", "(3, K, 2)"]


def _images_not_4d(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((3, 8, 8)), np.zeros((3, 4, 2)))
    return {"path": str(path)}, ["x.h5", "'images'", "(N, C, H, W)"]


def _nan_keypoint(tmp_path: Path) -> tuple[dict, list[str]]:
    keypoints = np.zeros((3, 4, 2))
    keypoints[1, 2, 0] = np.nan
    path = write_file(tmp_path / "x.h5", np.zeros((3, 1, 8, 8)), keypoints)
    return {"path": str(path)}, ["x.h5", "'keypoints'", "NaN"]


def _flip_order_too_short(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((3, 1, 8, 8)), np.zeros((3, 5, 2)))
    return {"path": str(path)}, ["x.h5", "'keypoints'", "5 keypoints", "data.flip_order"]


def _one_image(tmp_path: Path) -> tuple[dict, list[str]]:
    path = write_file(tmp_path / "x.h5", np.zeros((1, 1, 8, 8)), np.zeros((1, 4, 2)))
    return {"path": str(path)}, ["x.h5", "'images'", "at least 2"]


ERROR_CASES = [_missing_file, _missing_keypoints, _keypoints_not_xy, _counts_differ, _images_not_4d, _nan_keypoint,
               _flip_order_too_short, _one_image]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.__name__.lstrip("_") for c in ERROR_CASES])
def test_bad_files_raise_one_line_errors_naming_file_and_dataset(tmp_path: Path, case) -> None:
    settings, fragments = case(tmp_path)
    with pytest.raises(DataError) as caught:
        build_keypoint_datasets(KeypointsDataConfig(**settings))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("settings", "location"),
    [
        ({"flip_order": [0, 0, 1, 2]}, ("flip_order",)),
        ({"crop": 32}, ("crop",)),  # unknown keys refused; pydantic's own constraints are not tested again
    ],
)
def test_config_refuses_bad_settings(settings: dict, location: tuple) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        KeypointsDataConfig.model_validate(settings)
    assert [error["loc"] for error in caught.value.errors()] == [location]


# --- learning -----------------------------------------------------------------------------------


def test_short_training_beats_predicting_the_image_centre(tmp_path: Path) -> None:
    train, val, _ = build_keypoint_datasets(synthetic_cfg(tmp_path, synthetic={"images": 64, "size": 32}))
    val_batch = next(iter(DataLoader(val, batch_size=len(val))))
    true = val_batch["keypoints"]
    centre = keypoint_errors(torch.full_like(true, 15.5), true).mean().item()
    # The best constant guess: each corner's mean position over the training images.
    mean_corner = torch.stack([train[i]["keypoints"] for i in range(len(train))]).mean(0)
    constant = keypoint_errors(mean_corner.expand_as(true), true).mean().item()

    model = tiny_model(depth=3, base_width=8, sigma=1.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = DataLoader(train, batch_size=8, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    for _ in range(20):  # epochs of 6 steps: 120 steps
        for batch in loader:
            optimizer.zero_grad()
            model(batch)["loss"].backward()
            optimizer.step()
    metrics = model.eval().validation_metrics(val_batch)
    trained = metrics["mean_error_px"].item()
    print(f"keypoint error: centre {centre:.2f} px, best constant {constant:.2f} px, trained {trained:.2f} px, "
          f"pck {metrics['pck'].item():.2f}")
    assert trained < 0.5 * centre and trained < 0.6 * constant
    assert metrics["pck"] > 0.3


def test_shipped_search_space_is_valid_and_reports_its_metric() -> None:
    spec, _ = load_spec("keypoints.yaml")
    assert spec.data.kind == "keypoints" and spec.model.name == "keypoint_unet"
    assert spec.metric.removeprefix("val_") in tiny_model().validation_metrics(
        {"image": torch.zeros(1, 1, 16, 16), "keypoints": torch.zeros(1, 4, 2)}
    )
