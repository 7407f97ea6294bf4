"""The calibration of the Laplace and Gaussian mechanisms, and the local mechanisms an owner
applies to its own column before anything is sent (randomized response, bounded Laplace).

Calibration: the Laplace mechanism with scale ``b = sensitivity_1 / epsilon`` is
``(epsilon, 0)``-DP; the Gaussian mechanism uses the analytic calibration of Balle & Wang
(ICML 2018, Theorem 8): the smallest ``sigma`` with
``Phi(D/(2 sigma) - epsilon sigma/D) - e^epsilon Phi(-D/(2 sigma) - epsilon sigma/D) <= delta``
for ``D = sensitivity_2`` (exact for every ``epsilon``, unlike the classical
``sqrt(2 ln(1.25/delta)) D / epsilon``, which needs ``epsilon < 1``).

Local mechanisms draw from a covault CSPRNG stream (:mod:`covault.privacy.noise`), never from
numpy's generators. A bounded number is clipped to ``[lo, hi]``, snapped to the fixed-point
grid and given Laplace noise sampled on the same grid, so that the sum is exact on the grid
(the floating-point attack of Mironov 2012 needs an inexact float sum).
"""

from __future__ import annotations

import math

import numpy as np

from covault.privacy.noise import GRID_BITS, laplace, uniform01
from covault.randomness.prg import PRG


def _positive(name: str, value: float, where: str) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    """The scale ``b`` of the Laplace mechanism: ``sensitivity / epsilon`` (L1 sensitivity)."""
    return _positive("sensitivity", sensitivity, "laplace mechanism") / _positive(
        "epsilon", epsilon, "laplace mechanism"
    )


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """The smallest ``delta`` for which ``N(0, sigma^2)`` noise is ``(epsilon, delta)``-DP at L2
    sensitivity ``sensitivity`` (Balle & Wang 2018, Theorem 8)."""
    a, b = sensitivity / (2.0 * sigma), epsilon * sigma / sensitivity
    return max(_phi(a - b) - math.exp(epsilon) * _phi(-a - b), 0.0)


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest ``sigma`` of the analytic Gaussian mechanism (module docstring) at L2
    sensitivity ``sensitivity``, to a relative precision of ``1e-10``."""
    where = "gaussian mechanism"
    sensitivity, epsilon = _positive("sensitivity", sensitivity, where), _positive("epsilon", epsilon, where)
    if not isinstance(delta, int | float) or not 0.0 < delta < 1.0:
        raise ValueError(f"{where}: delta must be in (0, 1), got {delta!r}")
    lo, hi = 1e-6 * sensitivity, sensitivity
    while gaussian_delta(hi, sensitivity, epsilon) > delta:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-10 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gaussian_delta(mid, sensitivity, epsilon) > delta else (lo, mid)
    return hi


def keep_probability(epsilon: float, categories: int) -> float:
    """Randomized response over ``categories`` values: the probability that a value is kept,
    ``e^epsilon / (e^epsilon + categories - 1)``; every other value has
    ``1 / (e^epsilon + categories - 1)``."""
    epsilon = _positive("epsilon", epsilon, "randomized response")
    if not isinstance(categories, int) or categories < 2:
        raise ValueError(f"randomized response: categories must be an integer >= 2, got {categories!r}")
    return math.exp(epsilon) / (math.exp(epsilon) + categories - 1)


def randomized_response(prg: PRG, codes: np.ndarray, categories: int, epsilon: float) -> np.ndarray:
    """``epsilon``-local-DP randomized response on integer ``codes`` in ``[0, categories)``:
    each code is kept with :func:`keep_probability`, else replaced by one of the other
    ``categories - 1`` codes, uniformly."""
    keep = keep_probability(epsilon, categories)
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= categories):
        raise ValueError(
            f"randomized response: codes must lie in [0, {categories}), got {codes.min()}..{codes.max()}"
        )
    codes = codes.astype(np.int64)
    stay = uniform01(prg, codes.shape) < keep
    shift = 1 + np.minimum((uniform01(prg, codes.shape) * (categories - 1)).astype(np.int64), categories - 2)
    return np.where(stay, codes, (codes + shift) % categories)


def unbiased_frequencies(counts: np.ndarray, epsilon: float) -> np.ndarray:
    """Unbiased estimates of the true counts per category from the counts of randomized
    responses: ``(c - n q) / (p - q)`` with ``p`` the keep probability and ``q`` the others'."""
    counts = np.asarray(counts, dtype=np.float64)
    p = keep_probability(epsilon, len(counts))
    q = (1.0 - p) / (len(counts) - 1)
    return (counts - counts.sum() * q) / (p - q)


def bounded_laplace(
    prg: PRG, values: np.ndarray, bounds: tuple[float, float], epsilon: float, *, grid_bits: int = GRID_BITS
) -> np.ndarray:
    """``epsilon``-local-DP numbers: each value clipped to ``bounds = (lo, hi)``, snapped to the
    grid ``2^-grid_bits``, plus Laplace noise of scale ``(hi - lo) / epsilon`` on that grid."""
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"local laplace: bounds must be finite with lo < hi, got {bounds!r}")
    scale = laplace_scale(hi - lo, epsilon)
    step = 2.0**grid_bits
    snapped = np.rint(np.clip(np.asarray(values, dtype=np.float64), lo, hi) * step) / step
    return snapped + laplace(prg, snapped.shape, scale, grid_bits=grid_bits)
