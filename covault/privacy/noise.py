"""Gaussian and Laplace noise for differential privacy, from a covault CSPRNG stream.

Every sample comes from a :class:`~covault.randomness.prg.PRG` (AES-128-CTR keyed from
``os.urandom``), never from numpy's generators. Uniforms are ``(k + 1/2) 2^-52`` for a uniform
52-bit integer ``k``: exact in float64, so never 0 or 1 (with 53 bits, ``k + 1/2`` rounds to
``2^53`` at the top and the Laplace sample would be infinite).

Floating-point caveat (Mironov, CCS 2012): a textbook float sampler added to a float value
leaks that value through the irregular set of floats the sum can take. Here every sample is
rounded to the fixed-point grid ``2^-grid_bits`` (``grid_bits`` = the computation's
fractional bits, 16 by default) before it is used, and it is added to a value on the same grid
as an exact ring element inside MPC, so the set of possible sums does not depend on the value.
What remains is the distance between the rounded float sampler and the rounded ideal
distribution. The uniforms cut the Gaussian's tails beyond ``8.57 sigma`` (Box-Muller; mass
``2^-56``) and the Laplace's beyond ``52 ln 2 = 36.04 scale`` (mass ``2^-52``). Within the cut,
each grid cell's probability is off by at most ``2^-52`` for the Laplace (inverse CDF of
uniforms ``2^-52`` apart) and by the same order for Box-Muller, so a value's distribution is
within total variation ``eta ~ 2^-52 (1 + cells)`` of the ideal rounded one, ``cells`` the grid
cells within the cut (``72 scale 2^grid_bits``, ``17 sigma 2^grid_bits``). A mechanism
``eta``-close in total variation to an ``(epsilon, delta)``-DP one is ``(epsilon, delta + (1 +
e^epsilon) eta)``-DP: the tails alone add about ``2^-52``, the cells at 16 bits and ``scale <=
2^10`` below ``2^-19`` per value.
The float rounding of the transforms moves a sample by far less than the grid step when
``sigma`` (or ``scale``) is many grid steps (``sigma >= 2^-8`` at 16 bits). These are stated,
not accounted: the accountant treats the noise as the ideal continuous distribution rounded to
the grid (a post-processing of it).
"""

from __future__ import annotations

import numpy as np

from covault.randomness.prg import PRG

GRID_BITS = 16


def _check(name: str, value: float, shape) -> tuple[int, ...]:
    if not isinstance(value, int | float | np.integer | np.floating) or not np.isfinite(value) or value < 0:
        raise ValueError(f"noise.{name}: the noise {name} must be a finite number >= 0, got {value!r}")
    shape = (shape,) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"noise.{name}: negative dimension in shape {shape}")
    return shape


def uniform01(prg: PRG, shape: tuple[int, ...]) -> np.ndarray:
    """Float64 uniforms in the open interval (0, 1): ``(k + 1/2) 2^-52``, ``k`` a 52-bit word
    (every value exact, from ``2^-53`` to ``1 - 2^-53``)."""
    words = prg.words(shape, np.uint64) >> np.uint64(12)
    return (words.astype(np.float64) + 0.5) * 2.0**-52


def _to_grid(values: np.ndarray, grid_bits: int | None) -> np.ndarray:
    if grid_bits is None:
        return values
    step = 2.0**grid_bits
    return np.rint(values * step) / step


def gaussian(prg: PRG, shape, sigma: float, *, grid_bits: int | None = GRID_BITS) -> np.ndarray:
    """Float64 samples of N(0, sigma^2) (Box-Muller on CSPRNG uniforms), rounded to multiples
    of ``2^-grid_bits`` (None: not rounded; only for analysis, never for noise that is added to
    a value)."""
    shape = _check("sigma", sigma, shape)
    n = int(np.prod(shape, dtype=np.int64))
    half = (n + 1) // 2
    u1, u2 = uniform01(prg, (half,)), uniform01(prg, (half,))
    radius = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])[:n]
    return _to_grid(float(sigma) * z, grid_bits).reshape(shape)


def laplace(prg: PRG, shape, scale: float, *, grid_bits: int | None = GRID_BITS) -> np.ndarray:
    """Float64 samples of Laplace(0, scale) (inverse CDF on CSPRNG uniforms), rounded to
    multiples of ``2^-grid_bits`` (None: not rounded)."""
    shape = _check("scale", scale, shape)
    u = uniform01(prg, shape) - 0.5
    z = -np.sign(u) * np.log1p(-2.0 * np.abs(u))
    return _to_grid(float(scale) * z, grid_bits)
