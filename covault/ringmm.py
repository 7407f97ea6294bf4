"""Exact matrix products modulo 2^64.

torch's CPU int64 matmul wraps modulo 2^64 and is far faster than numpy's integer matmul.
"""

from __future__ import annotations

import numpy as np
import torch


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` modulo 2^64 for int64 arrays (numpy broadcasting rules for batches)."""
    ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.int64))
    return torch.matmul(ta, tb).numpy()
