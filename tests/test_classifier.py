"""Tests of the digits data kind, the image classifier and its classification report (real HDF5, no mocks)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import h5py
import numpy as np
import pydantic
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from torch.utils.data import DataLoader

from data import DataError, DigitsDataConfig, build_image_datasets, build_splits, prepare_images, split_indices
from models import create_model
from models.classification import classification_scores, focal_loss, macro_f1
from models.classifier import classification_evaluation



def write_images(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
    return path


# --- model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [8, 28])
def test_forward_backward_shapes(depth: int, size: int) -> None:
    torch.manual_seed(0)
    model = create_model("image_classifier", width=4, depth=depth, num_classes=5, in_channels=3)
    batch = {"images": torch.randn(6, 3, size, size), "labels": torch.tensor([0, 1, 2, 3, 4, 0])}
    assert model.logits(batch["images"]).shape == (6, 5)
    out = model(batch)
    assert set(out) == {"loss", "accuracy"}
    assert out["loss"].ndim == 0 and out["loss"].requires_grad and not out["accuracy"].requires_grad
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    metrics = model.validation_metrics(batch)
    assert set(metrics) == {"loss", "accuracy"} and 0 <= metrics["accuracy"].item() <= 1


def test_meta_device_construction_and_forward() -> None:
    with torch.device("meta"):
        model = create_model("image_classifier", width=64, depth=4)
        out = model({"images": torch.randn(2, 1, 28, 28), "labels": torch.tensor([1, 2])})
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert out["loss"].device.type == "meta"


def test_focal_loss_option_matches_hand_computation() -> None:
    model = create_model("image_classifier", width=4, depth=1, num_classes=3, loss="focal", focal_gamma=1.5).eval()
    batch = {"images": torch.randn(5, 1, 8, 8), "labels": torch.tensor([0, 1, 2, 0, 1])}
    p = model.logits(batch["images"]).softmax(1).gather(1, batch["labels"][:, None]).squeeze(1).double()
    expected = (-((1 - p) ** 1.5) * p.log()).mean().item()
    assert model(batch)["loss"].item() == pytest.approx(expected, rel=1e-5)
    # One example by hand: logits (2, 0, 0), true class 0, gamma 2.
    p0 = math.exp(2) / (math.exp(2) + 2)
    assert focal_loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]), 2.0).item() == pytest.approx(
        -((1 - p0) ** 2) * math.log(p0), rel=1e-6)
    plain = create_model("image_classifier", width=4, depth=1, num_classes=3).eval()
    torch.testing.assert_close(plain(batch)["loss"], F.cross_entropy(plain.logits(batch["images"]), batch["labels"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 0}, r"width: Input should be greater than 0 \(got 0\)"),
        ({"depth": 0}, r"depth: Input should be greater than 0 \(got 0\)"),
        ({"num_classes": 1}, r"num_classes: Input should be greater than or equal to 2 \(got 1\)"),
        ({"dropout": 1.0}, r"dropout: Input should be less than 1 \(got 1.0\)"),
        ({"loss": "hinge"}, r"loss: Input should be 'ce' or 'focal' \(got 'hinge'\)"),
        ({"focal_gamma": -1.0}, r"focal_gamma: Input should be greater than or equal to 0 \(got -1.0\)"),
    ],
)
def test_invalid_arguments_raise_value_error(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("image_classifier", **overrides)


def test_fit_to_data_refuses_labels_beyond_num_classes(tmp_path: Path) -> None:
    train, _, _ = build_image_datasets(DigitsDataConfig(cache_dir=str(tmp_path)))
    create_model("image_classifier", num_classes=10).fit_to_data(train)
    with pytest.raises(ValueError, match=r"labels hold class ids 0\.\.9 but model.args.num_classes is 8"):
        create_model("image_classifier", num_classes=8).fit_to_data(train)


# --- classification report ---------------------------------------------------------------------


def test_evaluation_matches_sklearn_on_the_same_predictions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _, val, _ = build_image_datasets(DigitsDataConfig(cache_dir=str(tmp_path)))
    model = create_model("image_classifier", width=4, depth=2)
    # A little training so that predictions spread over several classes, but not all of them
    # perfectly: the report then has to handle every kind of cell.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = next(iter(DataLoader(val, batch_size=64, shuffle=True)))
    for _ in range(5):
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    model.train()  # the report must switch to eval itself and restore the mode
    loader = DataLoader(val, batch_size=50)
    report = classification_evaluation(model, loader)
    assert model.training

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model.logits(b["images"]).argmax(1) for b in loader]).numpy()
    true = val.labels.numpy()
    labels = list(range(10))
    precision, recall, f1, support = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(report["per_class"]["precision"], precision)
    np.testing.assert_allclose(report["per_class"]["recall"], recall)
    np.testing.assert_allclose(report["per_class"]["f1"], f1)
    assert report["per_class"]["support"] == support.tolist()
    assert report["confusion_matrix"] == confusion_matrix(true, pred, labels=labels).tolist()
    assert report["accuracy"] == pytest.approx(accuracy_score(true, pred))
    assert report["macro"]["f1"] == pytest.approx(f1_score(true, pred, labels=labels, average="macro", zero_division=0))
    assert report["samples"] == len(val)
    assert json.loads(json.dumps(report)) == report, "JSON-serialisable"
    assert model.evaluation(loader) == report


def test_scores_zero_division_and_batch_macro_f1_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 40)
    pred = np.where(true == 3, 0, true)  # class 3 never predicted: its precision is 0/0
    pred[:5] = 1
    # Class 4: no support at all.
    report = classification_scores(torch.from_numpy(pred), torch.from_numpy(true), 5)
    assert report["confusion_matrix"] == confusion_matrix(true, pred, labels=range(5)).tolist()
    precision, recall, f1, _ = precision_recall_fscore_support(true, pred, labels=range(5), zero_division=0)
    np.testing.assert_allclose(report["per_class"]["precision"], precision)
    np.testing.assert_allclose(report["per_class"]["recall"], recall)
    np.testing.assert_allclose(report["per_class"]["f1"], f1)
    # Batch macro-F1 (the search's metric) = sklearn's default macro over the classes present.
    assert macro_f1(torch.from_numpy(pred), torch.from_numpy(true), 5).item() == pytest.approx(
        f1_score(true, pred, average="macro"))


# --- data kind ----------------------------------------------------------------------------------


def test_default_data_are_sklearn_digits_written_once_and_read_like_a_user_file(tmp_path: Path) -> None:
    cfg = DigitsDataConfig(cache_dir=str(tmp_path))
    prepared = prepare_images(cfg)
    path = Path(prepared.path)
    assert path.parent == tmp_path and path.suffix == ".h5"
    mtime = path.stat().st_mtime_ns
    again = prepare_images(cfg)
    assert again.path == prepared.path and path.stat().st_mtime_ns == mtime, "written once"
    digits = load_digits()
    with h5py.File(path) as f:
        assert f["images"].shape == (1797, 1, 8, 8) and f["labels"].shape == (1797,)
        np.testing.assert_array_equal(f["images"][:, 0], digits.images)
        np.testing.assert_array_equal(f["labels"][()], digits.target)
    # The same file given as a user's path gives the same data.
    as_user = prepare_images(DigitsDataConfig(path=str(path)))
    assert (as_user.path, as_user.shape, as_user.channel_mean, as_user.channel_std) == (
        prepared.path, prepared.shape, prepared.channel_mean, prepared.channel_std)
    np.testing.assert_array_equal(as_user.labels, prepared.labels)


def test_items_are_standardised_with_the_file_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scale, offset = np.array([3.0, 0.5]).reshape(1, 2, 1, 1), np.array([10.0, -2.0]).reshape(1, 2, 1, 1)
    images = (rng.standard_normal((30, 2, 6, 5)) * scale + offset).astype(np.float32)
    labels = np.arange(30) % 3
    path = write_images(tmp_path / "user.h5", images, labels)
    train, val, split = build_image_datasets(DigitsDataConfig(path=str(path)))
    assert (tmp_path / "user.h5.stats.json").is_file(), "stats stored beside the file"
    item = train[0]
    assert item["images"].shape == (2, 6, 5) and item["images"].dtype == torch.float32
    assert item["labels"].dtype == torch.int64 and item["labels"].item() == labels[split.train[0]]
    everything = torch.stack([ds[i]["images"] for ds in (train, val) for i in range(len(ds))]).double()
    torch.testing.assert_close(everything.mean((0, 2, 3)), torch.zeros(2, dtype=torch.double), atol=1e-5, rtol=0)
    torch.testing.assert_close(everything.std((0, 2, 3), correction=0), torch.ones(2, dtype=torch.double),
                               atol=1e-5, rtol=0)
    np.testing.assert_array_equal(val.labels.numpy(), labels[split.val])


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_images_open_lazily_in_dataloader_workers(tmp_path: Path, start_method: str) -> None:
    _, val, _ = build_image_datasets(DigitsDataConfig(cache_dir=str(tmp_path)))
    val[0]  # a handle opened before the workers start must not leak into them
    clone = pickle.loads(pickle.dumps(val))
    assert torch.equal(clone[3]["images"], val[3]["images"])
    batches = list(DataLoader(val, batch_size=64, num_workers=2, multiprocessing_context=start_method))
    expected = torch.stack([val[i]["images"] for i in range(len(val))])
    assert torch.equal(torch.cat([b["images"] for b in batches]), expected)
    assert torch.equal(torch.cat([b["labels"] for b in batches]), val.labels)


def test_split_is_stratified_seeded_and_recorded(tmp_path: Path) -> None:
    cfg = DigitsDataConfig(cache_dir=str(tmp_path), val_fraction=0.25, split_seed=5)
    splits = build_splits(cfg)
    manifest, labels = splits.manifest, prepare_images(cfg).labels
    assert sorted(manifest.train + manifest.val) == list(range(1797))
    for digit in range(10):
        members = int((labels == digit).sum())
        assert int((labels[manifest.val] == digit).sum()) == round(0.25 * members), "each class split on its own"
    assert build_splits(cfg).manifest == manifest
    assert build_splits(cfg.model_copy(update={"split_seed": 6})).manifest.val != manifest.val
    manifest.to_json(tmp_path / "split.json")
    saved = json.loads((tmp_path / "split.json").read_text())
    assert (saved["source"], saved["seed"], saved["val_fraction"], saved["stratified_by"]) == (
        manifest.source, 5, 0.25, "labels")
    assert saved["val"] == manifest.val == splits.val.indices


def test_split_indices_keeps_one_item_on_each_side() -> None:
    strata = np.array([0, 1, 2])  # every class a singleton: round(0.2 * 1) = 0 per class
    train, val = split_indices(3, 0.2, seed=0, strata=strata)
    assert len(val) == 1 and sorted(train + val) == [0, 1, 2]
    train, val = split_indices(2, 0.9, seed=0, strata=np.array([0, 1]))
    assert len(train) == 1 and len(val) == 1
    assert split_indices(10, 0.3, seed=1) == split_indices(10, 0.3, seed=1)


def _missing_file(tmp: Path) -> tuple[Path, list[str]]:
    return tmp / "nope.h5", [str(tmp / "nope.h5"), "no such file"]


def _no_labels(tmp: Path) -> tuple[Path, list[str]]:
    path = tmp / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((4, 1, 8, 8)))
        f.create_dataset("targets", data=np.zeros(4, np.int64))
    return path, [str(path), "dataset 'labels' not found", "'targets'"]


def _no_images(tmp: Path) -> tuple[Path, list[str]]:
    path = tmp / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.zeros(4, np.int64))
    return path, [str(path), "dataset 'images' not found", "(N, C, H, W)"]


def _images_3d(tmp: Path) -> tuple[Path, list[str]]:
    path = write_images(tmp / "x.h5", np.zeros((4, 8, 8)), np.zeros(4, np.int64))
    return path, [str(path), "dataset 'images' has shape (4, 8, 8) but expected (N, C, H, W)"]


def _labels_wrong_length(tmp: Path) -> tuple[Path, list[str]]:
    path = write_images(tmp / "x.h5", np.zeros((4, 1, 8, 8)), np.zeros(5, np.int64))
    return path, [str(path), "dataset 'labels' has shape (5,)", "expected (4,) integer class ids"]


def _float_labels(tmp: Path) -> tuple[Path, list[str]]:
    path = write_images(tmp / "x.h5", np.zeros((4, 1, 8, 8)), np.zeros(4))
    return path, [str(path), "dataset 'labels'", "dtype float64", "integer class ids"]


def _negative_labels(tmp: Path) -> tuple[Path, list[str]]:
    path = write_images(tmp / "x.h5", np.zeros((4, 1, 8, 8)), np.array([0, 1, -2, 0]))
    return path, [str(path), "dataset 'labels' holds class id -2"]


def _not_finite(tmp: Path) -> tuple[Path, list[str]]:
    images = np.zeros((4, 1, 8, 8), np.float32)
    images[2, 0, 3, 3] = np.inf
    path = write_images(tmp / "x.h5", images, np.zeros(4, np.int64))
    return path, [str(path), "dataset 'images' contains NaN or infinite values"]


ERROR_CASES = [_missing_file, _no_labels, _no_images, _images_3d, _labels_wrong_length, _float_labels,
               _negative_labels, _not_finite]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.__name__.lstrip("_") for c in ERROR_CASES])
def test_bad_files_raise_one_line_errors_naming_file_and_dataset(tmp_path: Path, case) -> None:
    path, fragments = case(tmp_path)
    with pytest.raises(DataError) as caught:
        build_image_datasets(DigitsDataConfig(path=str(path)))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("settings", [{"crop": 8}])  # unknown keys refused (pydantic's constraints: not again)
def test_config_refuses_bad_settings(settings: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        DigitsDataConfig.model_validate(settings)


# --- learning -----------------------------------------------------------------------------------


def test_short_training_clearly_beats_the_majority_class(tmp_path: Path) -> None:
    torch.manual_seed(0)
    splits = build_splits(DigitsDataConfig(cache_dir=str(tmp_path)))
    model = create_model("image_classifier", width=16, depth=2)
    model.fit_to_data(splits.train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = DataLoader(splits.train, batch_size=32, shuffle=True, drop_last=True)
    for _ in range(2):  # 88 steps, under a second
        model.train()
        for batch in loader:
            optimizer.zero_grad()
            model(batch)["loss"].backward()
            optimizer.step()
    report = model.evaluation(DataLoader(splits.val, batch_size=128))
    majority = splits.val.labels.bincount().max().item() / len(splits.val)
    assert majority < 0.15  # ten balanced classes
    assert report["accuracy"] > 0.93  # 0.97-0.99 over seeds 0-4
