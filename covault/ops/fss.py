"""One-round comparisons for 2pc with a dealer, by function secret sharing.

The dealer gives P0 and P1 keys of a distributed comparison function (DCF,
:mod:`covault.randomness.fss`) whose secret threshold is the low part of a mask ``r``; the
parties open ``X = x + r mod 2^n`` (one round) and everything else is local (Boyle, Chandran,
Gilboa, Gupta, Ishai, Kumar, Rathee, EUROCRYPT 2021, "BCG+21": their ReLU and spline gates
from ONE DCF key, here with the payload chosen so that ReLU needs no product round).

**Domain.** ``n`` is the fewest bits with ``|x| < 2^(n-1)`` in ring units, from ``x``'s public
bound, with one unit of slack for a fixed-point operand (``frac > 0``: a product's truncation may
land one unit beyond the bound that :mod:`covault.bounds` states): ``n = bit_length(ceil(bound
2^frac) + 1) + 1``, and ``n = bit_length(bound) + 1`` for an integer (``frac = 0``, exact). At least
2, at most 63; an unknown bound or a wider one raises :class:`~covault.errors.BoundError`.
``u = x mod 2^n`` is ``x``'s n-bit two's complement; ``R = r mod 2^n = m 2^(n-1) + R_L`` (``m``
its top bit), ``X = p 2^(n-1) + X_L`` (``p`` public).

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
sigmoid   K'(2) / K'(2) + 24               the word + 8              2
========  ===============================  ========================  ======

(n = 32: K(1) = 759.75, K(3) = 1271.75 bytes; the opened word is 4 bytes. ``K'``: the key on
``n`` bits, ``n (16 + 8w) + 8w + n/4``; the sigmoid's 24 are ``R`` and the truncation's mask.)
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
    """``n``: the fewest bits with ``|x| < 2^(n-1)`` in ring units, from ``x``'s public bound
    (plus one unit for the truncation error of a fixed-point operand: module docstring);
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
    slack = 1 if x.frac > 0 else 0  # a product's truncation: one unit beyond the bound
    n = max(int(ring_bound + slack).bit_length() + 1, 2)
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


def _open(x: SecretTensor, r: np.ndarray | None, n: int) -> np.ndarray | None:
    """``X = x + r mod 2^n`` opened to P0 and P1 (flat uint64; one round): each sends its
    share's low ``n`` bits in the narrowest word. ``r`` None: a party without shares (the
    dealer, data parties) takes part in the round's bookkeeping and gets None."""
    proto = x.proto
    if r is None:
        return proto.reveal(proto.empty(x.shape), list(proto.compute))
    full = np.uint64((1 << n) - 1)
    masked = ((x.shares[0] + r).view(np.uint64) & full).astype(_word(n))
    return proto.reveal(masked[None], list(proto.compute)).astype(np.uint64).reshape(-1) & full


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
    opened = _open(x, None if parts is None else parts[0], n)
    if parts is None:
        return None
    key, extras = parts[1]()
    out = evaluate(proto.index, key, opened & low)
    p = (opened >> np.uint64(n - 1)).astype(np.int64)
    return p, opened.view(np.int64), out, [e.reshape(-1) for e in extras]


def drelu(x: SecretTensor) -> SecretTensor:
    """Shares of ``1{x >= 0}`` (integer 0/1, frac 0) in ONE online round.

    1. Dealer: uniform mask ``r`` (shares from the seeds), a DCF key on ``n-1`` bits with
       ``alpha = R_L``, ``beta = 1 - 2m`` (to both parties), shares of ``m`` (BCG+21, the ReLU gate).
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
    return (1 - drelu(-x)).with_bound(1.0)


def relu(x: SecretTensor) -> SecretTensor:
    """``max(x, 0)`` with ``x``'s frac and bound in ONE online round, no product round.

    1. Dealer: mask ``r``, DCF on ``n-1`` bits with ``alpha = R_L`` and payload
       ``(1 - 2m, (1 - 2m) R, 2^n m)``; shares of ``m``, ``R``, ``m R`` (BCG+21, the ReLU gate).
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


# -- sigmoid -----------------------------------------------------------------------------------
# sigma(x) ~ a + b |x| for |x| in [u, next u) (minimax lines, error <= 7.5e-4 each), 1 - that for
# x < 0, and 0 / 1 beyond SIGMOID_SATURATE (where 1 - sigma <= 7.5e-4): (u, a, b).
SIGMOID_LINES = (
    (0.0, 0.50074962932365863, 0.24321287852682974),
    (0.5803, 0.51680579302349261, 0.21554433886143229),
    (0.9691, 0.54852402033713088, 0.1828149142869151),
    (1.3255, 0.59349897783726024, 0.14888415908831698),
    (1.6818, 0.64893786709508927, 0.11592024935528575),
    (2.0581, 0.71170573508994783, 0.08542225168471973),
    (2.4746, 0.77831140457104286, 0.058506583419766826),
    (2.9594, 0.84485901626518745, 0.036019756255097284),
    (3.5609, 0.90688549141814878, 0.018600959514206417),
    (4.3834, 0.95901459434764624, 0.006708580510199587),
    (5.7467, 0.98737371816347186, 0.0016803579662115187),
)
SIGMOID_SATURATE = 7.1947


def sigmoid_pieces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knots ``t_1 < ... < t_23`` (reals) and the line ``a_j + b_j x`` on ``[t_j, t_{j+1})``
    (0 below ``t_1``, 1 from ``t_23``): the odd extension of :data:`SIGMOID_LINES`."""
    u = [p[0] for p in SIGMOID_LINES]
    neg = [(-SIGMOID_SATURATE, *SIGMOID_LINES[-1][1:])] + [
        (-u[j + 1], *SIGMOID_LINES[j][1:]) for j in reversed(range(len(u) - 1))
    ]
    knots = [k for k, _, _ in neg] + u + [SIGMOID_SATURATE]
    a = [1 - aj for _, aj, _ in neg] + [p[1] for p in SIGMOID_LINES] + [1.0]
    b = [bj for _, _, bj in neg] + [p[2] for p in SIGMOID_LINES] + [0.0]
    return np.array(knots), np.array(a), np.array(b)


def _ring(v: int) -> np.int64:
    """A Python integer as a ring element (mod 2^64)."""
    return np.array(v % (1 << 64), dtype=np.uint64).view(np.int64)[()]


def sigmoid(x: SecretTensor) -> SecretTensor:
    """``1 / (1 + e^-x)`` to within 1e-3 (7.5e-4 from the lines, 7.8e-4 measured with the encoding
    and the truncation) in TWO online rounds:
    a spline of 24 linear pieces whose selectors all come from ONE DCF key (BCG+21, the
    interval containment and spline gates), then one truncation.

    Unsigned domain: ``x' = x + 2^(n-1)`` in ``[0, N)``, ``N = 2^n``; knots ``k_j`` likewise
    (clipped to ``[0, N]``). With ``D(y) = 1{y < R}`` (the DCF, ``alpha = R``):

    1. Dealer: mask ``r``, ``R = r mod N``; a DCF key on ``n`` bits with ``alpha = R`` and payload
       ``(1, R)`` to both parties; shares of ``R`` (P1: 1 correction).
    2. P0, P1 open ``X = x' + R mod N`` (one word each; round 1).
    3. Locally, at the points ``X`` and ``Y_j = X - k_j mod N``: shares of ``D`` and ``D R``;
       ``L_j = 1{x' < k_j} = D(Y_j) - D(X) + c_j``, ``c_j = 1{X < k_j}`` public;
       ``x' = X - R + N D(X)`` and ``D(Y_j) D(X) = D(max(X, Y_j))`` give
       ``L_j x' = X (D(Y_j) - D(X)) - [D R](Y_j) + [D R](X) + c_j (N D(Y_j) + X - R)``;
       ``G_j = 1 - L_j = 1{x >= k_j}``, ``G_j x = x - L_j x' + 2^(n-1) L_j``.
    4. ``y = sum_j dA_j 2^frac G_j + dB_j G_j x`` (``A_j, B_j``: the lines' coefficients with the
       session's fractional bits, ``dA_j, dB_j`` their steps at knot ``j``), then one
       truncation by ``x.frac`` bits (round 2; none for an integer ``x``).
    Cost: 2 rounds; each party sends one word (``ceil(n/8)`` bytes rounded up to 1, 2, 4, 8) and
    8 bytes (the truncation); the dealer sends each party ``K(2)`` bytes on ``n`` bits and P1 24
    more (``R`` and the truncation's two). Local work: 24 DCF evaluations per element.
    """
    n = domain_bits(x, "sigmoid")
    proto, shape = x.proto, x.shape
    xf, fo = x.frac, x.session.frac_bits
    N, half = 1 << n, 1 << (n - 1)
    full = np.uint64(N - 1)
    knots, a, b = sigmoid_pieces()
    k = np.clip(np.round(knots * 2.0**xf).astype(np.int64) + half, 0, N).astype(np.uint64)
    A, B = np.round(a * 2.0**fo).astype(np.int64), np.round(b * 2.0**fo).astype(np.int64)
    dA, dB = np.diff(A, prepend=0) << np.int64(xf), np.diff(B, prepend=0)

    def make(r: np.ndarray):
        R = r.view(np.uint64) & full
        return R, np.stack([np.ones_like(r), R.view(np.int64)], axis=1), [R.view(np.int64)]

    provider = getattr(proto, "provider", None)
    parts = None if provider is None else provider.dcf(shape, n, make, 2, 1)
    first = proto.index == 0
    X = _open(x, None if parts is None else parts[0] + (_ring(half) if first else 0), n)
    if parts is None:
        y = proto.empty(shape)
    else:
        key, (R,) = parts[1]()
        points = np.concatenate([X[:, None], (X[:, None] - k[None, :]) & full], axis=1)
        out = evaluate(proto.index, key, points)
        DX, DRX = out[:, :1, 0], out[:, :1, 1]
        D, DR = out[:, 1:, 0], out[:, 1:, 1]
        Xs = X.view(np.int64)[:, None]
        c = (X[:, None] < k[None, :]).astype(np.int64)
        L = D - DX
        Lx = Xs * L - DR + DRX + c * (D * _ring(N) - R.reshape(-1, 1))
        if first:
            L += c
            Lx += c * Xs
        Gx = x.shares[0].reshape(-1, 1) - Lx + L * _ring(half)
        y = (-L) @ dA + Gx @ dB
        if first:
            y += int(dA.sum())
        y = y.reshape(1, *shape)
    if xf:
        y = proto.trunc(y, xf)
    return x._new(y, fo, 1.0 + 2.0 ** (1 - fo))
