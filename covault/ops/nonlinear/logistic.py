"""Logistic sigmoid and hyperbolic tangent: one batched clamp comparison plus an odd polynomial.

Method (both functions share it; ``tanh(x) = 2 sigmoid(2x) - 1``):

1. Clamp. One batched comparison of ``[T - x, T + x] < 0`` (``2n`` elements, one call)
   gives boolean shares of ``hi = [x > T]`` and ``lo = [x < -T]``; ``out = hi ^ lo``
   (``= hi + lo``: never both) is injected into ``x`` and ``hi`` converted in the same round
   (``Protocol.b2a_mul``, no truncation): ``xc = x - out x + T (2 hi - out)``.
   ``T = 8`` for sigmoid and ``T = 4`` for tanh (``T`` is a power of two, so
   ``t = xc / T`` in ``[-1, 1]`` is the same shares read with ``log2 T`` more fractional bits).
   rep3 computes the clamp in its dealt two-party view (``Replicated3PC.dealt_view``: P1 and P2
   with tuples P0 deals; msb 3 rounds up to 1,024 compared elements (the radix-4 carry tree of
   :mod:`covault.ops.compare`), else 7; injection 1, back to replicated 1), so P0 is free for
   the 2n-element comparison: 1M sigmoids 0.97 -> 0.77 s on 2 cores.
2. ``u = t^2`` (one product), ``w = 2u - 1`` (local): ``w`` in ``[-1, 1]``.
3. ``sigmoid(T' t) - 1/2 = t q(w)``, ``q`` of degree 9 (odd degree 19 in ``t``), a minimax fit
   on ``[-1, 1]`` that also balances the clamp: ``|t q - 1/2| <= E`` at ``t = 1`` so that every
   ``|x| > T`` is within ``E`` of 0 or 1 (``T' = 8``; fit error ``E = 2.0e-4``).
   ``t^2`` and the powers of ``w`` are kept at 20 fractional bits, ``q`` at 30; Paterson-
   Stockmeyer evaluation (baby steps ``w^2, w^3``, two Horner steps in ``w^3``, each adding
   its block before the product's truncation, fused in rep3): 4 products.
4. ``t q`` (one product) truncated to ``f`` bits, plus ``1/2`` (sigmoid) or doubled (tanh).

Sources: the clamp follows SecureML's piecewise sigmoid (Mohassel-Zhang, S&P 2017), with the
linear middle piece replaced by a minimax polynomial in a normalised variable (fits in a
Chebyshev basis, as CrypTen, Knott et al. NeurIPS 2021, does for its own approximations;
CrypTen itself computes sigmoid from exp and a reciprocal). Polynomial evaluation:
Paterson-Stockmeyer (SIAM J. Comput. 1973).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from covault.ops import compare
from covault.ops.nonlinear import fixed
from covault.ops.nonlinear.coefficients import SIGMOID_W

WORK = 20  # fractional bits of t^2 and of the polynomial's powers
Q_FRAC = 30  # fractional bits of q


def _clamp(proto: Any, xs: np.ndarray, bound: float, f: int) -> np.ndarray:
    """Shares of ``clip(x, -bound, bound)`` for shares ``xs`` of ``x`` (``f`` fractional bits):
    one batched comparison of ``[bound - x, bound + x] < 0`` whose conversion round also makes
    the product ``(hi + lo) x`` (``Protocol.b2a_mul``)."""
    enc = fixed.encode(bound, f)
    both = fixed.two_sided_shares(proto, xs, enc)
    proto.prepare_b2a(int(np.prod(both.shape[1:], dtype=np.int64)))
    hl = compare.msb_bits(proto, both)  # boolean [hi, lo]
    hi_b = hl[:, 0]
    out, ox, hi = proto.b2a_mul(hi_b ^ hl[:, 1], xs, extra=hi_b)  # out = hi + lo
    return xs - ox + (hi * 2 - out) * enc  # hi - lo is the sign of the clamp


def _odd_part(x: Any, texp: int, double: bool) -> Any:
    """``sigmoid(8 x / 2^texp) - 1/2`` (times 2 when ``double``) at the session's bits."""
    f = x.session.frac_bits
    x = fixed.as_frac(x, f)
    bound = float(1 << texp)
    # rep3: the clamp in the dealt two-party view (P0 only deals)
    xc = fixed.wrap(x, fixed.proto(x).dealt(lambda p, xs: _clamp(p, xs, bound, f), x.shares), f)
    t = fixed.reinterpret(xc, f + texp)
    u = fixed.mul(t, t, WORK)
    w = fixed.add_const(fixed.wrap(u, u.shares << np.int64(1), WORK), -1.0)
    q = fixed.poly(w, SIGMOID_W, 1.0, Q_FRAC)
    if double:  # 2 t q: the product at f + 1 bits, read with f
        return fixed.reinterpret(fixed.mul(t, q, f + 1), f)
    return fixed.mul(t, q, f)


@fixed.elementwise
def sigmoid(x: Any) -> Any:
    """``1 / (1 + exp(-x))``, elementwise.

    Method: clamp to ``[-8, 8]`` with one batched comparison, then ``1/2 + t q(2 t^2 - 1)``
    with ``t = x / 8`` and a degree-9 ``q`` (odd degree 19 in ``t``); see the module docstring.
    Domain: every representable input; ``|x| >= 8`` saturates (within the bound below).
    Error: ``|err| <= 2.0e-4 + 2^-f`` for every input (fit error plus one probabilistic
    truncation); measured in ``docs/precision.md``.
    Cost: one comparison on ``2n`` elements (one call) whose conversion round also makes the
    clamp's product, 6 products, each truncated. Rounds: 20 in 2pc, 21 in rep3 (8 / 9 of them
    the comparison with the clamp; rep3 runs the clamp in its dealt two-party view, where P0
    only deals, and returns in one round); 16 / 17 (4 / 5 for the clamp) for at most 512
    elements, whose comparison of ``2n`` takes the radix-4 carry tree.
    """
    return fixed.add_const(_odd_part(x, 3, False), 0.5)


@fixed.elementwise
def tanh(x: Any) -> Any:
    """Hyperbolic tangent ``tanh(x) = 2 sigmoid(2x) - 1``, elementwise.

    Method: as :func:`sigmoid` with the clamp at ``|x| = 4`` (``t = x / 4``) and the odd part
    doubled; the same polynomial and cost. Domain: every representable input; saturates to
    ``+-1`` for ``|x| >= 4``. Error: ``|err| <= 4.0e-4 + 2^-f`` (twice the sigmoid fit error).
    """
    return _odd_part(x, 2, True)
