"""Fixed-point plumbing for the non-linear protocols: tensors with explicit fractional bits.

:class:`~covault.tensor.SecretTensor` arithmetic always truncates products back to the
session's ``f`` fractional bits. The approximations here keep intermediate values at a higher,
per-step precision ``W`` (up to 30 bits, values bounded by a small constant) so that the
final result carries only the error of the approximation plus one truncation to ``f`` bits.
Everything goes through the protocol interface (``mul``, ``trunc``, ``add_public``) on share
arrays, so it works unchanged for every protocol and at the 2pc dealer (``(0, *S)`` shares).
Secret tensors are built with ``type(like)`` so this module never imports :mod:`covault.tensor`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from covault.errors import ProtocolError
from covault.ops import compare

RAW_LIMIT = 2.0**62  # truncation is exact below this magnitude (see Protocol.trunc)


def elementwise(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` on a 0-d tensor as a 1-element vector (numpy scalars warn on the ring's
    intended wrap-around), reshaping the result back."""

    @functools.wraps(fn)
    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        if x.ndim:
            return fn(x, *args, **kwargs)
        return fn(x.reshape(1), *args, **kwargs).reshape(())

    return run


def wrap(like: Any, shares: np.ndarray, frac: int) -> Any:
    """A secret tensor of the same class and session as ``like``."""
    return type(like)(like.session, shares, frac)


def proto(t: Any):
    return t.session.protocol


def encode(value: Any, frac: int) -> np.ndarray:
    """Public real(s) as ring elements with ``frac`` fractional bits (round to nearest)."""
    return np.round(np.asarray(value, dtype=np.float64) * 2.0**frac).astype(np.int64)


def add_const(t: Any, value: Any) -> Any:
    """``t + value`` for a public real ``value`` encoded at ``t.frac`` bits."""
    return wrap(t, proto(t).add_public(t.shares, encode(value, t.frac)), t.frac)


def as_frac(t: Any, frac: int) -> Any:
    """The same value with exactly ``frac`` fractional bits (shift up exactly, or truncate)."""
    if t.frac == frac:
        return t
    if t.frac < frac:
        return wrap(t, t.shares << np.int64(frac - t.frac), frac)
    return wrap(t, proto(t).trunc(t.shares, t.frac - frac), frac)


def reinterpret(t: Any, frac: int) -> Any:
    """Same shares read with ``frac`` fractional bits: multiplies the value by 2^(t.frac - frac)."""
    return wrap(t, t.shares, frac)


def as_int(t: Any) -> Any:
    """The raw ring integers of ``t`` as an integer (frac 0) tensor."""
    return wrap(t, t.shares, 0)


def mul(a: Any, b: Any, frac: int | None = None) -> Any:
    """Secret product with ``a.frac + b.frac`` bits, truncated to ``frac`` when given (one
    fused product-and-truncation where the protocol offers it)."""
    full = a.frac + b.frac
    if frac is not None and frac < full:
        return wrap(a, proto(a).mul_trunc(a.shares, b.shares, full - frac), frac)
    z = wrap(a, proto(a).mul(a.shares, b.shares), full)
    return z if frac is None else as_frac(z, frac)


def stack(ts: Sequence[Any]) -> Any:
    """Stack equally shaped tensors of equal frac along a new leading axis."""
    shape = np.broadcast_shapes(*(t.shape for t in ts))
    k = ts[0].shares.shape[0]
    parts = [np.broadcast_to(t.shares, (k, *shape)) for t in ts]
    return wrap(ts[0], np.stack(parts, axis=1), ts[0].frac)


def two_sided(t: Any, bound: float) -> Any:
    """``[bound - t, bound + t]`` stacked along a new leading axis (the operands of the clamp
    tests ``t > bound`` and ``t < -bound``), in one pass."""
    return wrap(t, two_sided_shares(proto(t), t.shares, encode(bound, t.frac)), t.frac)


def two_sided_shares(p: Any, xs: np.ndarray, enc: np.ndarray) -> np.ndarray:
    """Shares of ``[enc - x, enc + x]`` (axis 1) for protocol ``p``'s shares ``xs`` of ``x``."""
    k = xs.shape[0]
    out = np.empty((k, 2, *xs.shape[1:]), dtype=np.int64)
    np.negative(xs, out=out[:, 0])
    out[:, 1] = xs
    slot = p.public_slot
    if slot is not None and k:
        out[slot] += enc
    return out


def unstack(t: Any) -> list[Any]:
    return [wrap(t, np.ascontiguousarray(t.shares[:, i]), t.frac) for i in range(t.shares.shape[1])]


def mul_many(pairs: Sequence[tuple[Any, Any]], frac: int) -> list[Any]:
    """Several products in one multiplication round and one truncation round.

    All pairs must have the same elementwise shape and the same ``a.frac + b.frac``.
    """
    if len({a.frac + b.frac for a, b in pairs}) != 1:
        raise ProtocolError("batched products need equal fractional bits")
    if len(pairs) == 1:
        return [mul(*pairs[0], frac)]
    a = stack([p[0] for p in pairs])
    b = stack([p[1] for p in pairs])
    return unstack(mul(a, b, frac))


def lt_zero(t: Any) -> Any:
    """Secret 0/1 (integer tensor) of ``raw(t) < 0``, via the comparison protocol."""
    return as_int(t) < 0


def lt_zero_mul(t: Any, values: Any) -> tuple[Any, Any]:
    """``b = [raw(t) < 0]`` (0/1 integer tensor) and the exact product ``b * values``
    (``values.frac``; shapes broadcast), in the comparison's rounds with the product in its
    last one (:func:`covault.ops.compare.msb_mul`)."""
    return compare.msb_mul(as_int(t), values)


def select_raw(bit: Any, if_one: Any, if_zero: Any) -> Any:
    """``bit ? if_one : if_zero`` for a secret 0/1 integer tensor ``bit`` (one product, no
    truncation); both branches must have the same frac."""
    diff = wrap(if_one, if_one.shares - if_zero.shares, if_one.frac)
    picked = mul(bit, diff)
    return wrap(if_zero, if_zero.shares + picked.shares, if_zero.frac)


def select_lt_zero(t: Any, if_one: Any, if_zero: Any) -> tuple[Any, Any]:
    """``([raw(t) < 0], [raw(t) < 0] ? if_one : if_zero)``: the comparison's bit feeds the
    selecting product directly (:func:`lt_zero_mul`, no round of its own); both branches must
    have the same frac."""
    diff = wrap(if_one, if_one.shares - if_zero.shares, if_one.frac)
    bit, picked = lt_zero_mul(t, diff)
    return bit, wrap(if_zero, if_zero.shares + picked.shares, if_zero.frac)


def poly(v: Any, coeffs: Sequence[float], vmax: float, out_frac: int) -> Any:
    """``sum_i coeffs[i] v^i`` for ``v`` at ``W = v.frac`` bits with ``|v| <= vmax``.

    Paterson-Stockmeyer evaluation (SIAM J. Comput. 1973): baby powers ``v^2..v^s`` in
    ``ceil(log2 s)`` batched rounds, blocks ``B_j`` of ``s`` coefficients combined locally with
    integer-encoded coefficients, then Horner in ``v^s``: each product and the next block are
    added before one truncation (``Protocol.mul_add_trunc``: fused in rep3, 2 rounds per step
    in both protocols). Products: ``s - 1 + ceil(n/s) - 1`` for degree ``n``.

    Every partial sum is below ``bound = sum |c_i| vmax^i``. When ``2W + log2(bound)`` leaves
    ``K >= 18`` spare bits, the top block is kept at ``W + K`` bits and the others at
    ``2W + K`` (no truncation of the top block); otherwise all blocks are formed at ``2W`` bits
    and the top one is truncated to ``W`` first (one more truncation).
    """
    w = v.frac
    n = len(coeffs) - 1
    bound = float(np.sum(np.abs(coeffs) * float(vmax) ** np.arange(n + 1)))
    if bound * 2.0 ** (2 * w) >= RAW_LIMIT:
        raise ProtocolError(f"polynomial of bound {bound:.3g} does not fit {w} fractional bits")
    s = _baby_step(n)
    powers = {1: v}
    h = 1
    while h < s:
        js = list(range(h + 1, min(2 * h, s) + 1))
        powers.update(zip(js, mul_many([(powers[h], powers[j - h]) for j in js], w)))
        h *= 2
    nblocks = max(1, -(-n // s))
    spare = 61 - 2 * w - max(0, int(np.ceil(np.log2(bound))))
    fused = nblocks > 1 and spare >= 18
    low_frac = 2 * w + (spare if fused else 0)

    def block(j: int, frac: int) -> Any:
        top = n if j == nblocks - 1 else j * s + s - 1
        raw = None
        for i in range(1, top - j * s + 1):
            term = powers[i].shares * encode(coeffs[j * s + i], frac - w)
            raw = term if raw is None else np.add(raw, term, out=raw)
        if raw is None:
            return wrap(v, proto(v).add_public(np.zeros_like(v.shares), encode(coeffs[j * s], frac)), frac)
        slot = proto(v).public_slot
        if slot is not None and raw.shape[0]:
            raw[slot] += encode(coeffs[j * s], frac)
        return wrap(v, raw, frac)

    if nblocks == 1:
        return as_frac(block(0, low_frac), out_frac)
    acc = block(nblocks - 1, low_frac - w) if fused else as_frac(block(nblocks - 1, low_frac), w)
    for j in range(nblocks - 2, -1, -1):
        target = (low_frac - w) if j else out_frac
        add = block(j, low_frac)
        if target < low_frac:  # product, block and truncation in one protocol call
            shares = proto(v).mul_add_trunc(acc.shares, powers[s].shares, add.shares, low_frac - target)
            acc = wrap(v, shares, target)
        else:
            acc = as_frac(wrap(v, mul(acc, powers[s]).shares + add.shares, low_frac), target)
    return acc


def _baby_step(n: int) -> int:
    """Baby-step size ``s`` minimising products, then rounds, for degree ``n``."""

    def cost(s: int) -> tuple[int, int, int]:
        horner = max(1, -(-n // s)) - 1
        return (s - 1 + horner, (s - 1).bit_length() + horner, s)

    return min(range(1, max(1, n) + 1), key=cost)


def round_nearest(t: Any, frac: int) -> Any:
    """``t`` (at ``F > frac`` bits) rounded to the nearest multiple of ``2^-frac``.

    Probabilistic truncation returns ``floor`` or ``floor + 1`` of its input, so after
    truncating ``t - 1/2 ulp`` the exact residual ``r = t - y`` (local) lies in
    ``[-1/2, 3/2)`` ulp; one comparison ``r >= 1/2`` ulp decides the final +1. Cost: one
    truncation and one comparison.
    """
    bits = t.frac - frac
    half = np.int64(1) << np.int64(bits - 1)
    y = as_frac(wrap(t, proto(t).add_public(t.shares, -half), t.frac), frac)
    resid = wrap(t, proto(t).add_public(t.shares - (y.shares << np.int64(bits)), -half), 0)
    up = 1 - lt_zero(resid)
    return wrap(y, y.shares + up.shares, frac)
