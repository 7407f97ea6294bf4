"""The group of DH-PSI: X25519, the prime-order subgroup of Curve25519 in x-only form.

**Exponentiation.** ``X25519(k, u)`` (RFC 7748) is the u-coordinate of ``[c] P`` where ``P`` is a
point with u-coordinate ``u`` and ``c = clamp(k)`` (bits 0-2 and 255 cleared, bit 254 set), via
the OpenSSL ladder of the ``cryptography`` package. Clamped scalars multiply, so
``X25519(k2, X25519(k1, u)) = X25519(k1, X25519(k2, u))``: encryption layers commute. ``c`` is a
multiple of the cofactor 8, so every encrypted value lies in the subgroup of prime order
``l = 2^252 + 27742317777372353535851937790883648493``; a u-coordinate names a point up to sign,
and ``[c](-P) = -[c]P``, so x-only exponentiation is well defined. Two ids collide only if their
points differ by an 8-torsion point (probability about ``2^-248`` per pair).

**Hash to group.** ``H(x) = elligator2(SHA-512(DST || utf8(x)) mod p)``: Elligator 2
(Bernstein, Hamburg, Krasnova, Lange, "Elligator", CCS 2013; RFC 9380 section 6.7.1, ``Z = 2``):
with ``t = 1 + 2 r^2`` (never 0: ``-1/2`` is not a square mod ``p``) and ``u1 = -A / t``, take
``u = u1`` if ``f(u1) = u1^3 + A u1^2 + u1`` is a square mod ``p``, else ``u = -A - u1`` (then
``f(u)`` is a square). The result is always ON THE CURVE, never on its twist: a twist point would
stay on the twist through every exponentiation and anyone could test it (Euler criterion), which
would leak one bit of ``H(x)`` for every id. The map is 2-to-1 onto about half of the curve and
uniform on its image, which is what the random-oracle argument for DH-PSI needs (a reduction
samples group elements until one lies in the image and programs a preimage). Inverses are
batched (Montgomery's trick, one inversion per chunk); the Legendre symbol, one per id, comes
from the first backend that loads and passes a self-test: libgmp ``mpz_jacobi`` or libcrypto
``BN_kronecker`` (the system libraries, through ctypes), else pure Python (binary Jacobi).
``COVAULT_PSI_LEGENDRE=gmp|libcrypto|python`` forces one. None of this is constant-time: local
timing side channels on the hashed ids are out of scope (the threat model is semi-honest
parties over authenticated channels).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from covault.errors import PeerError, ProtocolError

P = 2**255 - 19
A = 486662
POINT_BYTES = 32
DST = b"covault/psi/v1/x25519-elligator2/sha512:"
CHUNK = 8192  # ids hashed / points exponentiated per batch (bounds the Python objects alive)

_MASK = (1 << 255) - 1
_P_LE = P.to_bytes(32, "little")

LegendreFn = Callable[[list[int]], list[int]]


# -- Legendre symbol backends ------------------------------------------------------------------
def jacobi(a: int, n: int = P) -> int:
    """Jacobi symbol ``(a / n)`` for odd ``n > 0`` (binary algorithm, pure Python)."""
    a %= n
    t = 1
    while a:
        z = (a & -a).bit_length() - 1
        if z:
            a >>= z
            if z & 1 and n & 7 in (3, 5):
                t = -t
        if a & n & 2:
            t = -t
        a, n = n % a, a
    return t if n == 1 else 0


def _python_backend() -> LegendreFn:
    return lambda values: [jacobi(v) for v in values]


class _Mpz(ctypes.Structure):
    _fields_ = [("alloc", ctypes.c_int), ("size", ctypes.c_int), ("d", ctypes.c_void_p)]


def _load(lib: str, names: Sequence[str]) -> ctypes.CDLL:
    """The shared library ``lib``: the usual file names first, then a search (slower)."""
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    found = ctypes.util.find_library(lib)
    if found is None:
        raise OSError(f"no shared library {lib!r} found (tried {list(names)})")
    return ctypes.CDLL(found)


def _gmp_backend() -> LegendreFn:
    lib = _load("gmp", ["libgmp.so.10", "libgmp.10.dylib"])
    vp = ctypes.c_void_p
    init, clear = lib.__gmpz_init, lib.__gmpz_clear
    init.argtypes = clear.argtypes = [vp]
    init.restype = clear.restype = None
    imp = lib.__gmpz_import
    imp.argtypes = [vp, ctypes.c_size_t, ctypes.c_int, ctypes.c_size_t, ctypes.c_int, ctypes.c_size_t, vp]
    imp.restype = None
    jac = lib.__gmpz_jacobi
    jac.argtypes = [vp, vp]
    jac.restype = ctypes.c_int

    def legendre(values: list[int]) -> list[int]:
        a, m = _Mpz(), _Mpz()  # per call: threads (local parties) never share GMP state
        pa, pm = ctypes.addressof(a), ctypes.addressof(m)
        init(pa)
        init(pm)
        try:
            imp(pm, 1, -1, 32, -1, 0, _P_LE)
            out = []
            for v in values:
                imp(pa, 1, -1, 32, -1, 0, v.to_bytes(32, "little"))
                out.append(jac(pa, pm))
            return out
        finally:
            clear(pa)
            clear(pm)

    return legendre


def _libcrypto_backend() -> LegendreFn:
    lib = _load("crypto", ["libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.3.dylib"])
    vp = ctypes.c_void_p
    bn_new, bn_free, ctx_new, ctx_free = lib.BN_new, lib.BN_free, lib.BN_CTX_new, lib.BN_CTX_free
    bn_new.restype = ctx_new.restype = vp
    bn_free.argtypes = ctx_free.argtypes = [vp]
    bn_free.restype = ctx_free.restype = None
    l2b = lib.BN_lebin2bn
    l2b.argtypes = [ctypes.c_char_p, ctypes.c_int, vp]
    l2b.restype = vp
    kron = lib.BN_kronecker
    kron.argtypes = [vp, vp, vp]
    kron.restype = ctypes.c_int

    def legendre(values: list[int]) -> list[int]:
        ctx, a, m = ctx_new(), bn_new(), bn_new()
        try:
            if not (ctx and a and m and l2b(_P_LE, 32, m)):
                raise MemoryError("libcrypto could not allocate big numbers")
            out = []
            for v in values:
                l2b(v.to_bytes(32, "little"), 32, a)
                out.append(kron(a, m, ctx))
            return out
        finally:
            for bn in (a, m):
                if bn:
                    bn_free(bn)
            if ctx:
                ctx_free(ctx)

    return legendre


BACKENDS: dict[str, Callable[[], LegendreFn]] = {
    "gmp": _gmp_backend,
    "libcrypto": _libcrypto_backend,
    "python": _python_backend,
}
_SELF_TEST = [1, 2, 4, P - 1, P - 2, 3**160 % P, 7**150 % P, (1 << 255) + 5, 2**256 - 1]
_chosen: tuple[str, LegendreFn] | None = None
_lock = threading.Lock()


def load_backend(name: str) -> LegendreFn:
    """The Legendre backend ``name``, checked against the Euler criterion; raise if unavailable."""
    fn = BACKENDS[name]()
    want = [0 if v % P == 0 else (1 if pow(v, (P - 1) // 2, P) == 1 else -1) for v in _SELF_TEST]
    if fn(_SELF_TEST) != want:
        raise ProtocolError(f"Legendre backend {name!r} fails its self-test")
    return fn


def legendre_backend() -> tuple[str, LegendreFn]:
    """``(name, fn)`` of the Legendre backend in use (chosen once per process)."""
    global _chosen
    with _lock:
        if _chosen is None:
            forced = os.environ.get("COVAULT_PSI_LEGENDRE", "").strip()
            if forced and forced not in BACKENDS:
                raise ProtocolError(f"COVAULT_PSI_LEGENDRE={forced!r}: choose one of {sorted(BACKENDS)}")
            for name in [forced] if forced else list(BACKENDS):
                try:
                    _chosen = (name, load_backend(name))
                    break
                except (OSError, AttributeError, ProtocolError, MemoryError):
                    if forced:
                        raise
            if _chosen is None:
                raise ProtocolError("no Legendre symbol backend passes its self-test")
        return _chosen


# -- hash to group -----------------------------------------------------------------------------
def _red(x: int) -> int:
    """A value < 2^256 congruent to ``x`` mod p, for ``0 <= x < 2^520`` (not canonical)."""
    x = (x & _MASK) + 19 * (x >> 255)
    return (x & _MASK) + 19 * (x >> 255)


def hash_points(ids: Sequence[str], legendre: LegendreFn | None = None) -> list[bytes]:
    """``H(x)`` for every id: 32-byte little-endian u-coordinates of points on Curve25519."""
    if not ids:
        return []
    legendre = legendre or legendre_backend()[1]
    sha, mask = hashlib.sha512, _MASK
    ts = []
    for s in ids:
        r = int.from_bytes(sha(DST + s.encode()).digest(), "little")
        r = (r & mask) + 19 * (r >> 255)
        r = (r & mask) + 19 * (r >> 255)
        x = 2 * r * r + 1
        x = (x & mask) + 19 * (x >> 255)
        ts.append((x & mask) + 19 * (x >> 255))
    # Montgomery's trick: u1 = -A / t for every t with one inversion
    prefix, acc = [], 1
    for t in ts:
        prefix.append(acc)
        acc = acc * t
        acc = (acc & mask) + 19 * (acc >> 255)
        acc = (acc & mask) + 19 * (acc >> 255)
    inv = pow(acc, -1, P)
    u1s = [0] * len(ts)
    neg_a = P - A
    for i in range(len(ts) - 1, -1, -1):
        y = inv * prefix[i]
        y = (y & mask) + 19 * (y >> 255)
        y = neg_a * ((y & mask) + 19 * (y >> 255))
        u1s[i] = ((y & mask) + 19 * (y >> 255)) % P
        inv = inv * ts[i]
        inv = (inv & mask) + 19 * (inv >> 255)
        inv = (inv & mask) + 19 * (inv >> 255)
    gs = [_red(u * _red(u * (u + A) + 1)) for u in u1s]
    chis = legendre(gs)
    other = P - A
    return [(u if c == 1 else (other - u) % P).to_bytes(32, "little") for u, c in zip(u1s, chis, strict=True)]


def on_curve(u: bytes) -> bool:
    """Whether the u-coordinate ``u`` (32 bytes, little-endian) is on Curve25519, not its twist."""
    x = int.from_bytes(u, "little") % P
    fx = (x * x * x + A * x * x + x) % P
    return fx == 0 or pow(fx, (P - 1) // 2, P) == 1


# -- exponentiation ----------------------------------------------------------------------------
def new_key() -> X25519PrivateKey:
    """A fresh secret exponent: 32 bytes from ``os.urandom`` (clamped by X25519)."""
    return X25519PrivateKey.from_private_bytes(os.urandom(32))


def _low_order(where: str, peer: str | None) -> Exception:
    msg = f"{where} holds a point of small order (X25519 gave 0); the list is malformed"
    return PeerError(peer, msg) if peer else ProtocolError(msg)


def _power(key: X25519PrivateKey, points: Sequence[bytes], where: str, peer: str | None) -> bytes:
    ex, load = key.exchange, X25519PublicKey.from_public_bytes
    try:
        return b"".join([ex(load(u)) for u in points])
    except ValueError as e:
        raise _low_order(where, peer) from e


def hash_and_power(key: X25519PrivateKey, ids: Sequence[str], where: str) -> np.ndarray:
    """``H(x)^k`` for every id, as a ``(len(ids), 32)`` uint8 array (chunked)."""
    out = np.empty((len(ids), POINT_BYTES), np.uint8)
    legendre = legendre_backend()[1]
    for s in range(0, len(ids), CHUNK):
        pts = hash_points(ids[s : s + CHUNK], legendre)
        out[s : s + len(pts)] = np.frombuffer(_power(key, pts, where, None), np.uint8).reshape(-1, 32)
    return out


def power(key: X25519PrivateKey, rows: np.ndarray, where: str, peer: str | None = None) -> np.ndarray:
    """``row^k`` for every 32-byte row of ``rows`` (chunked); ``peer`` names who sent them."""
    out = np.empty_like(rows)
    step = CHUNK * POINT_BYTES
    for s in range(0, len(rows), CHUNK):
        buf = rows[s : s + CHUNK].tobytes()
        pts = [buf[j : j + POINT_BYTES] for j in range(0, min(step, len(buf)), POINT_BYTES)]
        out[s : s + len(pts)] = np.frombuffer(_power(key, pts, where, peer), np.uint8).reshape(-1, 32)
    return out
