"""Fixed-point building blocks shared by :mod:`covault.nn`, :mod:`covault.optim` and :mod:`covault.ml`.

Secret tensors here may carry more fractional bits than the session's ``f`` (``t.frac``): leaf
gradients stay untruncated (``2f`` bits and more) until an optimizer folds its public
coefficients into ONE truncation (:func:`combine`), which saves a round per step.

Public randomness (weight initialisation, the public epoch order of already obliviously
shuffled rows) comes from AES-CTR keyed by a hash of a public seed (:func:`covault.randomness.public.public_prg`), never
from a non-cryptographic generator; it is public by design and reproducible, so a plaintext
reference run can use exactly the same values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from covault.errors import ProtocolError, ShapeError
from covault.ops import compare
from covault.ops.nonlinear import fixed, scaling
from covault.ops.nonlinear.coefficients import INV_SQRT

if TYPE_CHECKING:
    from covault.tensor import SecretTensor

WORK = 30  # fractional bits of the inverse-square-root polynomial
COEF_BITS = 20  # significant bits wanted for every public coefficient in combine()


# -- products without truncation -----------------------------------------------------------------
def raw_matmul(a: SecretTensor, b: SecretTensor) -> SecretTensor:
    """``a @ b`` with ``a.frac + b.frac`` fractional bits (no truncation): one round."""
    return a._new(a.proto.matmul(a.shares, b.shares), a.frac + b.frac)


def raw_mul(a: SecretTensor, b: SecretTensor) -> SecretTensor:
    """Elementwise ``a * b`` with ``a.frac + b.frac`` fractional bits (no truncation): one round."""
    nd = max(a.ndim, b.ndim)
    return a._new(a.proto.mul(_lift(a.shares, nd), _lift(b.shares, nd)), a.frac + b.frac)


def _lift(shares: np.ndarray, ndim: int) -> np.ndarray:
    missing = ndim - (shares.ndim - 1)
    return shares.reshape((shares.shape[0], *(1,) * missing, *shares.shape[1:])) if missing > 0 else shares


def reinterpret(t: SecretTensor, frac: int) -> SecretTensor:
    """The same shares read with ``frac`` bits (multiplies the value by ``2^(t.frac - frac)``)."""
    return t._new(t.shares, frac)


def at_frac(t: SecretTensor, frac: int) -> SecretTensor:
    """``t`` with exactly ``frac`` fractional bits: exact shift up, or one truncation round."""
    return fixed.as_frac(t, frac)


# -- public linear combinations with one truncation ----------------------------------------------
class Product:
    """A secret matrix product ``a @ b`` (2-D) not computed yet, with ``a.frac + b.frac``
    fractional bits: a parameter's gradient waiting for the optimizer, which folds it into its
    truncation (:func:`combine`; in rep3 the product then costs no round of its own)."""

    __slots__ = ("a", "b")

    def __init__(self, a: SecretTensor, b: SecretTensor):
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ShapeError(
                f"Product needs 2-D operands with matching inner sizes, got {a.shape} @ {b.shape}"
            )
        a._same_session(b)
        self.a, self.b = a, b

    @property
    def shape(self) -> tuple[int, int]:
        return (self.a.shape[0], self.b.shape[1])

    @property
    def frac(self) -> int:
        return self.a.frac + self.b.frac

    @property
    def session(self):
        return self.a.session

    def compute(self) -> SecretTensor:
        """The product as a secret tensor (one round)."""
        return raw_matmul(self.a, self.b)


Term = tuple[float, "SecretTensor | Product"]
Output = tuple[Sequence[Term], int, float]


def combine(outputs: Sequence[Output]) -> list[SecretTensor]:
    """Public linear combinations of secret tensors, all truncated in ONE round.

    Each output is ``(terms, frac, bound)``: ``terms`` lists ``(c, t)`` pairs (public real ``c``,
    secret ``t``, shapes broadcasting; ``t`` may be a :class:`Product`), ``frac`` the fractional
    bits of the result and ``bound`` a public bound on its magnitude. Every term is scaled by an
    exact integer ``round(c 2^(F - t.frac))`` to ``F = frac + T`` bits and the stacked sums are
    truncated by ``T`` bits together. ``T`` gives every coefficient ``COEF_BITS`` (20)
    significant bits where the bounds allow it (``|value| 2^F < 2^61``), and fewer otherwise.
    Results are exact up to the coefficients' rounding and one probabilistic truncation,
    PROVIDED every output stays below its bound (beyond, the ring wraps and the result is
    meaningless). Products are formed in the protocol's additive terms
    (``Protocol.product_terms``) and join the sums before the truncation.
    Cost: one truncation of all output elements (none when ``T = 0``), plus in 2pc one round
    per distinct product (rep3: none).
    """
    if not outputs or any(not terms for terms, _, _ in outputs):
        raise ShapeError("combine needs at least one term per output")
    want, cap, floor_ = 0, None, 0
    for terms, frac, bound in outputs:
        base = max([frac, *(t.frac for _, t in terms)])
        need = base
        for c, t in terms:
            if c != 0 and not _exact_at(c, base - t.frac):
                need = max(need, t.frac + COEF_BITS - 1 - math.floor(math.log2(abs(c))))
        want = max(want, need - frac)
        floor_ = max(floor_, base - frac)
        room = 61 - max(0, math.ceil(math.log2(bound))) - frac
        cap = room if cap is None else min(cap, room)
    T = max(min(want, cap), floor_)
    if T > cap:
        raise ProtocolError(f"combine: bounds leave {cap} bits but the terms need {floor_}")
    first = outputs[0][0][0][1]
    like = first.a if isinstance(first, Product) else first  # a secret tensor to build outputs from
    proto = like.proto
    as_terms = any(isinstance(t, Product) for terms, _, _ in outputs for _, t in terms)
    products: dict[int, np.ndarray] = {}

    def part(t) -> np.ndarray:
        if isinstance(t, Product):
            key = id(t)
            if key not in products:
                products[key] = proto.product_terms(t.a.shares, t.b.shares)
            return products[key]
        return proto.to_terms(t.shares) if as_terms else t.shares

    sums, shapes = [], []
    for terms, frac, _ in outputs:
        shape = np.broadcast_shapes(*(t.shape for _, t in terms))
        acc = None
        for c, t in terms:
            if c != 0:
                term = _lift(part(t), len(shape)) * _multiplier(c, frac + T - t.frac)
                acc = term if acc is None else acc + term
        if acc is None:
            acc = np.zeros_like(_lift(part(terms[0][1]), len(shape)))
        acc = np.broadcast_to(acc, (acc.shape[0], *shape))
        sums.append(acc.reshape(acc.shape[0], int(np.prod(shape, dtype=np.int64))))
        shapes.append((shape, frac))
    flat = np.concatenate(sums, axis=1)
    if as_terms:
        flat = proto.from_terms(flat, T)
    elif T:
        flat = proto.trunc(flat, T)
    out, pos = [], 0
    k = flat.shape[0]
    for shape, frac in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        part_ = np.ascontiguousarray(flat[:, pos : pos + size]).reshape((k, *shape))
        out.append(like._new(part_, frac))
        pos += size
    return out


def _exact_at(c: float, shift: int) -> bool:
    """Whether ``c 2^shift`` is an integer (then ``c`` costs no precision at that shift)."""
    return (Fraction(c) * Fraction(2) ** shift).denominator == 1


def _multiplier(c: float, shift: int) -> np.int64:
    m = round(Fraction(c) * Fraction(2) ** shift)
    if abs(m) >= 1 << 62:
        raise ProtocolError(f"coefficient {c} is too large for {shift} fractional bits")
    return np.int64(m)


# -- activation approximations ------------------------------------------------------------------
def sigmoid_piecewise(z: SecretTensor, with_mask: bool = False) -> Any:
    """``clip(1/2 + z/4, 0, 1)``: the tangent of the sigmoid at 0, saturated at ``|z| = 2``.

    One batched comparison of ``[2 - z, 2 + z] < 0`` (2n elements, one call) gives boolean
    ``hi`` and ``lo``; ``mid = 1 - hi - lo = hi ^ lo ^ 1`` (local) is injected into
    ``1/2 + z/4`` and ``hi`` converted in the same round (``Protocol.b2a_mul``, no truncation):
    ``s = hi + mid (1/2 + z/4)``. ``z/4`` is exact (the shares read with 2 more fractional bits),
    so the result has ``z.frac + 2`` fractional bits. Maximum error against the sigmoid: 0.119
    at ``|z| = 2``. With ``with_mask`` also returns the bit ``mid = [|z| <= 2]`` (the derivative
    is ``mid / 4``).

    Exact for every ``z`` the ring represents (the comparison takes all 64 bits: a 32-bit one
    would save a round beyond 1,024 compared elements, none below, but fail for
    ``|z| >= 2^(31 - z.frac) - 2``, which computed logits can reach). Rounds: 8 in 2pc. rep3
    runs the comparison and the bit injection in its dealt two-party view
    (``Replicated3PC.dealt_view``: P1 and P2 compute, P0 only deals), then returns to
    replicated shares: 7 + 1 + 1 = 9 rounds, with two busy processes instead of three. Up to
    512 elements (a comparison of ``2n`` up to 1,024) the msb takes the radix-4 carry tree's 3
    rounds: 4 in 2pc, 3 + 1 + 1 = 5 in rep3.
    """
    f = z.frac
    out = z.proto.dealt(lambda p, xs: np.stack(_piecewise(p, xs, f), axis=1), z.shares)
    s = z._new(np.ascontiguousarray(out[:, 0]), f + 2)
    return (s, z._new(np.ascontiguousarray(out[:, 1]), 0, 1.0)) if with_mask else s


def _piecewise(p, xs: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Protocol ``p``'s shares of ``clip(1/2 + x/4, 0, 1)`` (``f + 2`` fractional bits) and of
    ``[|x| <= 2]`` for its shares ``xs`` of ``x`` (``f`` bits)."""
    both = fixed.two_sided_shares(p, xs, np.int64(2 << f))  # [2 - x, 2 + x]
    p.prepare_b2a(int(np.prod(both.shape[1:], dtype=np.int64)))
    hl = compare.msb_bits(p, both)  # boolean [hi, lo]
    hi_b = hl[:, 0]
    mid_b = p.xor_public(hi_b ^ hl[:, 1], np.uint8(1))  # hi and lo are never both 1
    t = p.add_public(xs, np.int64(1 << (f + 1)))  # 1/2 + x/4 at f + 2 bits
    mid, mt, hi = p.b2a_mul(mid_b, t, extra=hi_b)
    mt += hi << np.int64(f + 2)
    return mt, mid


# -- inverse square roots over chosen ranges ----------------------------------------------------
def inv_sqrt_range(x: SecretTensor, lo: int, hi: int, out_frac: int) -> SecretTensor:
    """``1/sqrt(x)`` for ``x`` (any frac) in ``[2^lo, 2^hi)`` (``lo`` even), at ``out_frac`` bits.

    As :func:`covault.ops.nonlinear.inv_sqrt` (binary scaling to ``[1, 4)``, degree-9
    minimax fit, times the tracked ``2^(-e/2)``) with the scaling range chosen by the caller:
    ``ceil(log2((hi - lo) / 2))`` comparison stages. The ring bound of the scaling requires
    ``lo + (hi - lo) + x.frac <= 62``.
    """
    stages = scaling.stages_for(lo, hi, 2)
    if lo % 2 or lo + 2 * (2 << max(stages - 1, 0)) + x.frac > 62 or lo + x.frac < 0:
        raise ProtocolError(f"inv_sqrt range [2^{lo}, 2^{hi}) does not fit {x.frac} fractional bits")
    sc = scaling.split(x, lo, stages, 2, [Fraction(-1, 2)])
    s = fixed.poly(fixed.add_const(fixed.as_frac(sc.m, WORK), -2.5), INV_SQRT, 1.5, WORK)
    return fixed.mul(s, sc.factors[0], out_frac)


WIDE_SPLIT = 2.0**-4  # inv_sqrt_wide: below, the value is used as is; above, scaled down
WIDE_FRAC = 54  # both candidates are read with this many bits (the scaling's ring bound: 62)


def inv_sqrt_wide(v: SecretTensor, out_frac: int) -> SecretTensor:
    """``1/sqrt(v)`` over more octaves than one binary scaling can hold in the ring: for ``v``
    with ``F`` fractional bits (even, ``F <= 50``), every ``v`` in ``[2^-24, 2^(62 - F))``
    (``F = 36``: up to ``2^26``).

    1. Both candidates in one call of :func:`inv_sqrt_range` on ``[2^-24, 2^8)``, read with 54
       bits: ``v`` itself (shares shifted up by ``54 - F``) and ``v 2^-(54 - F)`` (the same
       shares).
    2. ``small = [v < 2^-4]`` (one comparison) selects ``small ? r_0 : r_1 2^-(27 - F/2)`` in its
       conversion round (bit injection; the other candidate, maybe out of range, is multiplied
       by 0 exactly in the ring), truncated to ``out_frac`` bits.
    Rounds: 53 in 2pc, 61 in rep3 for ``F = 36`` (one range-limited inv_sqrt plus one
    comparison); 33 in 2pc for at most 512 elements (the root's call on both candidates, ``2n``,
    takes the radix-4 carry tree of :mod:`covault.ops.compare`).
    """
    shift = WIDE_FRAC - v.frac
    if v.frac % 2 or shift < 4:
        raise ProtocolError(f"inv_sqrt_wide needs an even number of fractional bits <= 50, got {v.frac}")
    both = fixed.stack([v._new(v.shares << np.int64(shift), WIDE_FRAC), v._new(v.shares, WIDE_FRAC)])
    r_small, r_large = fixed.unstack(inv_sqrt_range(both, -24, 8, WORK))
    half = shift // 2
    w = WORK + half
    _, picked = fixed.select_lt_zero(
        fixed.add_const(v, -WIDE_SPLIT),
        r_small._new(r_small.shares << np.int64(half), w),
        reinterpret(r_large, w),
    )
    return at_frac(picked, out_frac)
