"""Data: the HDF5 crops dataset against raw h5py reads of the same crops, and the loader
against the MAE tiny training step.

1. Samples per second of ``HyperspectralCrops[i]`` (read, convert, normalise) over the
   validation windows, against ``h5py`` reading exactly the same centre crops into numpy
   arrays. Target: >= 0.9. Both of the dataset's paths: data that fit in memory (read and
   normalised once per process) and data that do not (read and normalised crop by crop).
2. Samples per second of the training ``DataLoader`` with the default number of loader
   workers (random crops, flips, batches of 8), against the MAE tiny training step's
   samples per second (bench/loop_throughput.py): the data must be faster, or the loop waits.
"""

from __future__ import annotations

import argparse
import os
import time

import h5py
import torch
from torch.utils.data import DataLoader

from bench.common import REPEATS, Table, median
from bench.loop_throughput import generic_loop, workload

TARGET = 0.9


def crops_per_second(dataset, passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        for index in range(len(dataset)):
            dataset[index]
    return passes * len(dataset) / (time.perf_counter() - start)


def raw_h5py_per_second(dataset, passes: int) -> float:
    """The same centre crops the validation dataset returns, read with plain h5py."""
    prepared, crop = dataset.prepared, dataset.crop
    offset = (dataset.window - crop) // 2
    files = [h5py.File(path, "r") for path in prepared.sources]
    arrays = [handle[prepared.dataset_key] for handle in files]  # looked up once, as a careful user would
    try:
        start = time.perf_counter()
        for _ in range(passes):
            for source, cube, y0, x0 in dataset.windows:
                array = arrays[source]
                rows, cols = slice(y0 + offset, y0 + offset + crop), slice(x0 + offset, x0 + offset + crop)
                array[cube, :, rows, cols] if array.ndim == 4 else array[:, rows, cols]
        return passes * len(dataset.windows) / (time.perf_counter() - start)
    finally:
        for handle in files:
            handle.close()


def loader_per_second(dataset, batch_size: int, workers: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers)
    start, seen = time.perf_counter(), 0
    while seen < batches:
        for batch in loader:
            seen += 1
            if seen == batches:
                break
    return seen * batch_size / (time.perf_counter() - start)


def main(quick: bool = False) -> Table:
    from data import build_splits
    from trainables.spec.schema import SearchSpec

    repeats = 1 if quick else REPEATS
    passes = 1 if quick else 20
    raw = workload("MAE tiny", epochs=2 if quick else 4, steps=3 if quick else 20)
    spec = SearchSpec.model_validate(raw)
    torch.set_num_threads(1)
    splits = build_splits(spec.data)
    os.environ["HPSEARCH_PRELOAD_LIMIT_BYTES"] = "0"  # the path of data larger than memory
    from_disk = build_splits(spec.data).val
    del os.environ["HPSEARCH_PRELOAD_LIMIT_BYTES"]
    ours, disk, plain, loader, step = [], [], [], [], []
    for _ in range(repeats):
        ours.append(crops_per_second(splits.val, passes))
        disk.append(crops_per_second(from_disk, passes))
        plain.append(raw_h5py_per_second(splits.val, passes))
        loader.append(loader_per_second(splits.train, spec.training.batch_size, spec.data.loader_workers,
                                        batches=5 if quick else 200))
        step.append(generic_loop(raw))
    table = Table(f"Data: crops of {spec.data.crop}x{spec.data.crop} px x {spec.model.args['in_chans']} bands "
                  f"(median of {repeats})", ["measure", "samples/s", "against", "samples/s", "ratio", "target"])
    table.add("HyperspectralCrops[i] (validation crops; data fit in memory: read once)", median(ours),
              "raw h5py reads, same crops", median(plain), median(ours) / median(plain), f">= {TARGET}")
    table.add("HyperspectralCrops[i], data too large for memory: read crop by crop", median(disk),
              "raw h5py reads, same crops", median(plain), median(disk) / median(plain), f">= {TARGET}")
    table.add(f"train DataLoader, {spec.data.loader_workers} workers (default)", median(loader),
              "MAE tiny training step", median(step), median(loader) / median(step), "> 1 (keeps up)")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick).render())
