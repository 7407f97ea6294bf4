"""The garbling hash: tweaked MMO over AES-128 with a per-garbling public key.

``H(x, T) = pi(2x ^ T) ^ 2x ^ T``, ``pi`` = AES-128 under a key fixed for one garbling (public,
sent to the evaluator), ``2x`` doubling in GF(2^128) (modulus ``x^128 + x^7 + x^2 + x + 1``) and
``T`` a 128-bit tweak unique to every hashed value (the AND gate's index and half in lane 0, the
instance's index in lane 1). This is the fixed-key garbling of Bellare, Hoang, Keelveedhi and
Rogaway (IEEE S&P 2013) in the form Guo, Katz, Wang and Yu ("Efficient and Secure Multiparty
Computation from Fixed-Key Block Ciphers", IEEE S&P 2020) prove circular correlation robust
(MMO with the linear orthomorphism ``x -> 2x``), as half-gates with free-XOR needs. The GKWY
caveat: BHKR's ``pi(K) ^ K`` with ``K = 2A ^ 4B ^ T`` admits attacks when tweaks repeat or many
circuits share one key (an offline search against all gates at once); here tweaks never repeat
within a garbling and each garbling draws a fresh key, so offline work cannot be amortised over
garblings. Every call hashes all its values in one AES-ECB ``update_into``.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from covault.errors import ShapeError

_R = np.uint64(0x87)
_ONE = np.uint64(1)
_S63 = np.uint64(63)


class GarbleHash:
    """``H`` under the AES key ``key`` (16 public bytes)."""

    __slots__ = ("_enc", "key")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 16:
            raise ShapeError(f"garbling hash: the key must be 16 bytes, got {key!r:.40}")
        self.key = key
        # ECB on purpose: a keyed permutation applied block by block, not encryption
        self._enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305

    def __call__(self, x: np.ndarray, lane0: np.ndarray, lane1: np.ndarray) -> np.ndarray:
        """``H`` of every label of ``x`` (uint64 ``(..., 2)``), tweaked by ``lane0`` / ``lane1``
        (uint64, broadcast against ``x[..., 0]``): uint64 of ``x``'s shape."""
        lo, hi = x[..., 0], x[..., 1]
        k = np.empty(x.shape, dtype=np.uint64)
        k0, k1 = k[..., 0], k[..., 1]
        np.left_shift(hi, _ONE, out=k1)
        k1 |= lo >> _S63
        np.left_shift(lo, _ONE, out=k0)
        k0 ^= (hi >> _S63) * _R
        k0 ^= lane0
        k1 ^= lane1
        buf = k.reshape(-1).view(np.uint8)
        out = np.empty(buf.size + 16, dtype=np.uint8)
        self._enc.update_into(buf, out)
        y = out[: buf.size].view(np.uint64).reshape(x.shape)
        y ^= k
        return y
