"""Secure evaluation metrics: computed on secret labels and predictions, only the final number is
opened, and only to the named parties (``to``; None: every compute party). Each function
returns a float at the receivers and None at every other party.

- :func:`accuracy_score`: one zero test per row (``y == pred``), the count is opened; with the
  public ``n`` it is exactly the accuracy.
- :func:`roc_auc_score`: the Mann-Whitney statistic over ALL pairs, without sorting and without
  opening scores or labels. ``G_ij = [s_i > s_j]`` for every ordered pair (``n^2`` comparisons,
  in blocks of rows); with ``C = G + 1 - G^T`` (ties count one half) the statistic is
  ``y^T C (1 - y) = y^T G (1-y) - (1-y)^T G y + P N``, computed per block by one integer matmul
  ``G_block @ [1 - y, y]`` and two products. AUC ``= stat / (2 P N)`` by one secure reciprocal
  of ``2 P N / n^2`` (so the class counts ``P, N`` stay secret). Cost: ``n^2`` comparisons
  (47 bytes each in 2pc), ``8`` rounds per block of ``block`` pairs; meant for test sets of up
  to a few thousand rows. Undefined (meaningless value) when one class is absent.
- :func:`r2_score`: ``1 - sum(((y - pred) / (sigma_y sqrt(n)))^2)`` with ``1/sigma_y`` from the
  secure wide-range inverse square root; only R^2 is opened (not the variance of ``y``).
- :func:`root_mean_squared_error`: ``mean((y - pred)^2)`` at 32 fractional bits is opened and
  the root taken in plaintext (the MSE carries exactly the information of the RMSE).
"""

from __future__ import annotations

import math

import numpy as np

from covault.errors import ShapeError
from covault.ml.preprocessing import DATA_BOUND, inv_std, mean_var, mul_to
from covault.nn import functional as F
from covault.ops import compare
from covault.ops.nonlinear import fixed
from covault.ops.nonlinear.roots import reciprocal_core
from covault.tensor import SecretTensor, concatenate

AUC_BLOCK = 1 << 18  # pairs compared per call of the comparison protocol
AUC_FRAC = 30  # fractional bits of the AUC ratio


def _vectors(y_true: SecretTensor, other: SecretTensor, what: str) -> tuple[SecretTensor, SecretTensor, int]:
    for name, t in (("y_true", y_true), (what, other)):
        if not isinstance(t, SecretTensor):
            raise TypeError(f"{name} must be a SecretTensor, got {type(t).__name__}")
    n = y_true.shape[0] if y_true.ndim else 0
    ok = {(n,), (n, 1)}
    if n == 0 or y_true.shape not in ok or other.shape not in ok:
        raise ShapeError(
            f"y_true of shape {y_true.shape} and {what} of shape {other.shape} must be equal-length vectors"
        )
    return y_true.reshape(n), other.reshape(n), n


def _open(t: SecretTensor, to) -> np.ndarray | None:
    return t.reveal(to)


def accuracy_score(y_true: SecretTensor, y_pred: SecretTensor, to=None) -> float | None:
    """Fraction of rows with ``y_pred == y_true`` (class labels, any encoding)."""
    y, p, n = _vectors(y_true, y_pred, "y_pred")
    hits = compare.equal(y, p).sum()
    got = _open(hits, to)
    return None if got is None else float(got) / n


def roc_auc_score(
    y_true: SecretTensor, y_score: SecretTensor, to=None, block: int = AUC_BLOCK
) -> float | None:
    """Area under the ROC curve of scores ``y_score`` for 0/1 labels ``y_true`` (module doc)."""
    y, s, n = _vectors(y_true, y_score, "y_score")
    yi = as_integer(y)
    cols = concatenate([(1 - yi).reshape(n, 1), yi.reshape(n, 1)], axis=1)  # (n, 2) integers
    rows = max(1, block // n)
    stat = None
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        gt = compare.greater_than(s[r0:r1].reshape(r1 - r0, 1), s.reshape(1, n))  # [s_i > s_j]
        uv = F.raw_matmul(gt, cols)  # (rows, 2): G (1 - y), G y
        prod = F.raw_mul(concatenate([yi[r0:r1], (1 - yi)[r0:r1]]), concatenate([uv[:, 0], uv[:, 1]]))
        part = prod[: r1 - r0].sum() - prod[r1 - r0 :].sum()
        stat = part if stat is None else stat + part
    # AUC = 1/2 + (A - B) / (2 P N) = 1/2 + [(A - B) / n^2] / [2 (P / n) (N / n)]
    pos = yi.sum()
    w = AUC_FRAC
    num, p_n, n_n = F.combine(
        [([(1.0 / n**2, stat)], w, 1.0), ([(1.0 / n, pos)], w, 1.0), ([(1.0 / n, n - pos)], w, 1.0)]
    )
    den = F.reinterpret(mul_to(p_n, n_n, w), w - 1)  # 2 (P/n)(N/n) in [1/n, 1/2]
    inv = reciprocal_core(den, -math.ceil(math.log2(n)), 0, w, nearest=False)
    auc = fixed.add_const(fixed.mul(num, inv, s.session.frac_bits), 0.5)
    got = _open(auc, to)
    return None if got is None else float(got)


def as_integer(y: SecretTensor) -> SecretTensor:
    """Integer-valued labels as an exact integer (frac 0) tensor: free for integer input, one
    truncation for fixed-point input (exact: truncating a multiple of ``2^frac`` is exact)."""
    return y if y.frac == 0 else F.at_frac(y, 0)


def r2_score(y_true: SecretTensor, y_pred: SecretTensor, to=None) -> float | None:
    """Coefficient of determination ``1 - SS_res / SS_tot``; only the value is opened."""
    y, p, n = _vectors(y_true, y_pred, "y_pred")
    _, var = mean_var(y.reshape(n, 1))
    inv = inv_std(var)  # 1/sigma_y, 24 bits
    inv_n = F.combine([([(1.0 / math.sqrt(n), inv)], 24, 2.0**12)])[0]
    e = mul_to((y - p).reshape(n, 1), inv_n, 24)  # (y - pred) / (sigma sqrt(n)), 24 bits
    ss = F.raw_mul(e, e).sum()  # 48 bits
    got = _open(ss, to)
    return None if got is None else float(1.0 - got)


def root_mean_squared_error(y_true: SecretTensor, y_pred: SecretTensor, to=None) -> float | None:
    """``sqrt(mean((y - pred)^2))``: the mean square is computed securely and opened."""
    y, p, n = _vectors(y_true, y_pred, "y_pred")
    f = y.session.frac_bits
    e = F.combine([([(1.0 / math.sqrt(n), y - p)], f, DATA_BOUND)])[0]
    mse = F.raw_mul(e, e).sum()
    got = _open(mse, to)
    return None if got is None else float(math.sqrt(max(float(got), 0.0)))


accuracy = accuracy_score
roc_auc = roc_auc_score
r2 = r2_score
rmse = root_mean_squared_error
