"""Engine ``int64``: torch's CPU int64 matmul, which wraps modulo 2^64.

A blocked kernel: its time follows ``M K N`` with ``M`` and ``N`` rounded up to its block sizes
(16 rows and 64 columns on an AMD EPYC with AVX-512 and torch 2.13: a ``512 x 512 x 1`` product
costs as much as ``512 x 512 x 64``), plus a fixed cost of about 10 us. It uses one thread.
torch is imported at the first product this engine computes (about a second of CPU).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import numpy as np

NAME = "int64"
# candidate (row, column) block sizes; calibration keeps the pair that fits the timings best
BLOCKS = tuple((bm, bn) for bm in (1, 8, 16, 32) for bn in (1, 16, 32, 48, 64))
TYPICAL = ((1, 48), (2e-5, 0.115e-9, 0.0))  # (blocks, coefficients) before any calibration


@functools.cache
def available() -> bool:
    """Whether torch is installed (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def padded(x: int, block: int) -> int:
    """``x`` rounded up to a multiple of ``block``."""
    return -(-x // block) * block


def terms(m: int, k: int, n: int, blocks: tuple[int, int]) -> tuple[float, ...]:
    """Cost-model terms of one ``(m, k) @ (k, n)`` product: fixed, multiply-adds over padded
    blocks, outputs."""
    return (1.0, float(padded(m, blocks[0]) * k * padded(n, blocks[1])), float(m * n))


def tensor(x: np.ndarray) -> Any:
    """A torch view of ``x`` (a copy only when numpy's layout or flags do not allow a view)."""
    import torch

    return torch.from_numpy(np.require(x, np.int64, ["C", "W"]))


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` modulo 2^64 for non-empty int64 operands of two or more dimensions."""
    import torch

    return torch.matmul(tensor(a), tensor(b)).numpy()
