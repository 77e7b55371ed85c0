"""A generator of synthetic geometric rasters with binary object masks.

Each image is terrain with a few raised objects on it (ellipses and rotated rectangles,
flat-topped with steep sides, like buildings on a surface model), and as many distractor
hills of similar height but gentle slopes. Channels:

0. height: terrain + objects + hills, plus noise;
1. slope: the gradient magnitude of the noiseless height, plus noise: objects show as
   sharp rims, hills as faint smooth rings;
2. intensity (only with 3 channels): a textured background, objects with their own
   reflectance, and distractor patches of similar reflectance that are not objects.

The mask (objects only) is thus recoverable from the channels, but not by thresholding
any one of them: a model has to combine height with the sharpness of its edges.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from data.synthetic.hyperspectral import smooth_field

# Bump whenever the output for given settings changes, so cached files are not reused.
GENERATOR_VERSION = 1
EDGE_SOFTNESS = 0.5  # pixels: objects have steep but not aliased sides
TERRAIN_AMPLITUDE = 0.5  # objects stand 0.6-1.2 above the terrain


def write_synthetic_segmentation(path: str | Path, images: int, channels: int, height: int, width: int,
                                 shapes: int, noise: float, seed: int) -> None:
    """Write `images` (images, channels, height, width) float32 and `masks` (images, 1, height, width) uint8.

    `shapes` is the largest number of objects (at least half as many) and of hills per image. Deterministic for
    given arguments; images are generated and written one at a time.
    """
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs.update(
            generator="hpsearch synthetic geometric rasters",
            generator_version=GENERATOR_VERSION,
            images=images,
            channels=channels,
            height=height,
            width=width,
            shapes=shapes,
            noise=noise,
            seed=seed,
        )
        chunks = (1, channels, height, width)
        pixels = f.create_dataset("images", shape=(images, channels, height, width), dtype="f4", chunks=chunks)
        masks = f.create_dataset("masks", shape=(images, 1, height, width), dtype="u1", chunks=(1, 1, height, width))
        for index in range(images):
            image, mask = raster(rng, channels, height, width, shapes, noise)
            pixels[index] = image
            masks[index, 0] = mask


def raster(rng: np.random.Generator, channels: int, height: int, width: int, shapes: int,
           noise: float) -> tuple[np.ndarray, np.ndarray]:
    """One (channels, height, width) float32 image and its (height, width) uint8 mask."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    side = min(height, width)
    terrain = TERRAIN_AMPLITUDE * smooth_field(rng, (1, height, width), side / 4)[0]
    objects = np.zeros((height, width))
    for _ in range(rng.integers(max(1, shapes // 2), shapes + 1)):
        coverage = shape_coverage(rng, xs, ys, side)
        objects = np.maximum(objects, rng.uniform(0.6, 1.2) * coverage)
    mask = objects > 0.3  # the sigmoid edge crosses half of the lowest object's height here
    hills = np.zeros((height, width))
    for _ in range(rng.integers(1, shapes + 1)):
        cx, cy, spread = rng.uniform(0, width), rng.uniform(0, height), side * rng.uniform(0.06, 0.12)
        hills += rng.uniform(0.6, 1.2) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * spread**2))
    surface = terrain + objects + hills
    gy, gx = np.gradient(surface)
    layers = [surface, 2.0 * np.hypot(gx, gy)]  # slopes of 0.1-0.5 per pixel at object sides
    if channels == 3:
        layers.append(intensity(rng, xs, ys, mask, side))
    image = np.stack(layers) + noise * rng.standard_normal((len(layers), height, width))
    return image.astype(np.float32), mask.astype(np.uint8)


def shape_coverage(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, side: int) -> np.ndarray:
    """Soft (0..1) coverage of a random ellipse or rotated rectangle, 7-16% of the image side in radius."""
    cx, cy = rng.uniform(0, xs.shape[1]), rng.uniform(0, xs.shape[0])
    a, b = side * rng.uniform(0.07, 0.16, size=2)  # half-axes
    angle = rng.uniform(0, np.pi)
    u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
    v = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)
    if rng.random() < 0.5:
        inside = min(a, b) * (1 - np.hypot(u / a, v / b))  # about the distance to an ellipse's edge
    else:
        inside = np.minimum(a - np.abs(u), b - np.abs(v))  # exact inside a rectangle
    return 1.0 / (1.0 + np.exp(-inside / EDGE_SOFTNESS))


def intensity(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, mask: np.ndarray, side: int) -> np.ndarray:
    """Reflectance: textured ground, objects about 0.5 brighter, and look-alike patches that are ground."""
    ground = 0.3 + 0.1 * smooth_field(rng, (1, *xs.shape), 2.0)[0]
    patches = np.zeros(xs.shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        cx, cy, radius = rng.uniform(0, xs.shape[1]), rng.uniform(0, xs.shape[0]), side * rng.uniform(0.05, 0.12)
        patches |= (xs - cx) ** 2 + (ys - cy) ** 2 < radius**2
    return ground + 0.5 * (mask | patches)
