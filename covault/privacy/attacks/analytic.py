"""Analytic inversion of a linear layer with bias (Phong et al. 2017; Geiping et al. 2020).

For ``z = W x + b`` and one input ``x``, ``dL/dW_i = (dL/dz_i) x`` and ``dL/db_i = dL/dz_i``,
so every row ``i`` with ``dL/db_i != 0`` gives ``x = (dL/dW_i) / (dL/db_i)`` exactly. For a
sum of updates (a batch, or clients' updates added by secure aggregation) row ``i`` gives the
average of the inputs that activate unit ``i``, weighted by their ``dL/dz_i``: one input
exactly when only it reaches that unit, a blend otherwise.
"""

from __future__ import annotations

import numpy as np


def invert_linear(grad_w: np.ndarray, grad_b: np.ndarray, *, tol: float = 1e-12) -> np.ndarray:
    """One candidate input per row of ``grad_w`` (``(out, in)``) whose ``|dL/db_i| > tol``,
    ordered by ``|dL/db_i|`` (largest first); shape ``(rows, in)``."""
    w, b = np.asarray(grad_w, dtype=np.float64), np.asarray(grad_b, dtype=np.float64).reshape(-1)
    if w.ndim != 2 or w.shape[0] != b.shape[0]:
        raise ValueError(
            f"analytic inversion: the weight gradient {w.shape} needs one bias gradient per row, got {b.shape}"
        )
    with np.errstate(all="ignore"):
        rows = [i for i in np.argsort(-np.abs(b), kind="stable") if np.abs(b[i]) > tol]
        return w[rows] / b[rows, None]


def reconstruct(grad_w: np.ndarray, grad_b: np.ndarray, *, tol: float = 1e-12) -> np.ndarray:
    """The attacker's one guess, chosen without the original: the row with the largest
    ``|dL/db_i|``; ValueError when no row passes ``tol`` (the update carries no input)."""
    rows = invert_linear(grad_w, grad_b, tol=tol)
    if not len(rows):
        raise ValueError(f"analytic inversion: no bias gradient above {tol:g}: nothing to invert")
    return rows[0]
