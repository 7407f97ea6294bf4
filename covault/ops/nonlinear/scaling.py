"""Secret binary scaling: write a positive ``x`` as ``m * 2^e`` with ``m`` in ``[1, 2^g)``.

Used by the reciprocal, square-root and logarithm protocols. The exponent is found by a binary
search over octaves with one comparison per stage instead of one comparison per power of two
(``ceil(log2(octaves / g))`` comparisons rather than ``octaves / g``), in the spirit of the
normalisation step of Catrina and Saxena (FC 2010, "Secure computation with fixed-point
numbers") and Aly and Smart (ACNS 2019), but with exact, truncation-free rescaling:

stage with step ``k`` (``k = g 2^(s-1), ..., g``), invariant ``x`` in ``[2^lo, 2^(lo + 2k))``:
  1. ``b = [x < 2^(lo + k)]`` (one comparison).
  2. ``x <- b ? x : x 2^-k``. Both branches are exact at ``k`` more fractional bits: ``x 2^-k``
     has the same shares read with ``frac + k`` bits, and ``x`` has them shifted left by ``k``;
     the comparison's boolean bit selects by bit injection in its conversion round (no
     truncation, no round of its own). The ring value never exceeds ``2^(lo + 2k + frac)``,
     so nothing overflows.
  3. Optional factors ``2^(c e)`` (``c`` in ``{1, -1, 1/2, -1/2}``) are carried along as secret
     integers, selected by the same bit in the same round.

After ``s`` stages ``x 2^-e`` lies in ``[1, 2^g)`` exactly, ``e = lo + sum k (1 - b)``.
Cost: ``s`` comparisons on the input size, each with its selection (one product per option
and element, no truncation) in its conversion round: 8 rounds per stage in 2pc (4 for at most
1,024 elements: the radix-4 carry tree of :mod:`covault.ops.compare`), 9 in rep3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from covault.errors import ProtocolError
from covault.ops.nonlinear import fixed


@dataclass
class Scaled:
    """Result of :func:`split`: ``x = m 2^e``; ``factors[i]`` holds ``2^(c_i e)``."""

    m: Any  # secret tensor, value in [1, 2^g) (exact for x in the covered range)
    e: Any  # secret integer tensor (frac 0)
    factors: list[Any]


def stages_for(lo: int, hi: int, g: int) -> int:
    """Number of stages so that ``[2^lo, 2^(lo + g 2^s))`` covers ``[2^lo, 2^hi)``."""
    s = 0
    while lo + g * (1 << s) < hi:
        s += 1
    return s


def split(x: Any, lo: int, stages: int, g: int, powers: Sequence[Fraction] = ()) -> Scaled:
    """Binary-search scaling of a positive ``x`` in ``[2^lo, 2^(lo + g 2^stages))``.

    ``powers`` lists the exponent multipliers ``c`` of the factors ``2^(c e)`` to return
    (``c k`` must be an integer for every stage step ``k``, and ``c lo`` too).
    Inputs below the range give ``m < 1``; above it ``m >= 2^g``; non-positive inputs give
    garbage (callers document their domains).
    """
    ks = [g << i for i in reversed(range(stages))]
    total = sum(ks)
    cur = x
    one = fixed.wrap(x, fixed.proto(x).add_public(fixed.proto(x).empty(x.shape), np.int64(1)), 0)
    facs, fracs = [], []
    for c in powers:
        c = Fraction(c)
        # 2^(c e) = Q 2^-F with Q an integer product of per-stage factors
        f = -c * lo + (-c * total if c < 0 else 0)
        if f.denominator != 1:
            raise ProtocolError(f"factor 2^({c} e) needs integer shifts for lo = {lo}, steps {ks}")
        f = int(f)
        start = 1 << max(0, -f)
        facs.append(fixed.wrap(x, one.shares * np.int64(start), 0))
        fracs.append(max(0, f))
    e_raw = np.zeros_like(one.shares)
    for k in ks:
        thresh = np.int64(1) << np.int64(lo + k + cur.frac)
        test = fixed.add_const(fixed.as_int(cur), -int(thresh))  # below = [test < 0]
        # x branch: below -> raw << k, above -> raw (both read at frac + k)
        keep = fixed.wrap(cur, cur.shares << np.int64(k), 0)
        down = fixed.wrap(cur, cur.shares, 0)
        options = [(keep, down)]
        for c, q in zip(powers, facs):
            sh = int(abs(Fraction(c)) * k)
            up = fixed.wrap(q, q.shares << np.int64(sh), 0)
            # c > 0: factor 2^(ck) when above (b = 0); c < 0: factor 2^(|c| k) when below
            options.append((q, up) if Fraction(c) > 0 else (up, q))
        diffs = fixed.stack([fixed.wrap(a, a.shares - b.shares, 0) for a, b in options])
        below, picked = fixed.lt_zero_mul(test, diffs)  # below (shape S) broadcasts over diffs
        new = [fixed.wrap(b, b.shares + p.shares, 0) for (_, b), p in zip(options, fixed.unstack(picked))]
        cur = fixed.reinterpret(new[0], cur.frac + k)
        facs = new[1:]
        e_raw = e_raw - below.shares * np.int64(k)
    e = fixed.wrap(x, fixed.proto(x).add_public(e_raw, np.int64(lo + total)), 0)
    m = fixed.reinterpret(cur, cur.frac + lo)
    return Scaled(m, e, [fixed.reinterpret(q, f) for q, f in zip(facs, fracs)])
