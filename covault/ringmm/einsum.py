"""Engine ``einsum``: ``np.einsum`` on int64, which wraps modulo 2^64.

Its inner loop runs along the output columns, so it pays per ``(row, inner index)`` pair: the
best engine for matrix-vector products (``M == 1`` or ``N == 1``) and for very few rows.
"""

from __future__ import annotations

import numpy as np

NAME = "einsum"
BLOCKS = ((1, 1),)  # no padded blocks


def available() -> bool:
    """Always: numpy is a dependency."""
    return True


def terms(m: int, k: int, n: int, blocks: tuple[int, int]) -> tuple[float, ...]:
    """Cost-model terms of one ``(m, k) @ (k, n)`` product: fixed, multiply-adds, row-inner pairs."""
    return (1.0, float(m * k * n), float(m * k))


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` modulo 2^64 for non-empty int64 operands of two or more dimensions."""
    return np.einsum("...mk,...kn->...mn", a, b)
