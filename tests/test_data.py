"""Tests of the data package on real HDF5 files in tmp_path (no mocks)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pydantic
import pytest
import torch
from torch.utils.data import DataLoader

from data import (
    DataError,
    HyperspectralCrops,
    HyperspectralDataConfig,
    PreparedData,
    SplitManifest,
    build_datasets,
    make_split,
    prepare,
)
from data.h5.band_stats import dataset_moments
from data.synthetic.hyperspectral import write_synthetic_cubes

SMALL_SYNTHETIC = {"cubes": 3, "bands": 6, "height": 32, "width": 32, "endmembers": 3}


def synthetic_cfg(cache: Path, **overrides) -> HyperspectralDataConfig:
    settings = {"synthetic": SMALL_SYNTHETIC, "cache_dir": str(cache), "crop": 8, **overrides}
    return HyperspectralDataConfig.model_validate(settings)


def write_h5(path: Path, key: str, array: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array)
    return path


def banded(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random data whose bands (axis -3) have very different means and spreads, so normalisation shows."""
    bands = shape[-3]
    offsets = np.arange(bands).reshape(-1, 1, 1) * 10.0
    scales = np.arange(1, bands + 1).reshape(-1, 1, 1).astype(float)
    return (offsets + scales * rng.standard_normal(shape)).astype(np.float32)


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


# --- synthetic generation -------------------------------------------------------------


def test_synthetic_generation_is_deterministic_and_reused(tmp_path: Path) -> None:
    cfg = synthetic_cfg(tmp_path / "a")
    first = prepare(cfg)
    path = Path(first.sources[0])
    mtime = path.stat().st_mtime_ns

    assert prepare(cfg) == first
    assert path.stat().st_mtime_ns == mtime, "second prepare must reuse the file"
    assert cache_files(tmp_path / "a") == [path.name]

    elsewhere = prepare(synthetic_cfg(tmp_path / "b"))
    assert Path(elsewhere.sources[0]).name == path.name, "file name depends only on the settings"
    with h5py.File(path) as f, h5py.File(elsewhere.sources[0]) as g:
        assert f["cubes"].shape == (3, 6, 32, 32) and f["cubes"].dtype == np.float32
        assert np.array_equal(f["cubes"][()], g["cubes"][()])

    other_seed = prepare(synthetic_cfg(tmp_path / "a", synthetic={**SMALL_SYNTHETIC, "seed": 1}))
    assert other_seed.sources[0] != first.sources[0]


def test_synthetic_data_default_to_the_env_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPSEARCH_DATA_DIR", str(tmp_path / "env"))
    prepared = prepare(HyperspectralDataConfig(synthetic=SMALL_SYNTHETIC, crop=8))
    assert Path(prepared.sources[0]).parent == tmp_path / "env"


def test_unwritable_cache_dir_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a file where the cache directory should be
    with pytest.raises(DataError, match=r"data\.cache_dir"):
        prepare(synthetic_cfg(tmp_path / "file" / "cache"))


def test_synthetic_cubes_have_learnable_structure(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    write_synthetic_cubes(path, cubes=4, bands=20, height=48, width=48, endmembers=4, noise=0.01, seed=3)
    with h5py.File(path) as f:
        cubes = f["cubes"][()]
    assert 0.0 < cubes.mean() < 1.0
    z = (cubes - cubes.mean(axis=(0, 2, 3), keepdims=True)) / cubes.std(axis=(0, 2, 3), keepdims=True)
    assert (z[..., 1:] * z[..., :-1]).mean() > 0.8, "neighbouring pixels are correlated"
    assert (z[:, 1:] * z[:, :-1]).mean() > 0.8, "neighbouring bands are correlated"
    pixels = cubes.transpose(0, 2, 3, 1).reshape(-1, 20)
    energy = np.linalg.svd(pixels - pixels.mean(axis=0), compute_uv=False) ** 2
    assert energy[:4].sum() / energy.sum() > 0.95, "pixels lie near the span of the endmembers"


CONCURRENT_SYNTHETIC = {**SMALL_SYNTHETIC, "cubes": 40, "height": 96}


def _prepare_in_child(cache_dir: str, start: multiprocessing.synchronize.Barrier, results) -> None:
    cfg = synthetic_cfg(Path(cache_dir), synthetic=CONCURRENT_SYNTHETIC)
    start.wait()  # both children call prepare at the same moment, after their slow imports
    results.put(prepare(cfg).sources[0])


def test_concurrent_prepare_writes_one_valid_file(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads is unsafe
    start, results = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=_prepare_in_child, args=(str(tmp_path), start, results)) for _ in range(2)]
    for child in children:
        child.start()
    paths = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert paths[0] == paths[1]
    assert cache_files(tmp_path) == [Path(paths[0]).name], "no temporary or duplicate files left"
    with h5py.File(paths[0]) as f:
        assert f["cubes"].shape == (40, 6, 96, 32)
        assert np.isfinite(f["cubes"][()]).all()
    assert prepare(synthetic_cfg(tmp_path, synthetic=CONCURRENT_SYNTHETIC)).sources == paths[:1]


# --- statistics -------------------------------------------------------------------------


def test_synthetic_stats_match_numpy(tmp_path: Path) -> None:
    prepared = prepare(synthetic_cfg(tmp_path))
    with h5py.File(prepared.sources[0]) as f:
        cubes = f["cubes"][()].astype(np.float64)
    np.testing.assert_allclose(prepared.band_mean, cubes.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(prepared.band_std, cubes.std(axis=(0, 2, 3)), rtol=1e-6)


def test_chunked_moments_match_numpy(tmp_path: Path) -> None:
    array = banded(np.random.default_rng(0), (3, 4, 10, 7))
    path = write_h5(tmp_path / "x.h5", "cubes", array)
    with h5py.File(path) as f:
        moments = dataset_moments(f["cubes"], block_elements=4 * 7 * 3)  # 3 rows per block
    np.testing.assert_allclose(moments.mean, array.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(moments.std, array.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-6)


def test_user_stats_sidecar_is_reused_and_refreshed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    array = banded(rng, (2, 3, 16, 16))
    path = write_h5(tmp_path / "x.h5", "cubes", array)
    cfg = HyperspectralDataConfig(path=str(path), crop=8)
    prepared = prepare(cfg)
    sidecar = tmp_path / "x.h5.stats.json"
    mtime = sidecar.stat().st_mtime_ns
    np.testing.assert_allclose(prepared.band_mean, array.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(prepared.band_std, array.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-5)

    assert prepare(cfg) == prepared
    assert sidecar.stat().st_mtime_ns == mtime, "second prepare must not recompute"

    write_h5(path, "cubes", array * 2)
    np.testing.assert_allclose(prepare(cfg).band_mean, np.array(prepared.band_mean) * 2, rtol=1e-5)


def test_stats_stay_in_memory_when_sidecar_cannot_be_written(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "x.h5", "cubes", banded(np.random.default_rng(2), (2, 3, 16, 16)))
    (tmp_path / "x.h5.stats.json").mkdir()  # occupies the sidecar's place (chmod does not stop root)
    prepared = prepare(HyperspectralDataConfig(path=str(path), crop=8))
    assert len(prepared.band_mean) == 3 and all(s > 0 for s in prepared.band_std)


# --- layouts and items --------------------------------------------------------------------


def _many_cubes(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    return write_h5(tmp_path / "many.h5", "cubes", banded(rng, (3, 5, 16, 16))), tmp_path / "many.h5.stats.json"


def _single_cube(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    return write_h5(tmp_path / "one.h5", "cube", banded(rng, (5, 16, 24))), tmp_path / "one.h5.stats.json"


def _directory(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for name, height in [("a.h5", 16), ("b.hdf5", 24), ("c.h5", 16)]:
        write_h5(folder / name, "cube", banded(rng, (5, height, 16)))
    (folder / "notes.txt").write_text("not data")
    return folder, folder / "stats.json"


@pytest.mark.parametrize("layout", [_many_cubes, _single_cube, _directory], ids=["cubes", "cube", "directory"])
def test_layouts_give_normalised_items(tmp_path: Path, layout) -> None:
    path, sidecar = layout(tmp_path, np.random.default_rng(4))
    # window == crop: the crops of both sides tile the data exactly, so their stats are the data's.
    train, val, prepared = build_datasets(HyperspectralDataConfig(path=str(path), crop=8, window=8))
    assert sidecar.is_file()
    assert all(os.path.isabs(s) for s in prepared.sources)
    items = [ds[i]["cube"] for ds in (train, val) for i in range(len(ds))]
    assert len(items) == sum((h // 8) * (w // 8) for _, _, h, w in prepared.cubes)
    assert all(item.shape == (5, 8, 8) and item.dtype == torch.float32 for item in items)
    stacked = torch.stack(items).double()
    zeros, ones = torch.zeros(5, dtype=torch.double), torch.ones(5, dtype=torch.double)
    torch.testing.assert_close(stacked.mean(dim=(0, 2, 3)), zeros, atol=1e-4, rtol=0)
    torch.testing.assert_close(stacked.std(dim=(0, 2, 3), correction=0), ones, atol=1e-4, rtol=0)


def test_training_items_vary_and_validation_items_do_not(tmp_path: Path) -> None:
    train, val, _ = build_datasets(synthetic_cfg(tmp_path, window=16))
    torch.manual_seed(0)
    draws = [train[0]["cube"] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(val[0]["cube"], val[0]["cube"])
    assert val[0]["cube"].shape == (6, 8, 8)


def test_crops_can_be_built_directly(tmp_path: Path) -> None:
    cfg = synthetic_cfg(tmp_path)
    prepared = prepare(cfg)
    split = make_split(prepared, cfg)
    val = HyperspectralCrops(prepared, split.val, crop=8, train=False, flip=False)  # window defaults to 2 * crop
    assert len(val) == len(split.val) and val[0]["cube"].shape == (6, 8, 8)
    with pytest.raises(DataError, match=r"data\.crop \(20\)"):
        HyperspectralCrops(prepared, split.val, crop=20, train=False, flip=False, window=16)


def test_prepared_data_and_datasets_pickle_after_use(tmp_path: Path) -> None:
    train, _, prepared = build_datasets(synthetic_cfg(tmp_path))
    train[0]  # opens the file in this process
    assert pickle.loads(pickle.dumps(prepared)) == prepared
    clone = pickle.loads(pickle.dumps(train))
    assert clone[0]["cube"].shape == train[0]["cube"].shape


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_works_in_dataloader_workers(tmp_path: Path, start_method: str) -> None:
    train, val, _ = build_datasets(synthetic_cfg(tmp_path, window=16))
    val[0]  # a handle opened before the workers start must not leak into them
    loader = DataLoader(val, batch_size=4, num_workers=2, multiprocessing_context=start_method)
    batches = [batch["cube"] for batch in loader]
    assert torch.equal(torch.cat(batches), torch.stack([val[i]["cube"] for i in range(len(val))]))
    if start_method == "fork":  # spawned workers cost seconds each; one spawned loader is proof enough
        train_batch = next(iter(DataLoader(train, batch_size=5, num_workers=2, multiprocessing_context="fork")))
        assert train_batch["cube"].shape == (5, 6, 8, 8)


# --- splits -------------------------------------------------------------------------------


def _fake_prepared() -> PreparedData:
    # Splits only need shapes, so no file is involved.
    return PreparedData(
        sources=["/data/x.h5"],
        dataset_key="cubes",
        bands=3,
        cubes=[(0, 0, 64, 64), (0, 1, 64, 100)],
        band_mean=[0.0] * 3,
        band_std=[1.0] * 3,
    )


def test_split_is_seeded_disjoint_and_complete(tmp_path: Path) -> None:
    prepared = _fake_prepared()
    cfg = HyperspectralDataConfig(path="/data/x.h5", crop=8, window=16, val_fraction=0.25, split_seed=7)
    split = make_split(prepared, cfg)
    every = {(0, 0, y, x) for y in range(0, 64, 16) for x in range(0, 64, 16)}
    every |= {(0, 1, y, x) for y in range(0, 64, 16) for x in range(0, 96, 16)}
    assert set(split.train) | set(split.val) == every
    assert not set(split.train) & set(split.val)
    assert len(split.val) == round(0.25 * len(every))
    assert (split.seed, split.val_fraction, split.window) == (7, 0.25, 16)

    assert make_split(prepared, cfg) == split
    assert make_split(prepared, cfg.model_copy(update={"split_seed": 8})).val != split.val

    split.to_json(tmp_path / "split.json")
    assert SplitManifest.from_json(tmp_path / "split.json") == split


def test_split_keeps_one_window_on_each_side() -> None:
    prepared = PreparedData(["/data/x.h5"], "cubes", 3, [(0, 0, 16, 32)], [0.0] * 3, [1.0] * 3)
    for fraction in (0.01, 0.99):
        cfg = HyperspectralDataConfig(path="/data/x.h5", crop=8, window=16, val_fraction=fraction)
        split = make_split(prepared, cfg)
        assert len(split.train) == len(split.val) == 1


def test_given_split_is_used_and_checked(tmp_path: Path) -> None:
    cfg = synthetic_cfg(tmp_path, window=16)
    _, _, prepared = build_datasets(cfg)
    split = SplitManifest(train=[(0, 0, 0, 0)], val=[(0, 2, 16, 16)], seed=0, val_fraction=0.5, window=16)
    train, val, _ = build_datasets(cfg, split)
    assert (len(train), len(val)) == (1, 1)
    foreign = SplitManifest(train=[(0, 0, 0, 0)], val=[(0, 9, 0, 0)], seed=0, val_fraction=0.5, window=16)
    with pytest.raises(DataError) as caught:
        build_datasets(cfg, foreign)
    assert prepared.sources[0] in str(caught.value) and "'cubes' has no 16x16 window" in str(caught.value)


# --- errors ---------------------------------------------------------------------------------


def _missing(tmp: Path) -> tuple[dict, list[str]]:
    return {"path": str(tmp / "nope.h5")}, [str(tmp / "nope.h5"), "data.path"]


def _random_bytes(tmp: Path) -> tuple[dict, list[str]]:
    path = tmp / "noise.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return {"path": str(path)}, [str(path), "not a readable HDF5 file"]


def _truncated(tmp: Path) -> tuple[dict, list[str]]:
    path = write_h5(tmp / "cut.h5", "cubes", np.ones((4, 3, 32, 32), np.float32))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    return {"path": str(path)}, [str(path), "not a readable HDF5 file"]


def _no_dataset(tmp: Path) -> tuple[dict, list[str]]:
    path = write_h5(tmp / "other.h5", "radiance", np.ones((3, 32, 32), np.float32))
    return {"path": str(path)}, [str(path), "'cube' not found", "'radiance'", "data.dataset_key"]


def _no_named_dataset(tmp: Path) -> tuple[dict, list[str]]:
    path = write_h5(tmp / "other.h5", "cubes", np.ones((1, 3, 32, 32), np.float32))
    return {"path": str(path), "dataset_key": "radiance"}, [str(path), "'radiance' not found"]


def _group(tmp: Path) -> tuple[dict, list[str]]:
    path = tmp / "group.h5"
    with h5py.File(path, "w") as f:
        f.create_group("cubes")
    return {"path": str(path)}, [str(path), "'cubes' is a group"]


def _two_dimensional(tmp: Path) -> tuple[dict, list[str]]:
    path = write_h5(tmp / "flat.h5", "cube", np.ones((32, 32), np.float32))
    return {"path": str(path)}, [str(path), "dataset 'cube' has shape (32, 32) but expected (bands, height, width)"]


def _three_dimensional_cubes(tmp: Path) -> tuple[dict, list[str]]:
    path = write_h5(tmp / "flat.h5", "cubes", np.ones((4, 30, 64), np.float32))
    return {"path": str(path)}, [str(path), "'cubes' has shape (4, 30, 64) but expected (N, bands, height, width)"]


def _strings(tmp: Path) -> tuple[dict, list[str]]:
    path = write_h5(tmp / "text.h5", "cube", np.full((3, 32, 32), b"ab"))
    return {"path": str(path)}, [str(path), "dataset 'cube' has dtype", "float or integer"]


def _bands_mismatch(tmp: Path) -> tuple[dict, list[str]]:
    write_h5(tmp / "a.h5", "cube", np.ones((5, 32, 32), np.float32))
    write_h5(tmp / "b.h5", "cube", np.ones((6, 32, 32), np.float32))
    return {"path": str(tmp)}, [str(tmp / "b.h5"), "dataset 'cube' has 6 bands but expected 5"]


def _smaller_than_window(tmp: Path) -> tuple[dict, list[str]]:
    path = write_h5(tmp / "small.h5", "cube", np.ones((3, 12, 40), np.float32))
    return {"path": str(path)}, [str(path), "dataset 'cube' has cubes of 12x40", "16x16 (data.window)"]


def _not_finite(tmp: Path) -> tuple[dict, list[str]]:
    array = np.ones((3, 32, 32), np.float32)
    array[1, 2, 3] = np.nan
    path = write_h5(tmp / "nan.h5", "cube", array)
    return {"path": str(path)}, [str(path), "dataset 'cube' contains NaN"]


def _one_window(tmp: Path) -> tuple[dict, list[str]]:
    path = write_h5(tmp / "tiny.h5", "cube", np.ones((3, 16, 31), np.float32))
    return {"path": str(path)}, [str(path), "dataset 'cube' holds 1 window(s)", "data.window"]


def _empty_directory(tmp: Path) -> tuple[dict, list[str]]:
    return {"path": str(tmp)}, [str(tmp), "no *.h5 or *.hdf5 files"]


ERROR_CASES = [
    _missing,
    _random_bytes,
    _truncated,
    _no_dataset,
    _no_named_dataset,
    _group,
    _two_dimensional,
    _three_dimensional_cubes,
    _strings,
    _bands_mismatch,
    _smaller_than_window,
    _not_finite,
    _one_window,
    _empty_directory,
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.__name__.lstrip("_") for c in ERROR_CASES])
def test_bad_data_raises_one_line_error_naming_file_and_dataset(tmp_path: Path, case) -> None:
    settings, fragments = case(tmp_path)
    with pytest.raises(DataError) as caught:
        build_datasets(HyperspectralDataConfig(crop=8, window=16, **settings))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("settings", "location"),
    [
        ({"windw": 64}, ("windw",)),  # unknown keys refused; pydantic's own constraints are not tested again
        ({"crop": 32, "window": 16}, ("window",)),
        ({"synthetic": {"height": 32}, "crop": 32}, ()),  # default window 64 does not fit
        ({"dataset_key": "x"}, ()),  # a key means nothing without a path
    ],
)
def test_config_refuses_bad_settings(settings: dict, location: tuple) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        HyperspectralDataConfig.model_validate(settings)
    assert [error["loc"] for error in caught.value.errors()] == [location]


def test_config_defaults() -> None:
    cfg = HyperspectralDataConfig()
    assert (cfg.kind, cfg.path, cfg.crop, cfg.window_size, cfg.val_fraction, cfg.flip) == (
        "hyperspectral", None, 32, 64, 0.2, True
    )  # fmt: skip
    expected = {"cubes": 16, "bands": 30, "height": 64, "width": 64, "endmembers": 5, "noise": 0.01, "seed": 0}
    assert cfg.synthetic.model_dump() == expected


def test_data_too_large_for_memory_are_read_item_by_item_with_the_same_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from data import DigitsDataConfig, build_image_datasets

    cube_sets = build_datasets(synthetic_cfg(tmp_path))[1], build_image_datasets(DigitsDataConfig(cache_dir=str(tmp_path)))[1]
    in_memory = [[dataset[i] for i in range(len(dataset))] for dataset in cube_sets]
    monkeypatch.setenv("HPSEARCH_PRELOAD_LIMIT_BYTES", "0")
    on_disk = build_datasets(synthetic_cfg(tmp_path))[1], build_image_datasets(DigitsDataConfig(cache_dir=str(tmp_path)))[1]
    assert all(dataset._preload for dataset in cube_sets) and not any(dataset._preload for dataset in on_disk)
    for dataset, expected in zip(on_disk, in_memory):
        for index, item in enumerate(expected):
            for key, value in item.items():
                torch.testing.assert_close(dataset[index][key], value)
