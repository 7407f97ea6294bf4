"""Base oblivious transfer: Chou-Orlandi "simplest OT" over Curve25519 (semi-honest).

Chou, Orlandi, "The Simplest Protocol for Oblivious Transfer", LATINCRYPT 2015. ``g`` is the
base point of Curve25519, ``[x]P`` its scalar multiple; scalar multiplication is X25519 of
the ``cryptography`` package (RFC 7748, clamped scalars, u-coordinates only), the one point
addition per OT is affine Montgomery arithmetic in Python integers. Steps for ``count`` OTs
(two flows):

1. Sender: ``a`` from ``os.urandom`` (an X25519 key), sends ``u(A)`` for ``A = [a]g``. Both
   sides lift it to ``A' = (u(A), even y)``, which is ``A`` or ``-A``.
2. Receiver, per OT ``i`` with choice ``c_i``: ``b_i`` fresh, ``Q_i = [b_i]g`` lifted likewise;
   ``B_i = Q_i`` (``c_i = 0``) or ``A' + Q_i`` (``c_i = 1``; both sums are computed, one kept);
   sends ``B_i`` as its u-coordinate and the parity of its y. Its key is
   ``k_i = H(i, u([b_i]A))``.
3. Sender: ``k0_i = H(i, u([a]B_i))``, ``k1_i = H(i, u([a](B_i - A')))``. Since
   ``u([a](+-Q)) = u([b]A)`` the receiver holds ``k_{c_i}``; the other key needs the
   Diffie-Hellman value of ``A`` and ``B_i -+ A'`` (CDH, in the random-oracle model).

``H(i, z) = SHA-256(DOMAIN || len(tag) || tag || i || u(A) || u(B_i) || parity || z)[:16]``: the
transcript binds the keys to this run, ``tag`` to the caller's context (a session's name).

Cost: sender 1 + 2 count X25519 operations, receiver 2 count and ``count`` point additions
(Python, about 30 us each); bytes: 32 from the sender, 33 per OT from the receiver.

Which variant, and why: X25519 of ``cryptography`` offers only scalar multiplication of
u-coordinates, so CO15's ``A * g^b`` needs the one addition done here over lifted points
(the sign ambiguity is harmless: both parties lift ``u(A)`` the same way, and ``[a]`` commutes
with negation). Masny-Rindal "endemic" OT (CCS 2019) would need a uniform encoding of points
(Elligator 2) and an ideal cipher over it; it is the choice for UC security. Caveats of CO15 in
the literature: its proof of UC security against malicious parties is flawed (Genc, Iovino,
Rial, ePrint 2017/1208; Byali, Patra, Ravi, Sarkar, ePrint 2017/1165; Hauck, Loss, ePrint
2017/1011), and the repairs hash the whole transcript into the keys, as ``H`` does here; a
small-order ``A`` or ``B`` is refused (X25519's all-zero check). covault claims semi-honest
security only. Received points are checked to lie on the curve (not its twist); the Python
arithmetic is not constant-time (local timing channels are out of scope).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from covault.errors import PeerError, ShapeError
from covault.protocols.ot.channel import OTChannel

KEY_BYTES = 16
POINT_BYTES = 32
DOMAIN = b"covault/ot/base/co15-x25519/v1"
_P = 2**255 - 19
_A = 486662
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

Point = tuple[int, int]


def _rhs(u: int) -> int:
    return (u * u * u + _A * u * u + u) % _P


def lift(u: int) -> Point | None:
    """The point ``(u, y)`` of Curve25519 with even ``y``; None if ``u`` is on the twist."""
    v = _rhs(u)
    y = pow(v, (_P + 3) // 8, _P)
    if y * y % _P != v:
        y = y * _SQRT_M1 % _P
        if y * y % _P != v:
            return None
    return u, (_P - y) % _P if y & 1 else y


def add(p: Point, q: Point) -> Point:
    """Affine sum of two points with distinct u-coordinates on ``y^2 = x^3 + A x^2 + x``."""
    (x1, y1), (x2, y2) = p, q
    lam = (y2 - y1) * pow(x2 - x1, -1, _P) % _P
    x3 = (lam * lam - _A - x1 - x2) % _P
    return x3, (lam * (x1 - x3) - y1) % _P


def _u_bytes(u: int) -> bytes:
    return u.to_bytes(POINT_BYTES, "little")


def _exchange(key: X25519PrivateKey, u: int, peer: str, what: str) -> bytes:
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(_u_bytes(u)))
    except ValueError:
        raise PeerError(peer, f"base OT: {what} is a point of small order") from None


def _hash(tag: bytes, i: int, ua: bytes, ub: bytes, parity: int, z: bytes) -> bytes:
    h = hashlib.sha256(DOMAIN)
    h.update(len(tag).to_bytes(4, "little") + tag + i.to_bytes(4, "little") + ua + ub)
    h.update(bytes((parity,)) + z)
    return h.digest()[:KEY_BYTES]


def _public_u(key: X25519PrivateKey) -> int:
    return int.from_bytes(key.public_key().public_bytes_raw(), "little")


def _check_count(count: int, where: str) -> int:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ShapeError(f"base OT {where}: count must be a positive int, got {count!r}")
    return int(count)


def base_ot_send(channel: OTChannel, count: int, tag: bytes = b"") -> tuple[np.ndarray, np.ndarray]:
    """Run ``count`` OTs as the sender: uniform keys ``(k0, k1)``, uint8 ``(count, 16)`` each."""
    count = _check_count(count, "sender")
    peer = channel.peer
    a = X25519PrivateKey.generate()
    ua = _public_u(a)
    a_lift = lift(ua)
    if a_lift is None:  # never: [a]g lies on the curve
        raise PeerError(peer, "base OT: own public point is not on the curve")
    channel.send([np.frombuffer(_u_bytes(ua), dtype=np.uint8).copy()])
    msg = channel.recv()
    if (
        len(msg) != 2
        or msg[0].dtype != np.uint8
        or msg[0].shape != (count, POINT_BYTES)
        or msg[1].dtype != np.uint8
        or msg[1].shape != (count,)
        or bool(np.any(msg[1] > 1))
    ):
        raise PeerError(
            peer,
            f"base OT: expected {count} points (uint8 ({count}, {POINT_BYTES})) and parities "
            f"(uint8 ({count},) of 0/1), got {[(str(m.dtype), m.shape) for m in msg]}",
        )
    ua_b = _u_bytes(ua)
    k0 = np.empty((count, KEY_BYTES), dtype=np.uint8)
    k1 = np.empty((count, KEY_BYTES), dtype=np.uint8)
    neg_a = (a_lift[0], (_P - a_lift[1]) % _P)
    for i in range(count):
        ub_b = msg[0][i].tobytes()
        ub = int.from_bytes(ub_b, "little")
        parity = int(msg[1][i])
        point = lift(ub) if ub < _P else None
        if point is None:
            raise PeerError(peer, f"base OT: point {i} is not on Curve25519")
        if parity:
            point = (point[0], (_P - point[1]) % _P)
        if point[0] == neg_a[0]:
            raise PeerError(peer, f"base OT: point {i} equals the sender's point")
        diff = add(point, neg_a)
        k0[i] = np.frombuffer(
            _hash(tag, i, ua_b, ub_b, parity, _exchange(a, ub, peer, f"point {i}")), np.uint8
        )
        z1 = _exchange(a, diff[0], peer, f"point {i} minus A")
        k1[i] = np.frombuffer(_hash(tag, i, ua_b, ub_b, parity, z1), np.uint8)
    return k0, k1


def base_ot_recv(channel: OTChannel, choices: np.ndarray, tag: bytes = b"") -> np.ndarray:
    """Run ``len(choices)`` OTs as the receiver (choices 0/1): the chosen keys, uint8 ``(count, 16)``."""
    c = np.asarray(choices)
    if c.ndim != 1 or c.size == 0 or c.dtype.kind not in "biu" or bool(np.any((c != 0) & (c != 1))):
        raise ShapeError(f"base OT receiver: choices must be a non-empty 1-d array of 0/1, got {c!r:.80}")
    count, peer = c.size, channel.peer
    msg = channel.recv()
    if len(msg) != 1 or msg[0].dtype != np.uint8 or msg[0].shape != (POINT_BYTES,):
        raise PeerError(peer, f"base OT: expected one point (uint8 ({POINT_BYTES},)), got {len(msg)} arrays")
    ua_b = msg[0].tobytes()
    ua = int.from_bytes(ua_b, "little")
    a_lift = lift(ua) if ua < _P else None
    if a_lift is None:
        raise PeerError(peer, "base OT: the sender's point is not on Curve25519")
    a_pub = X25519PublicKey.from_public_bytes(ua_b)
    points = np.empty((count, POINT_BYTES), dtype=np.uint8)
    parities = np.empty(count, dtype=np.uint8)
    keys = np.empty((count, KEY_BYTES), dtype=np.uint8)
    for i in range(count):
        while True:  # [b]g = A' or -A' has probability 2^-252; draw again
            b = X25519PrivateKey.generate()
            q = lift(_public_u(b))
            if q is not None and q[0] != a_lift[0]:
                break
        both = (q, add(a_lift, q))
        u, y = both[int(c[i])]
        ub_b = _u_bytes(u)
        points[i] = np.frombuffer(ub_b, np.uint8)
        parities[i] = y & 1
        try:
            z = b.exchange(a_pub)
        except ValueError:
            raise PeerError(peer, "base OT: the sender's point is of small order") from None
        keys[i] = np.frombuffer(_hash(tag, i, ua_b, ub_b, y & 1, z), np.uint8)
    channel.send([points, parities])
    return keys


def random_choices(count: int) -> np.ndarray:
    """``count`` uniform choice bits (uint8 0/1) from ``os.urandom``."""
    return np.unpackbits(
        np.frombuffer(os.urandom((count + 7) // 8), np.uint8), count=count, bitorder="little"
    )
