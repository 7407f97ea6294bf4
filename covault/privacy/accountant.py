"""Privacy accounting of the subsampled Gaussian mechanism (DP-SGD), over Google's
``dp-accounting`` (its RDP accountant; ``pip install covault[privacy]``).

The event accounted is ``steps`` compositions of a Poisson-subsampled Gaussian: each row is
in a step's batch independently with probability ``sample_rate``, the batch's sum of
per-row gradients clipped to norm ``C`` gets ``N(0, (noise_multiplier C)^2)`` per
coordinate; neighbouring datasets differ by adding or removing one row. This is what
:mod:`covault.privacy.dpsgd` runs. Nothing here is hand-written: the RDP curves, their
conversion to ``(epsilon, delta)`` and the calibration search are dp-accounting's.
"""

from __future__ import annotations

import math


def _check(name: str, value: float, low: float, high: float | None = None, *, low_open: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        span = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"privacy accountant: {name} must be a number in {span}, got {value!r}")
    return float(value)


def _steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"privacy accountant: steps must be a positive integer, got {steps!r}")
    return steps


def _event(noise_multiplier: float, sample_rate: float, steps: int):
    import dp_accounting

    step = dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(step, steps)


def _accountant():
    try:
        from dp_accounting import rdp
    except ImportError as exc:  # pragma: no cover - the extra is in requirements-dev.txt
        raise ImportError(
            "privacy accounting needs Google's dp-accounting: pip install 'covault[privacy]'"
        ) from exc
    return rdp.RdpAccountant()


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """The epsilon (at ``delta``) of ``steps`` Poisson-subsampled Gaussian steps with this
    ``noise_multiplier`` (noise std / clipping norm) and ``sample_rate``; RDP accountant."""
    sigma = _check("noise_multiplier", noise_multiplier, 0.0)
    q = _check("sample_rate", sample_rate, 0.0, 1.0)
    delta = _check("delta", delta, 0.0, 1.0)
    acc = _accountant()
    acc.compose(_event(sigma, q, _steps(steps)))
    return float(acc.get_epsilon(delta))


def noise_for(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to dp-accounting's search tolerance, then rounded up to
    4 significant digits) whose :func:`epsilon_for` is at most ``epsilon``."""
    import dp_accounting

    eps = _check("epsilon", epsilon, 0.0)
    delta = _check("delta", delta, 0.0, 1.0)
    q = _check("sample_rate", sample_rate, 0.0, 1.0)
    n = _steps(steps)
    try:
        sigma = dp_accounting.calibrate_dp_mechanism(
            _accountant().__class__,
            lambda s: _event(s, q, n),
            eps,
            delta,
            dp_accounting.ExplicitBracketInterval(1e-3, 1e4),
            tol=1e-6,
        )
    except Exception as exc:  # dp-accounting raises ValueError/RuntimeError when no bracket fits
        raise ValueError(
            f"privacy accountant: no noise multiplier in [0.001, 10000] reaches epsilon={eps:g} "
            f"at delta={delta:g} with sample_rate={q:g} over {n} steps ({exc})"
        ) from exc
    sigma = float(sigma)
    digits = 3 - math.floor(math.log10(sigma))
    up = math.ceil(sigma * 10**digits) / 10**digits
    return up if epsilon_for(up, q, n, delta) <= eps else float(sigma)
