"""Reciprocal, square root and inverse square root of positive values.

All three scale the input exactly to ``m`` in ``[1, 4)`` with one comparison per binary-search
stage (:mod:`.scaling`: 4 stages cover every positive representable value), evaluate a
minimax polynomial in ``v = m - 2.5`` at 30 fractional bits, and multiply by the secret power
of two ``2^(c e)`` tracked through the scaling. This replaces CrypTen's global initial guesses
(Knott et al. NeurIPS 2021: ``3 e^(1/2 - x) + 0.003`` then 10 Newton-Raphson steps for the
reciprocal) whose accuracy collapses away from ``x ~ 1``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from covault.ops.nonlinear import fixed, scaling
from covault.ops.nonlinear.coefficients import INV_SQRT, RECIP

WORK = 30


def _split(x: Any, power: Fraction, even: bool) -> scaling.Scaled:
    f = x.session.frac_bits
    lo = -f - (f % 2 if even else 0)
    hi = 31 - f
    return scaling.split(x, lo, scaling.stages_for(lo, hi, 2), 2, [power])


def reciprocal_core(x: Any, lo: int, hi: int, out_frac: int, nearest: bool) -> Any:
    """``1/x`` for ``x`` (any frac) in ``[2^lo, 2^hi)``, at ``out_frac`` bits.

    With ``nearest`` the result is rounded to the nearest ``2^-out_frac`` (one more
    comparison), otherwise truncated probabilistically.
    """
    sc = scaling.split(x, lo, scaling.stages_for(lo, hi, 2), 2, [Fraction(-1)])
    m = fixed.as_frac(sc.m, WORK)
    y = fixed.poly(fixed.add_const(m, -2.5), RECIP, 1.5, WORK)
    err = fixed.add_const(-fixed.mul(m, y, WORK), 1.0)
    y = fixed.wrap(y, y.shares + fixed.mul(y, err, WORK).shares, WORK)
    out = fixed.mul(y, sc.factors[0])
    return fixed.round_nearest(out, out_frac) if nearest else fixed.as_frac(out, out_frac)


@fixed.elementwise
def reciprocal(x: Any) -> Any:
    """``1/x``, elementwise, for positive ``x``.

    Method: (1) scale ``x = m 2^e``, ``m`` in ``[1, 4)`` (4 comparisons, exact);
    (2) degree-6 minimax initial guess ``y0(m)`` (relative error 9.1e-4, 3 products);
    (3) one Newton-Raphson step ``y = y0 + y0 (1 - m y0)`` (relative error 8.4e-7);
    (4) ``y 2^-e`` (one product) rounded to the nearest ``2^-f``: truncate ``y - 1/2`` ulp
    probabilistically, then one comparison on the exact residual decides the final +1.
    Domain: every positive representable ``x``; for ``x < 2^(f - 31)`` (``2^-15`` at f = 16)
    the result, still correct in the ring, exceeds the fixed-point range. ``x <= 0`` gives
    garbage.
    Error: relative ``<= 1e-6 + 2^-(f+1) / (1/x)`` (the last term: correct rounding; 0.076% at
    x = 100 for f = 16); measured in ``docs/precision.md``.
    Cost: 5 comparisons (4 scaling stages, each selecting in its conversion round, 1 rounding)
    on ``n`` elements, 6 products, 7 truncations. Rounds: 53 in 2pc (33 for at most 1,024
    elements: the radix-4 carry tree of :mod:`covault.ops.compare`), 60 in rep3.
    """
    f = x.session.frac_bits
    x = fixed.as_frac(x, f)
    return reciprocal_core(x, -f, 31 - f, f, nearest=True)


@fixed.elementwise
def sqrt(x: Any) -> Any:
    """Square root, elementwise, for non-negative ``x``.

    Method: scale ``x = m 4^(e/2)`` (``m`` in ``[1, 4)``, ``e`` even; 4 comparisons, exact),
    ``sqrt(m) = m r(m)`` with the degree-9 minimax fit ``r(m) ~ m^(-1/2)`` (relative error
    6.3e-6, 4 products) and one product by ``m``, which makes ``sqrt(0) = 0`` exactly (``m = 0``
    then), times the tracked ``2^(e/2)`` (one product), one truncation to ``f`` bits.
    Domain: every non-negative representable ``x``; negative inputs give garbage.
    Error: relative ``<= 7e-6`` plus one truncation (``2^-f`` absolute); 0 at ``x = 0``.
    Cost: 4 comparisons (each selecting in its conversion round), 6 products, 7 truncations.
    Rounds: 45 in 2pc (29 for at most 1,024 elements: the radix-4 carry tree), 50 in rep3.
    """
    f = x.session.frac_bits
    x = fixed.as_frac(x, f)
    sc = _split(x, Fraction(1, 2), even=True)
    m = fixed.as_frac(sc.m, WORK)
    r = fixed.poly(fixed.add_const(m, -2.5), INV_SQRT, 1.5, WORK)
    return fixed.mul(fixed.mul(m, r, WORK), sc.factors[0], f)


@fixed.elementwise
def inv_sqrt(x: Any) -> Any:
    """``1/sqrt(x)``, elementwise, for positive ``x``.

    Method: as :func:`sqrt` with the degree-9 minimax fit of ``m^(-1/2)`` (relative error
    6.3e-6) and the tracked factor ``2^(-e/2)``.
    Domain: every positive representable ``x``; ``x <= 0`` gives garbage.
    Error: relative ``<= 7e-6`` plus one truncation (``2^-f`` absolute).
    Cost: 4 comparisons (each selecting in its conversion round), 5 products, 6 truncations.
    Rounds: 43 in 2pc (27 for at most 1,024 elements: the radix-4 carry tree), 48 in rep3.
    """
    f = x.session.frac_bits
    x = fixed.as_frac(x, f)
    sc = _split(x, Fraction(-1, 2), even=True)
    s = fixed.poly(fixed.add_const(fixed.as_frac(sc.m, WORK), -2.5), INV_SQRT, 1.5, WORK)
    return fixed.mul(s, sc.factors[0], f)
