"""Public magnitude bounds of secret values, and the scales chosen from them.

Every :class:`~covault.tensor.SecretTensor` carries ``bound``: a public real ``B`` with
``|value| <= B`` for every element. Its ring encoding then has magnitude at most ``B 2^frac``, and
the two limits of the 64-bit ring are:

- :data:`RING_LIMIT` (2^63): a value must stay below it to be represented at all (wrap-around);
- :data:`EXACT_LIMIT` (2^62): a value must stay below it to be truncated exactly
  (:meth:`covault.protocols.base.Protocol.trunc`) or compared.

A bound of ``None`` means *not tracked*: tensors that the ML layer's fused fixed-point steps
(:mod:`covault.nn.functional`, the optimizers) build at their own documented ranges, and
everything computed from them, until a function with a known range (a comparison, sigmoid,
...) gives a bound again. Those values are kept in range by the scaling the ML layer documents
(``docs/ml.md``), not checked here.

Bounds are computed from public information only (shapes, fractional bits, public operands and
declared input bounds), identically at every party; they never depend on a secret. The functions
here are pure arithmetic on those bounds; ``docs/precision.md`` states what is guaranteed.
"""

from __future__ import annotations

import math

import numpy as np

from covault.errors import BoundError

RING_LIMIT = 2.0**63
EXACT_LIMIT = 2.0**62


def log2_str(v: float) -> str:
    """``v`` as ``2^k`` for messages."""
    return "0" if v <= 0 else f"2^{math.log2(v):.1f}"


def add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def scale(a: float | None, k: float) -> float | None:
    return None if a is None else a * k


def check(bound: float | None, frac: int, op: str, limit: float = RING_LIMIT) -> float | None:
    """``bound`` itself, or BoundError when ``bound * 2^frac`` exceeds ``limit`` (bounds are
    strict: values stay below them). An untracked bound (None) passes unchecked."""
    if bound is not None and not bound * 2.0**frac <= limit:
        what = "exact range" if limit == EXACT_LIMIT else "range"
        raise BoundError(
            f"{op}: the result may be as large as |x| = {bound:.6g} ({log2_str(bound)}), beyond the {what} "
            f"|x| < {limit / 2.0**frac:.6g} ({log2_str(limit / 2.0**frac)}) of the ring at {frac} "
            "fractional bits; declare tighter input bounds (session.input(..., bound=B)) or "
            "scale the data down"
        )
    return bound


def product(a: float | None, b: float | None, terms: int, frac: int) -> float | None:
    """Bound of a secret product (``terms`` summed products, e.g. a matmul's inner size) whose
    raw result has ``frac`` fractional bits. When the operands' bounds cannot prove that the
    raw product stays below :data:`EXACT_LIMIT`, covault assumes it does (its truncation would
    be wrong otherwise) and returns the largest such bound: the one assumption left to the
    user (``docs/precision.md``). Untracked if either operand is."""
    if a is None or b is None:
        return None
    return min(a * b * terms, EXACT_LIMIT / 2.0**frac)


def default_bound(frac_bits: int, frac: int) -> float:
    """Bound that steps choosing a scale assume for an untracked tensor: the range of an exact
    product of two inputs, capped by half the exact range at ``frac`` fractional bits (so that
    it can be truncated)."""
    return min(2.0 ** (62 - 2 * frac_bits), EXACT_LIMIT / 2.0 ** (frac + 1))


def column_gain(c: np.ndarray, side: str) -> float:
    """Largest sum of magnitudes that one output of a public matmul collects: for ``x @ c``
    (``side="right"``) the columns of ``c``, for ``c @ x`` the rows."""
    a = np.abs(c.astype(np.float64))
    if a.size == 0:
        return 0.0
    if a.ndim == 1:
        return float(a.sum())
    return float(a.sum(axis=-2 if side == "right" else -1).max())


def multiplier_scale(x_enc: float, c: np.ndarray, gain, s_min: int) -> int | None:
    """Largest scale ``s >= s_min`` for a public real multiplier ``c`` (encoded
    ``round(c 2^s)``) such that ``x_enc * gain(|encoded|) < EXACT_LIMIT`` for a secret operand
    of encoded bound ``x_enc``; None when there is none. ``gain`` maps magnitudes (float array)
    to the largest sum one output collects."""
    peak = float(np.abs(c).max()) if c.size else 0.0
    if peak == 0.0:
        return max(s_min, 0)
    g = gain(np.abs(c))
    if not math.isfinite(g):
        return None
    x_enc = max(x_enc, 1.0)
    room = 62 - math.log2(x_enc) - math.log2(g)  # in logs: no overflow for huge or tiny c
    s = min(61 - math.ceil(math.log2(peak)), 60, math.floor(room) + 1)
    while s >= s_min:
        if x_enc * gain(np.abs(np.round(c * 2.0**s))) < EXACT_LIMIT:
            return s
        s -= 1
    return None


class MultiplierPlan:
    """How to multiply a secret (bound ``known``, ``fx`` fractional bits) by a public real
    ``c``, elementwise or as a matrix, so that the result before its final truncation to ``f``
    bits is within ``error`` of the exact product at the bound (the truncation adds at most one
    unit) and every raw product stays below :data:`EXACT_LIMIT`:

    1. when the operand's bits leave the constant too few, truncate the operand by ``t`` bits;
    2. multiply by ``hi = round(c 2^s)`` (``s`` as large as the bound allows);
    3. when ``hi`` alone leaves an error above the tolerance, add the product with a second limb
       ``lo = round((c 2^s - hi) 2^u)``, truncated by ``u`` bits;
    4. truncate to ``f`` bits.

    The tolerance is 2 units in the last place, or 2^-24 of the result's bound if larger
    (float32 precision). Steps 1 and 3 cost one truncation round each and are used only where
    needed. :meth:`make` returns None when no plan meets the tolerance (the result may not fit
    the exact range, or the bound leaves too few bits).
    """

    def __init__(self, t: int, s: int, hi: np.ndarray, u: int, lo: np.ndarray | None, error: float):
        self.t, self.s, self.hi, self.u, self.lo, self.error = t, s, hi, u, lo, error

    @staticmethod
    def make(known: float, fx: int, f: int, c: np.ndarray, gain) -> MultiplierPlan | None:
        g = gain(np.abs(c))
        tol = max(2.0 ** (1 - f), 2.0**-24 * known * g)
        for t in range(63):
            if t and known * 2.0**fx >= EXACT_LIMIT:
                return None  # the operand cannot be truncated exactly
            pre = 0.0 if t == 0 else g * 2.0 ** (t - fx)  # the operand's truncation error
            if pre > tol:
                return None
            x_enc = known * 2.0**fx if t == 0 else known * 2.0 ** (fx - t) + 1.0
            limbs = _limbs(x_enc, fx - t, f, c, gain, tol - pre)
            if limbs is not None:
                s, hi, u, lo, err = limbs
                return MultiplierPlan(t, s, hi, u, lo, err + pre)
        return None


def _limbs(x_enc: float, fx: int, f: int, c: np.ndarray, gain, budget: float):
    """``(s, hi, u, lo, error)`` for an operand of encoded bound ``x_enc`` at ``fx`` bits, or
    None when one or two limbs cannot reach ``budget``."""
    s = multiplier_scale(x_enc, c, gain, f - fx)
    x_real = x_enc / 2.0**fx
    while s is not None and s >= f - fx:
        hi = np.round(c * 2.0**s)
        rest = c * 2.0**s - hi  # |rest| <= 1/2, in units of 2^-s
        err = x_real * gain(np.abs(rest)) * 2.0**-s
        if err <= budget:
            return s, hi.astype(np.int64), 0, None, err
        u = multiplier_scale(x_enc, rest, gain, 1)
        if u is None:
            return None
        lo = np.round(rest * 2.0**u)
        if x_enc * (gain(np.abs(hi)) + gain(np.abs(rest))) + 1.0 >= EXACT_LIMIT:
            s -= 1  # the two products together need one bit more room
            continue
        err = x_real * gain(np.abs(rest - lo * 2.0**-u)) * 2.0**-s + 2.0 ** -(fx + s)
        return (s, hi.astype(np.int64), u, lo.astype(np.int64), err) if err <= budget else None
    return None
