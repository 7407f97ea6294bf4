"""A cryptographically secure pseudo-random generator: AES-128 in counter mode.

Keys come from ``os.urandom``; the keystream (AES-CTR over zero blocks, via the
``cryptography`` package) yields uniform ring elements. Two parties holding the same seed
draw identical streams, which is how seed-compressed dealer tuples and pairwise
pseudo-random secret sharing (PRSS) avoid sending data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 16


def new_seed() -> bytes:
    """A fresh 128-bit seed from the operating system's CSPRNG."""
    return os.urandom(SEED_BYTES)


class PRG:
    """Deterministic stream of uniform values from a 128-bit seed (AES-128-CTR)."""

    __slots__ = ("_enc", "_zeros", "drawn")

    def __init__(self, seed: bytes):
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes")
        self._enc = Cipher(algorithms.AES(bytes(seed)), modes.CTR(b"\0" * 16)).encryptor()
        self._zeros = bytearray(0)
        self.drawn = 0  # keystream bytes drawn so far (the stream's position)

    def bytes_into(self, out: np.ndarray) -> np.ndarray:
        """Fill a C-contiguous array with keystream bytes, in place, and return it."""
        n = out.nbytes
        self.drawn += n
        if len(self._zeros) < n:
            self._zeros = bytearray(max(n, 2 * len(self._zeros)))
        buf = out.reshape(-1).view(np.uint8)
        self._enc.update_into(memoryview(self._zeros)[:n], buf)
        return out

    def ring(self, shape: tuple[int, ...] | int) -> np.ndarray:
        """Uniform elements of Z_2^64 (int64) of the given shape."""
        return self.bytes_into(np.empty(shape, dtype=np.int64))

    def words(self, shape: tuple[int, ...] | int, dtype: np.dtype | type) -> np.ndarray:
        """Uniform words of an unsigned/signed integer dtype (packed random bits)."""
        return self.bytes_into(np.empty(shape, dtype=dtype))

    def many(self, specs: Sequence[tuple[tuple[int, ...] | int, Any]]) -> list[np.ndarray]:
        """``[self.words(shape, dtype) for shape, dtype in specs]`` from ONE keystream call:
        the same values (the stream is read in the same order), less overhead per array. The
        arrays are views of one buffer (an array whose offset fits its dtype) or copies."""
        dtypes = [np.dtype(d) for _, d in specs]
        sizes = [
            (int(s) if isinstance(s, int | np.integer) else math.prod(s)) * d.itemsize
            for (s, _), d in zip(specs, dtypes)
        ]
        buf = self.bytes_into(np.empty(sum(sizes), np.uint8))
        out, at = [], 0
        for (shape, _), dtype, n in zip(specs, dtypes, sizes):
            part = buf[at : at + n] if at % dtype.itemsize == 0 else buf[at : at + n].copy()
            out.append(part.view(dtype).reshape(shape))
            at += n
        return out

    def bits(self, shape: tuple[int, ...] | int) -> np.ndarray:
        """Uniform 0/1 values as int64."""
        return self.words(shape, np.uint8).astype(np.int64) & 1

    def seed(self) -> bytes:
        """Derive a fresh independent seed from this stream."""
        return self.words(SEED_BYTES, np.uint8).tobytes()


def fresh_ring(shape: tuple[int, ...] | int) -> np.ndarray:
    """Uniform ring elements from a freshly seeded PRG (for one-off masks)."""
    return PRG(new_seed()).ring(shape)


def random_permutation(prg: PRG, n: int) -> np.ndarray:
    """Argsort of ``n`` uniform 64-bit keys from ``prg`` (uniform up to collisions, below
    ``n^2 / 2^65``)."""
    return np.argsort(prg.words(n, np.uint64), kind="stable")
