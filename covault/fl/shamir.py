"""t-of-n Shamir secret sharing over the prime field GF(p), p = 2^521 - 1 (a Mersenne prime).

Shamir, "How to share a secret", CACM 1979. :func:`split` draws a random polynomial ``f`` of
degree ``t - 1`` with ``f(0) = secret`` (coefficients from :mod:`secrets`) and gives the holder
at point ``x`` (a nonzero field element; secure aggregation uses client id + 1) the share
``f(x)``. Any ``t`` shares determine ``f(0)`` by Lagrange interpolation at 0
(:func:`reconstruct`); any ``t - 1`` shares are uniformly distributed whatever the secret, so
they reveal nothing about it. Secrets are integers below 2^520 (a 32-byte X25519 key or a
16-byte seed fits in one share). Cost: one share is :data:`SHARE_BYTES` = 66 bytes; splitting
is ``n * t`` field multiplications, reconstruction ``O(t^2)`` plus one inversion per share.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

from covault.fl.errors import SecAggError

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)
MAX_SECRET_BITS = 520


def split(secret: int, threshold: int, points: Iterable[int]) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for each point; any ``threshold`` of them recover it."""
    xs = list(points)
    if not 1 <= threshold <= len(xs):
        raise SecAggError(f"Shamir split: threshold {threshold} must be between 1 and the {len(xs)} holders")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecAggError("Shamir split: the points must be distinct nonzero field elements")
    if not 0 <= secret < 1 << MAX_SECRET_BITS:
        raise SecAggError(
            f"Shamir split: the secret must be a non-negative integer below 2^{MAX_SECRET_BITS}"
        )
    coeffs = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        out[x] = y
    return out


def reconstruct(shares: Mapping[int, int], threshold: int, what: str = "a secret") -> int:
    """``f(0)`` from at least ``threshold`` shares ``{x: y}`` (the first ``threshold`` are used);
    SecAggError naming ``what`` and the count with fewer."""
    if len(shares) < threshold:
        raise SecAggError(
            f"Shamir reconstruction of {what}: {len(shares)} shares, fewer than the threshold {threshold}"
        )
    pts = list(shares.items())[:threshold]
    total = 0
    for i, (xi, yi) in enumerate(pts):
        num, den = 1, 1
        for j, (xj, _) in enumerate(pts):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        if den == 0:
            raise SecAggError(f"Shamir reconstruction of {what}: two shares at the same point {xi}")
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


def to_bytes(value: int) -> bytes:
    """A field element as :data:`SHARE_BYTES` little-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "little")


def from_bytes(data: bytes) -> int:
    """The field element of :func:`to_bytes`; ValueError if it is not below the prime."""
    value = int.from_bytes(data, "little")
    if len(data) != SHARE_BYTES or value >= PRIME:
        raise ValueError(f"a share must be {SHARE_BYTES} bytes encoding an element below 2^521 - 1")
    return value
