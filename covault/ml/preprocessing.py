"""Secure feature standardisation and row concatenation.

:class:`StandardScaler` computes per-column means and inverse standard deviations inside MPC:

1. ``mean = sum(x) / n`` in two truncation rounds of ``d`` values, by the power of two
   ``2^s <= n`` (exact) and by ``2^s / n`` (20 significant bits at any ``n``), then
   ``e = (x - mean) / sqrt(n)`` in one round (18 fractional bits); a constant column gets
   ``|e| <= 2^-16``, a variance far below ``VAR_EPS``.
2. ``var = sum(e^2)`` kept at 36 fractional bits (one product round, no truncation):
   ``var 2^36 < 2^62`` for every column with ``sigma < 8192`` and tiny variances keep their
   precision (relative error about ``n 2^-36 / (6 var)`` from truncating ``e``).
3. ``1/sqrt(var)`` by :func:`covault.nn.functional.inv_sqrt_wide` (valid for standard
   deviations from 2.4e-4 to 8192), kept at 24 fractional bits (1/sigma of a column of large
   values, e.g. 1/569, keeps 14 bits); columns with ``var < 2^-24`` (constant) get 1, as in
   scikit-learn (one comparison and one bit product).
The scaler stays secret; models trained on standardised data are folded back into
coefficients for the raw features (:meth:`StandardScaler.fold`), so prediction never
standardises. Population statistics (divide by ``n``), as scikit-learn's ``StandardScaler``.
Cost: 42 rounds in 2pc for up to 1,024 columns (the radix-4 carry tree of
:mod:`covault.ops.compare`; 66 beyond), 78 in rep3, once, independent of ``n``; bytes grow with
``n x d`` (three products or truncations of the data). Above ``ROW_BLOCK`` rows the data is
processed in blocks of that many rows (two rounds more per block for the fit, one for the
transform), so the temporaries stay block-sized.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from covault.errors import ProtocolError, ShapeError
from covault.nn import functional as F
from covault.ops.nonlinear import fixed
from covault.tensor import SecretTensor, concatenate

SCALE_FRAC = 24  # fractional bits of the inverse standard deviations
VAR_EPS = 2.0**-24  # columns with a smaller variance count as constant (scale 1)
DATA_BOUND = 2.0**15  # |values| of encodable data
E_FRAC = 18  # fractional bits of (x - mean) / sqrt(n); variances get twice as many
MAX_ROW_BITS = 28  # the mean's first step divides by 2^s <= n exactly only for s <= 28
ROW_BLOCK = 1 << 15  # larger tables are standardised this many rows at a time (one round each)


def concat_rows(tensors: Sequence[SecretTensor]) -> SecretTensor:
    """Stack the row blocks of several data owners (same columns) into one secret tensor."""
    if not tensors:
        raise ShapeError("concat_rows needs at least one tensor")
    tails = {t.shape[1:] for t in tensors}
    if len(tails) != 1 or any(t.ndim == 0 for t in tensors):
        raise ShapeError(
            f"concat_rows needs blocks with equal trailing shapes, got {[t.shape for t in tensors]}"
        )
    return concatenate(list(tensors), axis=0)


def concat_cols(tensors: Sequence[SecretTensor]) -> SecretTensor:
    """Join the column blocks of several data owners (the same rows, aligned by private set
    intersection: :func:`covault.protocols.psi.intersect`) into one secret (n, d) tensor."""
    if not tensors:
        raise ShapeError("concat_cols needs at least one tensor")
    if any(not isinstance(t, SecretTensor) for t in tensors):
        raise TypeError(f"concat_cols takes SecretTensors, got {[type(t).__name__ for t in tensors]}")
    blocks = [t.reshape(-1, 1) if t.ndim == 1 else t for t in tensors]
    rows = {t.shape[0] for t in blocks}
    if len(rows) != 1 or any(t.ndim != 2 for t in blocks):
        raise ShapeError(
            f"concat_cols needs 1-D or 2-D blocks with the same number of rows, got {[t.shape for t in tensors]}"
        )
    return blocks[0] if len(blocks) == 1 else concatenate(blocks, axis=1)


def mul_to(a: SecretTensor, b: SecretTensor, frac: int) -> SecretTensor:
    """Elementwise (broadcasting) fixed-point product kept at ``frac`` bits (fused truncation)."""
    full = a.frac + b.frac
    if full <= frac:
        return F.raw_mul(a, b)._rescale(frac)
    shape = np.broadcast_shapes(a.shape, b.shape)
    k = a.shares.shape[0]
    x = np.broadcast_to(F._lift(a.shares, len(shape)), (k, *shape))
    y = np.broadcast_to(F._lift(b.shares, len(shape)), (k, *shape))
    return a._new(a.proto.mul_trunc(np.ascontiguousarray(x), np.ascontiguousarray(y), full - frac), frac)


def mean_var(x: SecretTensor) -> tuple[SecretTensor, SecretTensor]:
    """Column means (session bits) and population variances (36 fractional bits) of rows ``x``."""
    if x.ndim != 2 or x.shape[0] < 1:
        raise ShapeError(f"expected a non-empty 2-D secret tensor (rows x columns), got shape {x.shape}")
    f = x.session.frac_bits
    x = F.at_frac(x, f) if x.frac != f else x
    n = x.shape[0]
    s = n.bit_length() - 1  # 2^s <= n < 2^(s + 1)
    if s > MAX_ROW_BITS:
        raise ShapeError(f"StandardScaler: {n} rows; at most 2^{MAX_ROW_BITS + 1} - 1 fit the 64-bit ring")
    # the mean in two steps, by the power of two 2^s (exact) and by 2^s / n (20 significant
    # bits): in one, 1/n on a sum of n values kept only 29 - log2(n) bits
    (down,) = F.combine([([(2.0**-s, x.sum(axis=0))], f, 2 * DATA_BOUND)])
    (mean,) = F.combine([([(2.0**s / n, down)], f, DATA_BOUND)])
    var = None
    for rows in _row_blocks(n):  # one block unless n > ROW_BLOCK: temporaries stay block-sized
        # (x - mean) / sqrt(n): |x - mean| < 2 DATA_BOUND, so 1/sqrt(n) keeps its 20 bits
        (e,) = F.combine([([(1.0 / math.sqrt(n), x[rows] - mean)], E_FRAC, 4 * DATA_BOUND / math.sqrt(n))])
        part = F.raw_mul(e, e).sum(axis=0)
        var = part if var is None else var + part
    return mean, var


def _row_blocks(n: int) -> list[slice]:
    """Row slices of at most ROW_BLOCK rows covering ``n`` rows (``[slice(None)]`` for a small
    table)."""
    if n <= ROW_BLOCK:
        return [slice(None)]
    return [slice(i, min(i + ROW_BLOCK, n)) for i in range(0, n, ROW_BLOCK)]


def inv_std(var: SecretTensor) -> SecretTensor:
    """``1/sqrt(var)`` at 24 bits from variances (36 bits); 1 for (near-)constant columns
    (``var < 2^-24``), as scikit-learn's scaler does (the root's output for those, outside its
    range, is multiplied by 0 exactly). One comparison, one inverse root."""
    inv = F.inv_sqrt_wide(var, SCALE_FRAC)
    const = fixed.lt_zero(fixed.add_const(var, -VAR_EPS))
    one = fixed.add_const(inv._new(np.zeros_like(inv.shares), SCALE_FRAC), 1.0)
    return fixed.select_raw(const, one, inv)


class StandardScaler:
    """Secret per-column standardisation ``(x - mean_) * inv_scale_``.

    Attributes after :meth:`fit`: ``mean_`` (secret, f bits), ``var_`` (secret, 36 bits),
    ``inv_scale_`` (secret ``1/sqrt(var_)``, 1 for constant columns; 24 bits). :meth:`reveal` opens the mean and
    the scale (``sqrt(var)``) to named parties.
    """

    def __init__(self) -> None:
        self.mean_: SecretTensor | None = None
        self.var_: SecretTensor | None = None
        self.inv_scale_: SecretTensor | None = None

    def fit(self, x: SecretTensor) -> StandardScaler:
        self.mean_, self.var_ = mean_var(x)
        self.inv_scale_ = inv_std(self.var_)
        return self

    def _check(self) -> None:
        if self.mean_ is None:
            raise ProtocolError("StandardScaler is not fitted; call fit() first")

    def transform(self, x: SecretTensor) -> SecretTensor:
        """``(x - mean_) * inv_scale_`` at the session's bits: one fixed-point product."""
        self._check()
        if x.ndim != 2 or x.shape[1] != self.mean_.shape[0]:
            raise ShapeError(f"scaler fitted on {self.mean_.shape[0]} columns got shape {x.shape}")
        blocks = _row_blocks(x.shape[0])
        out = None
        for rows in blocks:  # block by block into one array: no full-size temporaries
            part = mul_to(x[rows] - self.mean_, self.inv_scale_, x.session.frac_bits)
            if len(blocks) == 1:
                return part
            if out is None:
                out = part._new(
                    np.empty((part.shares.shape[0], *x.shape), part.shares.dtype), None, part.bound
                )
            out.shares[:, rows] = part.shares
        return out

    def fit_transform(self, x: SecretTensor) -> SecretTensor:
        return self.fit(x).transform(x)

    def fold(self, weight: SecretTensor, bias: SecretTensor, frac: int = SCALE_FRAC):
        """Coefficients for raw inputs of a linear map trained on standardised inputs:
        ``x_std @ W + b = x @ (s W) + (b - mean @ (s W))`` with ``s = inv_scale_``. The folded
        weights keep ``frac`` bits (a large column gets a small coefficient). Two products."""
        self._check()
        w = mul_to(self.inv_scale_.reshape(-1, 1), weight, frac)
        b = bias - self.mean_ @ w
        return w, b

    def reveal(self, to=None) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, scale)`` as plaintext at the parties ``to`` (None: every compute party)."""
        self._check()
        mean = self.mean_.reveal(to)
        var = self.var_.reveal(to)
        if mean is None:
            return None
        return mean, np.sqrt(var)
