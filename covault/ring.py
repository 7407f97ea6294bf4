"""The ring Z_2^64.

Ring elements are stored as ``numpy.int64``: two's-complement arithmetic on int64 arrays
wraps modulo 2^64, so +, -, * and left shifts are exactly the ring operations. Matrix products
go through :func:`matmul`, which is exact modulo 2^64.
"""

from __future__ import annotations

import numpy as np

RING_BITS = 64
DTYPE = np.dtype(np.int64)
MASK63 = np.int64(0x7FFF_FFFF_FFFF_FFFF)


def wrapping():
    """Context in which int64 overflow is silent: ring arithmetic wraps modulo 2^64 by design
    (numpy warns for 0-d scalar overflow, never for arrays)."""
    return np.errstate(over="ignore")


def as_ring(x: np.ndarray) -> np.ndarray:
    """Return ``x`` as a C-contiguous int64 array (no copy when it already is one)."""
    return np.ascontiguousarray(x, dtype=DTYPE)


def from_bytes(buf: bytes | bytearray | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Interpret a byte buffer as ring elements of ``shape``."""
    return np.frombuffer(buf, dtype=DTYPE).reshape(shape)


def lshr(x: np.ndarray, k: int) -> np.ndarray:
    """Logical right shift of ring elements (as unsigned 64-bit) by ``k`` bits."""
    return (x.view(np.uint64) >> np.uint64(k)).view(np.int64)


def msb(x: np.ndarray) -> np.ndarray:
    """Most significant bit of each ring element, as int64 0/1."""
    return lshr(x, 63)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix product modulo 2^64 with numpy ``@`` semantics (2-D and batched)."""
    from covault import ringmm

    return ringmm.matmul(a, b)


def load_matmul_engine() -> None:
    """Import torch and load this machine's calibration of the matmul engines (measuring it, a
    fraction of a second, if none is cached) now rather than at the first product that needs
    them, where it would land inside whatever step multiplies first. Programs whose products
    are all matrix-vector or small (numpy's) never need it."""
    from covault import ringmm

    ringmm.prepare()


def matmul_shape(sx: tuple[int, ...], sy: tuple[int, ...]) -> tuple[int, ...]:
    """Result shape of ``x @ y`` under numpy rules; ShapeError if the shapes do not fit."""
    from covault.errors import ShapeError

    if len(sx) == 0 or len(sy) == 0:
        raise ShapeError("matmul needs operands with at least one dimension")
    xs = (1, *sx) if len(sx) == 1 else tuple(sx)
    ys = (*sy, 1) if len(sy) == 1 else tuple(sy)
    if xs[-1] != ys[-2]:
        raise ShapeError(f"matmul shape mismatch: {sx} @ {sy} (inner sizes {xs[-1]} != {ys[-2]})")
    try:
        batch = np.broadcast_shapes(xs[:-2], ys[:-2])
    except ValueError:
        raise ShapeError(f"matmul batch shapes do not broadcast: {sx} @ {sy}") from None
    out = (*batch, xs[-2], ys[-1])
    if len(sx) == 1:
        out = out[:-2] + out[-1:]
    if len(sy) == 1:
        out = out[:-1]
    return out
