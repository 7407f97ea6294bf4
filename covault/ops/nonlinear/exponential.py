"""Exponential, natural logarithm and softmax.

``exp``: range reduction by squaring, ``exp(x) = exp(x / 16)^16`` (CrypTen's limit method,
Knott et al. NeurIPS 2021, uses ``(1 + x/2^n)^(2^n)``; here the base is a minimax polynomial,
so only 4 squarings are needed and the error does not grow with ``|x|``).

``log``: secret binary scaling ``x = m 2^e``, ``m`` in ``[1, 4)`` (:mod:`.scaling`, after
Catrina-Saxena FC 2010 / Aly-Smart ACNS 2019), then ``log x = p(m) + e ln 2`` with a degree-9
minimax polynomial (CrypTen instead runs Householder iterations on exp).

``softmax``: max-subtraction (comparison tournament of :mod:`covault.ops.compare`),
``exp`` of the non-positive differences at 29 fractional bits, the sum, one reciprocal of the
row sums (range ``[1, n]``, fewer scaling stages) and one product.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from covault.ops.nonlinear import fixed, scaling
from covault.ops.nonlinear.coefficients import EXP, LOG
from covault.ops.nonlinear.roots import reciprocal_core

EXP_FLOOR = -16.0  # inputs below are clamped here: exp(-16) = 1.1e-7 is 0 at 16 bits
SQUARINGS = 4  # exp(x) = exp(x / 2^4)^(2^4)
LOG_WORK = 30
POLY_WORK = 20  # fractional bits of the powers of x / 16


def exp_core(x: Any, work: int, out_frac: int, ceiling: float | None = None) -> Any:
    """``exp(x)`` at ``out_frac`` bits for ``x`` (any frac); intermediates at ``work`` bits.

    ``x`` is clamped to ``[EXP_FLOOR, ceiling]`` (no upper clamp when ``ceiling`` is None:
    then ``exp(x) < 2^(62 - 2 work)`` is required for the squarings to stay exact).
    """
    zero = fixed.wrap(x, np.zeros_like(x.shares), x.frac)
    if ceiling is None:
        _, xc = fixed.select_lt_zero(fixed.add_const(x, -EXP_FLOOR), fixed.add_const(zero, EXP_FLOOR), x)
    else:
        tests = fixed.stack([fixed.add_const(x, -EXP_FLOOR), fixed.add_const(-x, ceiling)])
        bounds = fixed.stack([fixed.add_const(zero, EXP_FLOOR), fixed.add_const(zero, ceiling)])
        _, picked = fixed.lt_zero_mul(tests, fixed.wrap(x, bounds.shares - x.shares[:, None], x.frac))
        lo_part, hi_part = fixed.unstack(picked)
        xc = fixed.wrap(x, x.shares + lo_part.shares + hi_part.shares, x.frac)
    y = fixed.as_frac(fixed.reinterpret(xc, xc.frac + SQUARINGS), POLY_WORK)
    v = fixed.poly(y, EXP, 1.0, work)
    for i in range(SQUARINGS):
        v = fixed.mul(v, v, work if i < SQUARINGS - 1 else out_frac)
    return v


@fixed.elementwise
def exp(x: Any) -> Any:
    """``e^x``, elementwise.

    Method: (1) clamp ``x`` to ``[-16, ln(2^(31 - f))]`` (one batched comparison whose bits
    select the bounds in its conversion round); (2) ``y = x / 16`` (exact: the same shares read with 4 more fractional bits, kept
    at 20); (3) ``p(y)``, degree-6 minimax fit of ``e^y`` on ``[-1, 0.7]`` (relative error
    9.5e-7), Paterson-Stockmeyer, 3 products; (4) square 4 times at ``W = (31 + f) // 2`` bits
    (23 for f = 16).
    Domain: every representable input. Above ``ln(2^(31 - f))`` (10.397 for f = 16) the result
    saturates just below ``2^(31 - f)``, the top of the fixed-point range; below -16 it is
    ``exp(-16)``, i.e. 0 at 16 fractional bits.
    Error: relative ``<= 2e-5`` plus one final truncation (``< 2^-f`` absolute): for f = 16 at
    most 0.23% at x = -5, almost all of it the last bit (measured: ``docs/precision.md``).
    Cost: one comparison on ``2n`` elements (the clamp at both ends, one call) with the
    selecting product in its conversion round, 7 products, each truncated (3 for the
    polynomial, 4 squarings). Rounds: 22 in 2pc (18 for at most 512 elements, whose comparison
    of ``2n`` takes the radix-4 carry tree of :mod:`covault.ops.compare`), 23 in rep3.
    """
    f = x.session.frac_bits
    x = fixed.as_frac(x, f)
    return exp_core(x, (31 + f) // 2, f, ceiling=(31 - f) * math.log(2.0) - 1e-4)


@fixed.elementwise
def log(x: Any) -> Any:
    """Natural logarithm, elementwise, for positive ``x``.

    Method: (1) :func:`.scaling.split` with ``g = 2``: ``x = m 2^e``, ``m`` in ``[1, 4)``
    exactly (4 comparison stages cover every positive value ``2^-f <= x < 2^(31 - f)``);
    (2) ``log m`` by a degree-9 minimax polynomial in ``v = m - 2.5`` (absolute error
    3.7e-6), Paterson-Stockmeyer at 30 bits, 4 products; (3) ``+ e ln 2`` at 36 bits, one
    truncation to ``f`` bits.
    Domain: every positive representable input. ``x <= 0`` gives garbage (no error can be
    raised on secret data).
    Error: absolute ``<= 4e-6 + 2^-f`` (measured: ``docs/precision.md``).
    Cost: 4 comparisons on ``n`` elements (sequential, each selecting in its conversion
    round), 4 products, 6 truncations. Rounds: 42 in 2pc (26 for at most 1,024 elements: the
    radix-4 carry tree), 48 in rep3.
    """
    f = x.session.frac_bits
    x = fixed.as_frac(x, f)
    lo, hi = -f, 31 - f
    sc = scaling.split(x, lo, scaling.stages_for(lo, hi, 2), 2)
    m = fixed.as_frac(sc.m, LOG_WORK)
    v = fixed.add_const(m, -2.5)
    inner = 36
    p = fixed.poly(v, LOG, 1.5, inner)
    total = fixed.wrap(p, p.shares + sc.e.shares * fixed.encode(math.log(2.0), inner), inner)
    return fixed.as_frac(total, f)


def softmax(x: Any, axis: int = -1) -> Any:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    Method: (1) row maximum by the comparison tournament (``ceil(log2 n)`` batched
    comparison levels); (2) ``exp`` of ``x - max <= 0`` at 29 fractional bits (values in
    ``(0, 1]``, clamped at -16); (3) row sums ``s`` in ``[1, n]``; (4) ``1/s`` by
    :func:`.roots.reciprocal_core` on the range ``[1/2, 2^ceil(log2(2n)))`` (only
    ``log2(log2 n)`` scaling stages); (5) one product, truncated to ``f`` bits.
    Error: absolute ``<= 2e-5`` per output (measured in ``docs/precision.md``).
    Cost: max: about ``n`` comparisons per row; exp: 1 comparison + 7 products per element;
    reciprocal per row; 1 final product per element.
    """
    f = x.session.frac_bits
    x = fixed.as_frac(x, f)
    n = x.shape[axis]
    z = x - x.max(axis=axis, keepdims=True)
    work = 29
    ez = exp_core(z, work, work)
    s = ez.sum(axis=axis, keepdims=True)
    r = reciprocal_core(s, -1, max(1, math.ceil(math.log2(2 * n))), work, nearest=False)
    return fixed.mul(ez, r, f)
