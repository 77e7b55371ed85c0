"""A generator of radiograph-like images with vertebra corner keypoints.

Each image shows a short column of three vertebrae (bright, soft-edged quadrilaterals
separated by darker disc spaces) over smooth soft tissue and sensor noise. The column sits
at a random place and tilt; each vertebra has its own slight tilt and irregular corners.
The keypoints are the four corners of the middle vertebra, which is denser (brighter) than
its neighbours: that and its place in the column are what a model must use to find it, so
the corners are learnable but not trivially so.

Corners are ordered (top-left, top-right, bottom-right, bottom-left) in the vertebra's own
frame, as (x, y) pixel coordinates with pixel centres at integers (x along the width).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

# Bump whenever the output for given settings changes, so cached files are not reused.
GENERATOR_VERSION = 1
VERTEBRAE = 3
TARGET = 1  # index of the labelled vertebra in the column (the middle one)
TARGET_INTENSITY, NEIGHBOUR_INTENSITY = 1.0, 0.6
EDGE_SOFTNESS = 0.7  # pixels: width of the sigmoid edge, like a slightly blurred radiograph
MAX_TILT_DEGREES = 25.0  # of the whole column; each vertebra adds up to 5 degrees


def write_synthetic_keypoints(path: str | Path, images: int, size: int, noise: float, seed: int) -> None:
    """Write `images` (images, 1, size, size) float32 and `keypoints` (images, 4, 2) float32 to `path`.

    Deterministic for given arguments.
    """
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs.update(
            generator="hpsearch synthetic spine radiographs",
            generator_version=GENERATOR_VERSION,
            images=images,
            size=size,
            noise=noise,
            seed=seed,
        )
        pixels = f.create_dataset("images", shape=(images, 1, size, size), dtype="f4", chunks=(1, 1, size, size))
        corners = f.create_dataset("keypoints", shape=(images, 4, 2), dtype="f4")
        for index in range(images):
            image, keypoints = radiograph(rng, size, noise)
            pixels[index, 0] = image
            corners[index] = keypoints


def radiograph(rng: np.random.Generator, size: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size) image and the (4, 2) corners of its labelled vertebra."""
    width = size * rng.uniform(0.26, 0.34)
    height = width * rng.uniform(0.55, 0.7)
    gap = height * rng.uniform(0.3, 0.45)  # disc space
    tilt = np.deg2rad(rng.uniform(-MAX_TILT_DEGREES, MAX_TILT_DEGREES))
    axis = np.array([-np.sin(tilt), np.cos(tilt)])  # down the column, in (x, y)
    centre = size * rng.uniform(0.32, 0.68, size=2)  # of the labelled vertebra
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    image = soft_tissue(rng, xs, ys, size)
    target = np.empty((4, 2))
    for level in range(VERTEBRAE):
        middle = centre + (level - TARGET) * (height + gap) * axis
        quad = vertebra_corners(rng, middle, width, height, tilt + np.deg2rad(rng.uniform(-5, 5)))
        intensity = TARGET_INTENSITY if level == TARGET else NEIGHBOUR_INTENSITY
        image += intensity * quad_coverage(quad, xs, ys)
        if level == TARGET:
            target = quad
    image += noise * rng.standard_normal(image.shape)
    return image.astype(np.float32), target.astype(np.float32)


def vertebra_corners(rng: np.random.Generator, centre: np.ndarray, width: float, height: float,
                     angle: float) -> np.ndarray:
    """(4, 2) corners (top-left, top-right, bottom-right, bottom-left) of a jittered, rotated rectangle."""
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [width / 2, height / 2]
    local = local + rng.uniform(-0.06, 0.06, size=(4, 2)) * width  # wedged, irregular bodies
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return centre + local @ rotation.T


def quad_coverage(quad: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Soft (0..1) coverage of each pixel by the convex quadrilateral `quad` (4, 2).

    The distance inside is the smallest distance to an edge line; a sigmoid of it gives
    anti-aliased edges, so corner positions are visible to sub-pixel precision.
    """
    centre = quad.mean(axis=0)
    inside = np.full(xs.shape, np.inf)
    for a, b in zip(quad, np.roll(quad, -1, axis=0)):
        normal = np.array([a[1] - b[1], b[0] - a[0]]) / np.linalg.norm(b - a)
        normal *= np.sign(normal @ (centre - a))  # pointing inwards, whatever the winding
        inside = np.minimum(inside, (xs - a[0]) * normal[0] + (ys - a[1]) * normal[1])
    return 1.0 / (1.0 + np.exp(-inside / EDGE_SOFTNESS))


def soft_tissue(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    """(size, size) background: a broad bright body band plus a gentle exposure gradient, about 0.1-0.4."""
    body_x = size * rng.uniform(0.35, 0.65)
    body = 0.2 * np.exp(-0.5 * ((xs - body_x) / (size * rng.uniform(0.25, 0.4))) ** 2)
    gradient = rng.uniform(-0.1, 0.1) * (ys / size - 0.5) + rng.uniform(-0.1, 0.1) * (xs / size - 0.5)
    return 0.15 + body + gradient
