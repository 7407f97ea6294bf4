"""Privacy accounting of the subsampled Gaussian mechanism (DP-SGD), over Google's
``dp-accounting`` (its PLD accountant; ``pip install covault[privacy]``).

The event accounted is ``steps`` compositions of a Poisson-subsampled Gaussian: each row is
in a step's batch independently with probability ``sample_rate``, the batch's sum of
per-row gradients clipped to norm ``C`` gets ``N(0, (noise_multiplier C)^2)`` per
coordinate. Neighbouring datasets differ by REPLACING one row (the row count and the batch
sizes are public, so adding or removing a row is not hidden): the sum moves by up to ``2C``.
This is what :mod:`covault.privacy.dpsgd` runs. The privacy loss distributions, their
composition, their conversion to ``(epsilon, delta)`` (pessimistic: an upper bound) and the
calibration search are dp-accounting's; covault picks the loss grid (:func:`_grid`) and the
search bracket.
"""

from __future__ import annotations

import functools
import math

GRID = 1e-3  # the PLD's privacy-loss discretisation at small epsilon (pessimistic either way)
RDP_ORDERS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 128, 256)  # for the grid's scale only


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


def _dp():
    try:
        import dp_accounting
        from dp_accounting import pld, rdp
    except ImportError as exc:  # pragma: no cover - the extra is in requirements-dev.txt
        raise ImportError(
            "privacy accounting needs Google's dp-accounting: pip install 'covault[privacy]'"
        ) from exc
    return dp_accounting, pld, rdp


def _event(noise_multiplier: float, sample_rate: float, steps: int):
    dp_accounting, _, _ = _dp()
    step = dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(step, steps)


def _grid(sigma: float, q: float, steps: int, delta: float) -> float:
    """The loss discretisation: ``GRID``, coarser at huge epsilon (``1e-5`` of the RDP
    add/remove estimate at integer orders) so that tiny noise multipliers stay tractable; any
    grid gives an upper bound."""
    _, _, rdp = _dp()
    acc = rdp.RdpAccountant(orders=RDP_ORDERS)
    acc.compose(_event(sigma, q, steps))
    return min(100.0, max(GRID, 1e-5 * float(acc.get_epsilon(delta))))  # exp(grid) stays finite


def _pld(grid: float):
    dp_accounting, pld, _ = _dp()
    return pld.PLDAccountant(
        dp_accounting.NeighboringRelation.REPLACE_ONE, value_discretization_interval=grid
    )


@functools.lru_cache(maxsize=256)
def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """The epsilon (at ``delta``) of ``steps`` Poisson-subsampled Gaussian steps with this
    ``noise_multiplier`` (noise std / clipping norm) and ``sample_rate``, neighbours differing
    by one replaced row; dp-accounting's PLD accountant (pessimistic estimate)."""
    sigma = _check("noise_multiplier", noise_multiplier, 0.0)
    q = _check("sample_rate", sample_rate, 0.0, 1.0)
    delta = _check("delta", delta, 0.0, 1.0)
    n = _steps(steps)
    acc = _pld(_grid(sigma, q, n, delta))
    acc.compose(_event(sigma, q, n))
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def noise_for(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier, rounded up to 4 significant digits, whose
    :func:`epsilon_for` is at most ``epsilon`` (bracketed by doubling from 1, then
    dp-accounting's calibration to a relative ``1e-5``)."""
    import dp_accounting

    eps = _check("epsilon", epsilon, 0.0)
    delta = _check("delta", delta, 0.0, 1.0)
    q = _check("sample_rate", sample_rate, 0.0, 1.0)
    n = _steps(steps)
    lo = hi = 1.0
    while epsilon_for(hi, q, n, delta) > eps:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(
                f"privacy accountant: no noise multiplier up to 10000 reaches epsilon={eps:g} "
                f"at delta={delta:g} with sample_rate={q:g} over {n} steps"
            )
    while lo == hi or epsilon_for(lo, q, n, delta) <= eps:
        lo, hi = lo / 2, lo
        if lo < 1e-3:
            return 1e-3 if epsilon_for(1e-3, q, n, delta) <= eps else hi
    grid = _grid(lo, q, n, delta)
    sigma = float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: _pld(grid),
            lambda s: _event(s, q, n),
            eps,
            delta,
            dp_accounting.ExplicitBracketInterval(lo, hi),
            tol=1e-5 * lo,
        )
    )
    step = 10.0 ** (math.floor(math.log10(sigma)) - 3)
    up = math.ceil(sigma / step) * step
    while epsilon_for(up, q, n, delta) > eps:  # the grid of epsilon_for may differ from the search's
        up += step
    return float(f"{up:.4g}") if epsilon_for(float(f"{up:.4g}"), q, n, delta) <= eps else up
