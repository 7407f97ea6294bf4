"""Bit matrices of OT extension: column PRGs (AES-128-CTR) and the column-to-row transpose.

IKNP works on a ``kappa x n`` bit matrix kept as ``kappa`` columns of ``n / 8`` bytes (bit
``j`` of column ``i`` is bit ``j % 8``, little-endian, of byte ``j // 8``) and needs its
``n`` rows of ``kappa / 8`` bytes. :func:`transpose` does it word-wise: the matrix is a grid of
64 x 64 bit tiles, a tile is 64 uint64 words (word ``l`` = 64 rows of column ``l``), and six
delta swaps (Warren, "Hacker's Delight", 7-3: swap the off-diagonal ``j x j`` blocks for
``j = 32, 16, ..., 1``) transpose every tile at once in numpy, a slice of columns at a time so
that the working set stays in cache; no per-bit or per-row Python loop.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from covault.errors import ShapeError

_SWAPS = tuple(
    (j, np.uint64(j), np.uint64(mask))
    for j, mask in (
        (32, 0x00000000FFFFFFFF),
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, 0x5555555555555555),
    )
)
SLICE = 1024  # 64-row groups transposed together (1 MiB for 128 columns)


def _swaps(a: np.ndarray, t: np.ndarray) -> None:
    """Transpose in place every 64 x 64 tile of ``a`` (uint64 ``(g, 64, w)``; ``t``: scratch
    ``(g, 32, w)``)."""
    g, _, w = a.shape
    for j, sh, mask in _SWAPS:
        v = a.reshape(g, 32 // j, 2, j, w)
        lo, hi = v[:, :, 0], v[:, :, 1]
        tt = t.reshape(g, 32 // j, j, w)
        np.right_shift(lo, sh, out=tt)
        np.bitwise_xor(tt, hi, out=tt)
        np.bitwise_and(tt, mask, out=tt)
        np.bitwise_xor(hi, tt, out=hi)
        np.left_shift(tt, sh, out=tt)
        np.bitwise_xor(lo, tt, out=lo)


class Buffers:
    """Scratch arrays reused from one batch to the next (a fresh large array costs a page fault
    per 4 KiB page, about as much as the work on it); an array got under a name is overwritten
    by the next :meth:`get` of that name."""

    __slots__ = ("_arrays",)

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type | str) -> np.ndarray:
        dt = np.dtype(dtype)
        size = int(np.prod(shape)) * dt.itemsize
        raw = self._arrays.get(name)
        if raw is None or raw.size < size:
            raw = self._arrays[name] = np.empty(size, dtype=np.uint8)
        return raw[:size].view(dt).reshape(shape)


def transpose(cols: np.ndarray, buffers: Buffers | None = None) -> np.ndarray:
    """Rows of the bit matrix whose columns are ``cols`` (uint8 ``(64 g, 8 w)``): uint8
    ``(64 w, 8 g)``, bit ``i`` of row ``j`` = bit ``j`` of column ``i`` (little-endian bit
    order both ways). With ``buffers``, the result lives in them (name ``"rows"``)."""
    if cols.dtype != np.uint8 or cols.ndim != 2 or cols.shape[0] % 64 or cols.shape[1] % 8:
        raise ShapeError(
            f"bit transpose: need uint8 columns of shape (64 g, 8 w), got {cols.dtype} {cols.shape}"
        )
    g, w = cols.shape[0] // 64, cols.shape[1] // 8
    words = np.ascontiguousarray(cols).view("<u8").reshape(g, 64, w)
    buf = Buffers() if buffers is None else buffers
    out = buf.get("rows", (w, 64, g), "<u8")  # out[b, k, c]: row 64 b + k, columns 64 c ...
    step = min(w, SLICE)
    scratch = buf.get("transpose-scratch", (g * 32 * step,), np.uint64)
    tile = buf.get("transpose-slice", (g * 64 * step,), np.uint64)
    for lo in range(0, w, SLICE):
        hi = min(w, lo + SLICE)
        a = tile[: g * 64 * (hi - lo)].reshape(g, 64, hi - lo)
        a[...] = words[:, :, lo:hi]
        _swaps(a, scratch[: g * 32 * (hi - lo)].reshape(g, 32, hi - lo))
        out[lo:hi] = a.transpose(2, 1, 0)
    return out.view(np.uint8).reshape(64 * w, 8 * g)


AHEAD = 1 << 14  # keystream bytes drawn ahead per stream for small requests


class ColumnPRG:
    """One AES-128-CTR stream per 16-byte seed (a row of ``seeds``); :meth:`expand` draws the
    next ``m`` bytes of every stream. Streams continue across calls, so one set of base OTs
    serves every extension. Requests below :data:`AHEAD` bytes are served from keystream drawn
    ahead (one ``update_into`` per stream per ``AHEAD`` bytes, not per request: the same bytes in
    the same order); larger ones are drawn directly."""

    __slots__ = ("_ahead", "_at", "_encs", "_zeros")

    def __init__(self, seeds: np.ndarray):
        if seeds.dtype != np.uint8 or seeds.ndim != 2 or seeds.shape[1] != 16:
            raise ShapeError(f"column PRG: seeds must be uint8 (k, 16), got {seeds.dtype} {seeds.shape}")
        self._encs = [Cipher(algorithms.AES(s.tobytes()), modes.CTR(bytes(16))).encryptor() for s in seeds]
        self._zeros = bytearray(AHEAD)
        self._ahead = np.empty((len(self._encs), AHEAD), dtype=np.uint8)
        self._at = AHEAD  # bytes of ``_ahead`` already used

    def _draw(self, out: np.ndarray) -> None:
        """The next ``out.shape[1]`` bytes of every stream into the rows of ``out``."""
        m = out.shape[1]
        if len(self._zeros) < m:
            self._zeros = bytearray(m)
        zeros = memoryview(self._zeros)[:m]
        for enc, row in zip(self._encs, out, strict=True):
            enc.update_into(zeros, row)

    def expand(self, m: int, out: np.ndarray | None = None) -> np.ndarray:
        """The next ``m`` bytes of every stream: uint8 ``(k, m)`` (into ``out`` if given)."""
        if out is None:
            out = np.empty((len(self._encs), m), dtype=np.uint8)
        elif out.dtype != np.uint8 or out.shape != (len(self._encs), m) or not out.flags.c_contiguous:
            raise ShapeError(f"column PRG: out must be C-contiguous uint8 ({len(self._encs)}, {m})")
        take = min(m, AHEAD - self._at)
        out[:, :take] = self._ahead[:, self._at : self._at + take]
        self._at += take
        rest = m - take
        if rest >= AHEAD:  # the buffer is used up: draw the rest directly (rows stay contiguous)
            self._draw(out[:, take:])
        elif rest:
            self._draw(self._ahead)
            out[:, take:] = self._ahead[:, :rest]
            self._at = rest
        return out
