"""Bit matrices of OT extension: column PRGs (AES-128-CTR) and the column-to-row transpose.

IKNP works on a ``kappa x n`` bit matrix kept as ``kappa`` columns of ``n / 8`` bytes (bit
``j`` of column ``i`` is bit ``j % 8``, little-endian, of byte ``j // 8``) and needs its
``n`` rows of ``kappa / 8`` bytes. :func:`transpose` does it word-wise: every 8 x 8 bit tile
(8 columns, 8 rows) is gathered into one uint64 and transposed by three delta swaps (Warren,
"Hacker's Delight", 7-3), all tiles at once in numpy; no per-bit or per-row Python loop.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from covault.errors import ShapeError

_SWAPS = (
    (7, np.uint64(0x00AA00AA00AA00AA)),
    (14, np.uint64(0x0000CCCC0000CCCC)),
    (28, np.uint64(0x00000000F0F0F0F0)),
)


def transpose(cols: np.ndarray) -> np.ndarray:
    """Rows of the bit matrix whose columns are ``cols`` (uint8 ``(8 w, m)``): uint8 ``(8 m, w)``,
    bit ``i`` of row ``j`` = bit ``j`` of column ``i`` (little-endian bit order both ways)."""
    if cols.dtype != np.uint8 or cols.ndim != 2 or cols.shape[0] % 8:
        raise ShapeError(
            f"bit transpose: need uint8 columns of shape (8 w, m), got {cols.dtype} {cols.shape}"
        )
    w, m = cols.shape[0] // 8, cols.shape[1]
    # tile (g, b): byte l = column 8 g + l at byte b, i.e. bit 8 l + k = (column 8 g + l, row 8 b + k)
    x = np.ascontiguousarray(cols.reshape(w, 8, m).transpose(0, 2, 1)).view("<u8").reshape(w, m)
    t = np.empty_like(x)
    for shift, mask in _SWAPS:
        sh = np.uint64(shift)
        np.right_shift(x, sh, out=t)
        np.bitwise_xor(t, x, out=t)
        np.bitwise_and(t, mask, out=t)
        np.bitwise_xor(x, t, out=x)
        np.left_shift(t, sh, out=t)
        np.bitwise_xor(x, t, out=x)
    # now bit 8 k + l = (column 8 g + l, row 8 b + k): byte k of tile (g, b) is row 8 b + k's byte g
    return np.ascontiguousarray(x.view(np.uint8).reshape(w, m, 8).transpose(1, 2, 0)).reshape(8 * m, w)


class ColumnPRG:
    """One AES-128-CTR stream per 16-byte seed (a row of ``seeds``); :meth:`expand` draws the
    next ``m`` bytes of every stream, one ``update_into`` per stream. Streams continue across
    calls, so one set of base OTs serves every extension."""

    __slots__ = ("_encs", "_zeros")

    def __init__(self, seeds: np.ndarray):
        if seeds.dtype != np.uint8 or seeds.ndim != 2 or seeds.shape[1] != 16:
            raise ShapeError(f"column PRG: seeds must be uint8 (k, 16), got {seeds.dtype} {seeds.shape}")
        self._encs = [Cipher(algorithms.AES(s.tobytes()), modes.CTR(bytes(16))).encryptor() for s in seeds]
        self._zeros = bytearray(0)

    def expand(self, m: int) -> np.ndarray:
        """The next ``m`` bytes of every stream: uint8 ``(k, m)``."""
        out = np.empty((len(self._encs), m), dtype=np.uint8)
        if len(self._zeros) < m:
            self._zeros = bytearray(m)
        zeros = memoryview(self._zeros)[:m]
        for enc, row in zip(self._encs, out, strict=True):
            enc.update_into(zeros, row)
        return out
