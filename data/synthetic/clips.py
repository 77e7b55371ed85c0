"""A generator of synthetic multi-view clips with two learnable labels per clip.

Each clip shows one Gaussian blob on a dark background, filmed by every view at once;
views differ in gain, background level and sensor noise, so all of them carry the labels
but none is a copy of another. The labels are properties of the motion, so a model must
look across frames, not at a single one:

* `phase` (3 classes): the axis the blob moves along: 0 horizontal, 1 vertical, 2 none.
  The direction along the axis is random, so reversing a clip in time keeps its label.
* `quality` (2 classes): 0 steady brightness, 1 flicker (every other frame dimmer).
  Brightness itself is random per clip and per view, so only the pattern tells.

Both are imbalanced, so class weighting and macro-F1 matter.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

# Bump whenever the output for given settings changes, so cached files are not reused.
GENERATOR_VERSION = 1
PHASE_PRIOR = (0.5, 0.3, 0.2)
QUALITY_PRIOR = (0.7, 0.3)
BACKGROUND = 0.1


def write_synthetic_clips(
    path: str | Path, clips: int, views: int, frames: int, size: int, noise: float, seed: int
) -> None:
    """Write `clips` (clips, views, 1, frames, size, size) uint8 and `labels/phase`, `labels/quality` (clips,) int64.

    Deterministic for given arguments. This is exactly the layout the clips kind reads from
    a user's file.
    """
    rng = np.random.default_rng(seed)
    phase = rng.choice(3, size=clips, p=PHASE_PRIOR)
    quality = rng.choice(2, size=clips, p=QUALITY_PRIOR)
    with h5py.File(path, "w") as f:
        f.attrs.update(generator="hpsearch synthetic clips (moving blobs)", generator_version=GENERATOR_VERSION,
                       clips=clips, views=views, frames=frames, size=size, noise=noise, seed=seed)
        shape = (clips, views, 1, frames, size, size)
        dataset = f.create_dataset("clips", shape=shape, dtype="u1", chunks=(1, *shape[1:]))
        for index in range(clips):
            scene = render_scene(rng, int(phase[index]), int(quality[index]), frames, size)  # [T, H, W]
            gain = rng.uniform(0.7, 1.2, size=(views, 1, 1, 1))
            offset = rng.uniform(0.0, 0.15, size=(views, 1, 1, 1))
            seen = gain * scene[None] + offset + noise * rng.standard_normal((views, frames, size, size))
            dataset[index] = np.round(255 * np.clip(seen, 0.0, 1.0)).astype(np.uint8)[:, None]
        f.create_dataset("labels/phase", data=phase.astype(np.int64))
        f.create_dataset("labels/quality", data=quality.astype(np.int64))


def render_scene(rng: np.random.Generator, phase: int, quality: int, frames: int, size: int) -> np.ndarray:
    """(frames, size, size) values in about [0, 1]: the blob's path set by `phase`, its brightness by `quality`."""
    sigma = size / 10
    margin = 2 * sigma
    # Speed in pixels per frame, chosen so the whole path fits inside the margins.
    room = size - 1 - 2 * margin
    speed = rng.uniform(0.5, 1.0) * room / max(frames - 1, 1)
    travel = speed * (frames - 1)
    along = rng.uniform(margin, margin + room - travel)  # start of the path on its axis
    across = rng.uniform(margin, size - 1 - margin)
    steps = np.arange(frames) * speed
    if rng.random() < 0.5:  # the direction along the axis carries no label
        along, steps = along + travel, -steps
    if phase == 0:
        x, y = along + steps, np.full(frames, across)
    elif phase == 1:
        x, y = np.full(frames, across), along + steps
    else:
        x, y = np.full(frames, along), np.full(frames, across)
    amplitude = np.full(frames, rng.uniform(0.4, 0.7))
    if quality == 1:
        dim = rng.uniform(0.35, 0.65)
        amplitude[int(rng.integers(2))::2] *= 1 - dim
    grid = np.arange(size)
    blob_y = np.exp(-0.5 * ((grid[None, :] - y[:, None]) / sigma) ** 2)  # [T, H]
    blob_x = np.exp(-0.5 * ((grid[None, :] - x[:, None]) / sigma) ** 2)  # [T, W]
    return BACKGROUND + amplitude[:, None, None] * blob_y[:, :, None] * blob_x[:, None, :]
