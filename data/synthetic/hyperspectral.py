"""A generator of realistic synthetic hyperspectral cubes (linear mixing model).

Each pixel mixes a few endmember spectra (smooth curves over the band axis, shared by
all cubes) with abundances that vary smoothly in space, plus Gaussian sensor noise.
Neighbouring bands and neighbouring pixels are therefore strongly correlated, and the
data lie close to a low-dimensional manifold: a model that captures that structure
reconstructs the cubes better than one that does not, which is what a hyperparameter
search needs to see.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from data.h5.band_stats import BandMoments

# Bump whenever the output for given settings changes, so cached files are not reused.
GENERATOR_VERSION = 1
# Softmax temperature for abundances: low enough that regions are dominated by one
# material, high enough that borders are gradual mixtures.
ABUNDANCE_TEMPERATURE = 0.3
# Largest spatial chunk side: one chunk per cube at usual sizes, tiles for huge cubes
# so that reading one crop never pulls hundreds of megabytes.
MAX_CHUNK_SIDE = 256


def write_synthetic_cubes(
    path: str | Path,
    cubes: int,
    bands: int,
    height: int,
    width: int,
    endmembers: int,
    noise: float,
    seed: int,
) -> None:
    """Write dataset `cubes` (cubes, bands, height, width) float32 plus `band_mean`/`band_std` to `path`.

    Deterministic for given arguments. Cubes are generated and written one at a time,
    so memory use does not grow with `cubes`.
    """
    rng = np.random.default_rng(seed)
    spectra = endmember_spectra(rng, endmembers, bands)
    moments = BandMoments.empty(bands)
    chunks = (1, bands, min(height, MAX_CHUNK_SIDE), min(width, MAX_CHUNK_SIDE))
    with h5py.File(path, "w") as f:
        f.attrs.update(
            generator="hpsearch synthetic hyperspectral (linear mixing)",
            generator_version=GENERATOR_VERSION,
            cubes=cubes,
            bands=bands,
            height=height,
            width=width,
            endmembers=endmembers,
            noise=noise,
            seed=seed,
        )
        dataset = f.create_dataset("cubes", shape=(cubes, bands, height, width), dtype="f4", chunks=chunks)
        for index in range(cubes):
            abundances = abundance_maps(rng, endmembers, height, width)
            cube = np.tensordot(spectra, abundances, axes=(0, 0))
            cube += noise * rng.standard_normal(cube.shape)
            cube = cube.astype(np.float32)
            dataset[index] = cube
            moments.add(cube)
        f.create_dataset("band_mean", data=moments.mean)
        f.create_dataset("band_std", data=moments.std)


def endmember_spectra(rng: np.random.Generator, endmembers: int, bands: int) -> np.ndarray:
    """(endmembers, bands) positive spectra in (0, 1]: a sloped baseline plus 1-3 absorption-like bumps."""
    t = np.linspace(0.0, 1.0, bands)
    spectra = np.empty((endmembers, bands))
    for row in spectra:
        # offset >= 0.1 and slope >= -0.1 keep the baseline positive over t in [0, 1].
        curve = rng.uniform(0.1, 0.3) + rng.uniform(-0.1, 0.3) * t
        for _ in range(rng.integers(1, 4)):
            centre, width = rng.uniform(0.0, 1.0), rng.uniform(0.04, 0.2)
            curve += rng.uniform(0.2, 0.8) * np.exp(-0.5 * ((t - centre) / width) ** 2)
        row[:] = curve * (rng.uniform(0.6, 1.0) / curve.max())
    return spectra


def abundance_maps(rng: np.random.Generator, endmembers: int, height: int, width: int) -> np.ndarray:
    """(endmembers, height, width) non-negative maps summing to 1 per pixel, smooth in space.

    Logits are Gaussian random fields at two scales (regions plus texture), so that
    material regions have a size comparable to the crops a model sees.
    """
    region_sigma = max(height, width) / 10 * rng.uniform(0.6, 1.4)
    logits = smooth_field(rng, (endmembers, height, width), region_sigma)
    logits += 0.35 * smooth_field(rng, (endmembers, height, width), 1.5)
    logits /= ABUNDANCE_TEMPERATURE
    logits -= logits.max(axis=0, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=0, keepdims=True)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """White noise low-passed by a Gaussian of `sigma` pixels (via FFT, periodic), standardised per map."""
    _, height, width = shape
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    # Fourier transform of a unit-area Gaussian kernel with standard deviation sigma.
    transfer = np.exp(-2.0 * np.pi**2 * sigma**2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * transfer, s=(height, width))
    field -= field.mean(axis=(1, 2), keepdims=True)
    # The small constant keeps a (degenerate) constant field at zero instead of NaN.
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-12)
