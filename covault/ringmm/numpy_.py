"""Engine ``numpy``: numpy's int64 ``matmul``, which wraps modulo 2^64.

No call overhead and no threads: the best engine for tiny products and for skinny ones (a few
output columns), where the torch engines pay for a fixed cost and padded blocks.
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"
BLOCKS = ((1, 1),)  # no padded blocks
TYPICAL = ((1, 1), (5e-6, 0.45e-9, 0.0))  # (blocks, coefficients) before any calibration


def available() -> bool:
    """Always: numpy is a dependency."""
    return True


def terms(m: int, k: int, n: int, blocks: tuple[int, int]) -> tuple[float, ...]:
    """Cost-model terms of one ``(m, k) @ (k, n)`` product: fixed, multiply-adds, outputs."""
    return (1.0, float(m * k * n), float(m * n))


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` modulo 2^64 for non-empty int64 operands of two or more dimensions."""
    return np.matmul(a, b)
