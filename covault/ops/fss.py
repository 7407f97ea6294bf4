"""One-round comparisons for 2pc with a dealer, by function secret sharing.

The dealer gives P0 and P1 keys of a distributed comparison function (DCF,
:mod:`covault.randomness.fss`) whose secret threshold is the low part of a mask ``r``; the
parties open ``X = x + r mod 2^n`` (one round) and everything else is local (Boyle, Chandran,
Gilboa, Gupta, Ishai, Kumar, Rathee, EUROCRYPT 2021, "BCG+21": DReLU and ReLU gates,
Sec. 4-5, here with the DCF payload chosen so that ReLU needs no product round).

**Domain.** ``n`` is the fewest bits with ``|x| < 2^(n-1)`` in ring units, from ``x``'s public
bound: ``n = bit_length(ceil(bound 2^frac)) + 1`` (at least 2, at most 63; an unknown bound or a
wider one raises :class:`~covault.errors.BoundError`). ``u = x mod 2^n`` is ``x``'s n-bit two's
complement; ``R = r mod 2^n = m 2^(n-1) + R_L`` (``m`` its top bit), ``X = p 2^(n-1) + X_L``
(``p`` public).

**Identities** (each checked by ``tests/test_fss.py``), with ``c = 1{X_L < R_L}`` the carry into
bit ``n-1`` of ``u + R``:

1. ``msb(x) = p ^ m ^ c``, and ``m ^ c = m + (1 - 2m) c``;
2. ``1{X < R} = m | c`` if ``p = 0``, ``m & c`` if ``p = 1`` (the wrap of ``u + R`` mod ``2^n``);
3. ``u = X - R + 2^n 1{X < R}``, and ``b x = b u`` for ``b = 1{x >= 0}`` (``b = 1`` only where
   ``u = x``): exact in Z_2^64, sign extension included;
4. ``b 1{X < R} = (1 - p) m c`` (``p = 0``: ``b = 1{m = c}``; ``p = 1``: ``b = m ^ c``, which is 0
   where ``m & c``).

So with ``q = m + (1 - 2m) c`` and ``s = 1 - 2p``: ``b = (1 - p) - s q`` and
``relu(x) = b X - b R + 2^n b 1{X < R} = (1 - p)(X - R) - s q X + s (m R + (1 - 2m) c R)
+ (1 - p) 2^n m c``: linear in the shares of ``m``, ``R``, ``m R`` (dealt) and of
``(1 - 2m) c``, ``(1 - 2m) c R``, ``2^n m c`` (the DCF's outputs, payload ``beta = (1 - 2m,
(1 - 2m) R, 2^n m)``, threshold ``alpha = R_L``).

Cost per element, ``K(w) = (n-1)(16 + 8w) + 8w + (n-1)/4`` bytes of DCF correction words on
``n-1`` bits with ``w`` payload words (:func:`covault.randomness.fss.key_bytes`), sent by the
dealer to EACH compute party, offline:

========  ===============================  ========================  ======
gate      dealer -> P0 / -> P1 (bytes)     online, each party sent   rounds
========  ===============================  ========================  ======
drelu     K(1) / K(1) + 8                  ``ceil(n/8)`` rounded to  1
positive  as drelu                         1, 2, 4 or 8 bytes        1
relu      K(3) / K(3) + 24                 as drelu                  1
========  ===============================  ========================  ======

(n = 32: K(1) = 783.75, K(3) = 1279.75 bytes; the opened word is 4 bytes.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from covault.errors import BoundError, ProtocolError
from covault.randomness.fss import evaluate

if TYPE_CHECKING:
    from covault.tensor import SecretTensor

MAX_BITS = 63


def available(x: SecretTensor) -> bool:
    """Whether ``x``'s session runs 2pc with the dealer provider (the gates' requirement)."""
    s = x.session
    return s.protocol_name == "2pc" and s.provider_name == "dealer"


def domain_bits(x: SecretTensor, op: str) -> int:
    """``n``: the fewest bits with ``|x| < 2^(n-1)`` in ring units, from ``x``'s public bound;
    :class:`~covault.errors.ProtocolError` outside 2pc with a dealer, :class:`BoundError` for an
    unknown bound or ``n > 63``."""
    s = x.session
    if not available(x):
        raise ProtocolError(
            f"fss.{op} at party {s.party!r}: needs protocol '2pc' with the 'dealer' provider "
            f"(this session: protocol {s.protocol_name!r}, provider {s.provider_name!r})"
        )
    if x.bound is None or not math.isfinite(x.bound):
        raise BoundError(
            f"fss.{op} at party {s.party!r}: the operand's bound is unknown ({x.bound}); the "
            "domain of the comparison comes from it (declare one: session.input(..., bound=B))"
        )
    ring_bound = math.ceil(x.bound * 2.0**x.frac)
    n = max(int(ring_bound).bit_length() + 1, 2)
    if n > MAX_BITS:
        raise BoundError(
            f"fss.{op} at party {s.party!r}: the operand's bound {x.bound:.6g} ({ring_bound} ring "
            f"units, frac {x.frac}) needs {n} bits; FSS gates take at most {MAX_BITS}"
        )
    return n


def _word(n: int) -> type:
    """The narrowest unsigned dtype holding ``n`` bits (the opened word's size)."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if n <= 8 * np.dtype(dt).itemsize:
            return dt
    return np.uint64


def _dealt(x: SecretTensor, n: int, relu: bool):
    """Deal (dealer), or receive and evaluate (P0, P1) the DCF of the gate; open ``X``.

    Returns None at the dealer and data parties, else ``(p, X, outputs, extras)``: ``p`` the
    public top bit and ``X`` the opened value (int64, flat), the DCF's output shares ``(N, w)``
    and the dealt shares (flat): ``[m]`` for drelu, ``[m], [R], [m R]`` for relu."""
    proto = x.proto
    shape = x.shape
    low = np.uint64((1 << (n - 1)) - 1)
    full = np.uint64((1 << n) - 1)

    def make(r: np.ndarray):
        big = r.view(np.uint64) & full
        m = (big >> np.uint64(n - 1)).astype(np.int64)
        flip = 1 - 2 * m
        R = big.view(np.int64)
        if not relu:
            return big & low, flip[:, None], [m]
        beta = np.stack([flip, flip * R, m << np.int64(n)], axis=1)
        return big & low, beta, [m, R, m * R]

    provider = getattr(proto, "provider", None)
    parts = None if provider is None else provider.dcf(shape, n - 1, make, 3 if relu else 1, 3 if relu else 1)
    dt = _word(n)
    if parts is None:
        proto.reveal(proto.empty(shape), list(proto.compute))
        return None
    r, key, extras = parts
    masked = ((x.shares[0] + r).view(np.uint64) & full).astype(dt)
    opened = proto.reveal(masked[None], list(proto.compute)).astype(np.uint64).reshape(-1) & full
    out = evaluate(proto.index, key, opened & low)
    p = (opened >> np.uint64(n - 1)).astype(np.int64)
    return p, opened.view(np.int64), out, [e.reshape(-1) for e in extras]


def drelu(x: SecretTensor) -> SecretTensor:
    """Shares of ``1{x >= 0}`` (integer 0/1, frac 0) in ONE online round.

    1. Dealer: uniform mask ``r`` (shares from the seeds), a DCF key on ``n-1`` bits with
       ``alpha = R_L``, ``beta = 1 - 2m`` (to both parties), shares of ``m`` (BCG+21 Sec. 4).
    2. P0, P1 open ``X = x + r mod 2^n`` (``ceil(n/8)`` bytes, rounded up to a word, each).
    3. Locally: ``[d] = DCF(X_L) = [(1 - 2m) c]``; ``1{x >= 0} = (1 - p) - (1 - 2p)([m] + [d])``.
    Cost: 1 round; the dealer sends each party ``K(1)`` bytes and P1 8 more (module table).
    """
    n = domain_bits(x, "drelu")
    got = _dealt(x, n, relu=False)
    if got is None:
        return x._new(x.proto.empty(x.shape), 0, 1.0)
    p, _, out, (m,) = got
    s = 1 - 2 * p
    b = -s * (m + out[:, 0])
    if x.proto.index == 0:
        b += 1 - p
    return x._new(b.reshape(1, *x.shape), 0, 1.0)


def positive(x: SecretTensor) -> SecretTensor:
    """Shares of ``1{x > 0} = 1 - 1{-x >= 0}`` (integer 0/1, frac 0) in one online round (the
    decision ``score > t`` is ``positive(score - t)``); cost as :func:`drelu`."""
    domain_bits(x, "positive")
    return 1 - drelu(-x)


def relu(x: SecretTensor) -> SecretTensor:
    """``max(x, 0)`` with ``x``'s frac and bound in ONE online round, no product round.

    1. Dealer: mask ``r``, DCF on ``n-1`` bits with ``alpha = R_L`` and payload
       ``(1 - 2m, (1 - 2m) R, 2^n m)``; shares of ``m``, ``R``, ``m R`` (BCG+21 Sec. 4-5).
    2. P0, P1 open ``X = x + r mod 2^n`` (one word each).
    3. Locally, ``s = 1 - 2p``, ``q = [m] + [(1 - 2m) c]``:
       ``(1 - p)(X - [R]) - s q X + s([m R] + [(1 - 2m) c R]) + (1 - p)[2^n m c]``
       (identities 1-4 of the module).
    Cost: 1 round; the dealer sends each party ``K(3)`` bytes and P1 24 more.
    """
    n = domain_bits(x, "relu")
    got = _dealt(x, n, relu=True)
    if got is None:
        return x._new(x.proto.empty(x.shape), x.frac, x.bound)
    p, X, out, (m, R, mR) = got
    s = 1 - 2 * p
    keep = 1 - p
    y = -s * (m + out[:, 0]) * X
    y += s * (mR + out[:, 1])
    y += keep * (out[:, 2] - R)
    if x.proto.index == 0:
        y += keep * X
    return x._new(y.reshape(1, *x.shape), x.frac, x.bound)
