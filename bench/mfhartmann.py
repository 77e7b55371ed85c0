"""Multi-fidelity Hartmann 3-D: a synthetic learning-curve benchmark whose low fidelities
reorder configurations (as late-peaking training curves do), with a known optimum.

Ported from mf-prior-bench (https://github.com/automl/mf-prior-bench,
``src/mfpbench/synthetic/hartmann/generators.py`` (``MFHartmann3``) and ``benchmark.py``
(the presets), Apache License 2.0; the package pins numpy<2, hence the port). Changes from the
original: the fidelity range is fixed at z = 1..100, a whole curve is computed at once, and
the noise is drawn from a generator seeded by (seed, the config's float bits) whose z-th draw
is the noise at fidelity z (the original seeds one generator per (config, z) from
``abs(seed * z * hash(Xs))``): both give an independent |N(0, 1)| per (config, z), the same
every time it is asked for.

With s = ln z / ln 100 for fidelity z in 1..100,

    alpha' = alpha - bias (1 - s)
    f(x, z) = -sum_i alpha'_i exp(-sum_j A_ij (x_j - P_ij)^2) + |eps_z| noise (1 - s)

which is the exact Hartmann-3 function at z = 100 (global minimum -3.86278 at
(0.114614, 0.555649, 0.852547)). Lower is better. x lies in [0, 1]^3.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# (bias, noise), as mf-prior-bench names them.
PRESETS: dict[str, tuple[float, float]] = {
    "default": (0.5, 0.1),
    "good": (2.5, 2.0),
    "moderate": (3.0, 3.0),
    "bad": (3.5, 4.0),
    "terrible": (4.0, 5.0),
}
Z_MAX = 100
DIMS = 3
OPTIMUM_X = (0.114614, 0.555649, 0.852547)
OPTIMUM = -3.86278  # f(OPTIMUM_X, 100), to 5 decimals
# The search space, as the service's spec writes it (every coordinate uniform on [0, 1]).
SPACE = {f"x{j}": {"type": "uniform", "low": 0.0, "high": 1.0} for j in range(DIMS)}
DEFAULT_SEED = 1337  # mf-prior-bench's default noise seed

_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]], dtype=float)


def _noise(x: np.ndarray, seed: int) -> np.ndarray:
    """|eps_z| for z = 1..Z_MAX: a function of (seed, x) only."""
    bits = [int(b) for b in np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)]
    return np.abs(np.random.default_rng(np.random.SeedSequence([seed, *bits])).standard_normal(Z_MAX))


def curve(x: Sequence[float], preset: str = "good", fidelities: Iterable[int] = range(1, Z_MAX + 1),
          seed: int = DEFAULT_SEED) -> list[float]:
    """f(x, z) for each z in ``fidelities`` (each in 1..100)."""
    bias, noise = PRESETS[preset]
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (DIMS,) or np.any(x < 0) or np.any(x > 1):
        raise ValueError(f"x must be {DIMS} numbers in [0, 1], got {x}")
    z = np.asarray(list(fidelities), dtype=int)
    if z.size and (z.min() < 1 or z.max() > Z_MAX):
        raise ValueError(f"fidelities must lie in 1..{Z_MAX}")
    s = np.log(z) / np.log(Z_MAX)  # 0 at z = 1, 1 at z = 100
    bumps = np.exp(-np.sum(_A * (x - _P) ** 2, axis=1))  # one per term i
    alpha = _ALPHA[None, :] - bias * (1 - s)[:, None]  # fidelity x term
    values = -(alpha @ bumps) + _noise(x, seed)[z - 1] * noise * (1 - s)
    return [float(v) for v in values]


def value(x: Sequence[float], preset: str = "good", z: int = Z_MAX, seed: int = DEFAULT_SEED) -> float:
    """f(x, z) at one fidelity (the same number ``curve`` gives there)."""
    return curve(x, preset, [z], seed)[0]
