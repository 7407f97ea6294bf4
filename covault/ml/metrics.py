"""Secure evaluation metrics: computed on secret labels and predictions, only the final number is
opened, and only to the named parties (``to``; None: every compute party), with at most one
bit saying that the metric is undefined; the ranking metrics also open a uniformly random
sorting order to the compute parties (below). Each function returns a float at the receivers
and None at every other party.

- :func:`accuracy_score`: one zero test per row (``y == pred``), the count is opened; with the
  public ``n`` it is exactly the accuracy.
- :func:`roc_auc_score` (``method="sort"``, default): the Mann-Whitney statistic from ranks,
  at any size. The rows are sorted obliviously (:mod:`covault.ml.ranking`: shuffle, then
  quicksort with opened comparisons, Hamada et al., ICISC 2012), twice in the same levels: by
  ``2 s + y`` (ties: negatives first) and by ``2 s + 1 - y`` (positives first), each after
  its own shuffle. With the ranks public and the labels secret, ``S = sum_i i y_(i)`` is a
  local public-weighted sum per order; ``2 U = S_hi + S_lo - P (P + 1)`` (ties count one half,
  as scikit-learn) and ``AUC = 2 U / (2 P N)`` by :func:`ratio` (class counts stay secret).
  Opened: the AUC and the bit "one class is absent" (then NaN with
  :class:`UndefinedMetricWarning`) to ``to``; the sorting permutations of the shuffled rows
  (uniformly random) to the compute parties and the 2pc dealer.
- :func:`roc_auc_score` (``method="pairs"``): ALL pairs, without sorting and without
  opening anything but the AUC. ``G_ij = [s_i > s_j]`` for every ordered pair (``n^2``
  comparisons, in blocks of rows); with ``C = G + 1 - G^T`` (ties count one half) the statistic is
  ``y^T C (1 - y) = y^T G (1-y) - (1-y)^T G y + P N``, computed per block by one integer matmul
  ``G_block @ [1 - y, y]`` and two products. AUC ``= stat / (2 P N)`` by one secure reciprocal
  of ``2 P N / n^2`` (so the class counts ``P, N`` stay secret). Cost: ``n^2`` comparisons
  (47 bytes each in 2pc), ``8`` rounds per block of ``block`` pairs (2pc with the dealer, a
  block of at most 1,024 pairs: 20 bytes each, 4 rounds); meant for test sets of up
  to a few thousand rows. Undefined (meaningless value) when one class is absent.
- :func:`average_precision_score`: one oblivious sort (descending scores); ``TP_i`` are local
  prefix sums of the sorted secret labels, ``TP_i / i`` a public scaling, ``sum_i y_i TP_i /
  i`` one product round, divided by ``P`` by :func:`ratio`. Exact (scikit-learn's
  ``sum (R_n - R_(n-1)) P_n``) for distinct scores; tied rows are taken in a uniformly random
  order, whereas scikit-learn gives every positive of a tie group the precision at the group's
  end: the result then lies between the values for positives-first and positives-last
  within each group. Opened: AP and the bit "no positive label" (then 0 with a warning).
- :func:`precision_score`, :func:`recall_score`, :func:`f1_score`: from secret 0/1 labels and
  0/1 predictions (:func:`predict_at_threshold`, ``LogisticRegression.predict(X,
  threshold=...)``): ``TP`` by one product round, ``P``, ``PP`` local sums, one zero test of
  the denominator and :func:`ratio`. Opened: the metric and the bit "denominator is zero"
  (then 0 with :class:`UndefinedMetricWarning`, scikit-learn's ``zero_division="warn"``).
- :func:`r2_score`: ``1 - sum(((y - pred) / (sigma_y sqrt(n)))^2)`` with ``1/sigma_y`` from the
  secure wide-range inverse square root; only R^2 is opened (not the variance of ``y``).
- :func:`root_mean_squared_error`: ``mean((y - pred)^2)`` at 32 fractional bits is opened and
  the root taken in plaintext (the MSE carries exactly the information of the RMSE).
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np

from covault.errors import CovaultWarning, ShapeError
from covault.ml import ranking
from covault.ml.preprocessing import DATA_BOUND, inv_std, mean_var, mul_to
from covault.nn import functional as F
from covault.ops import compare
from covault.ops.nonlinear import fixed, scaling
from covault.ops.nonlinear.roots import reciprocal_core
from covault.tensor import SecretTensor, concatenate

AUC_BLOCK = 1 << 18  # pairs compared per call of the comparison protocol
AUC_FRAC = 30  # fractional bits of the AUC ratio
AUC_METHODS = ("sort", "pairs")
RATIO_WORK = 30  # fractional bits of 1/m in the secure ratio
RATIO_FRAC = 40  # fractional bits at which ratios are opened


class UndefinedMetricWarning(CovaultWarning):
    """A metric's denominator is zero (scikit-learn's warning of the same name): the metric is
    set to 0 (precision, recall, F1, average precision) or NaN (ROC AUC with one class)."""


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
    y_true: SecretTensor,
    y_score: SecretTensor,
    to=None,
    block: int = AUC_BLOCK,
    method: str = "sort",
) -> float | None:
    """Area under the ROC curve of scores ``y_score`` for 0/1 labels ``y_true`` (module doc).

    ``method="sort"`` (default): oblivious sort, ``O(n log n)`` comparisons, any size; ties
    count one half exactly as in scikit-learn; NaN with :class:`UndefinedMetricWarning` when
    one class is absent (that fact is opened to ``to``). ``method="pairs"``: all ``n^2``
    pairs in blocks of ``block`` (small test sets; meaningless value when one class is
    absent)."""
    if method not in AUC_METHODS:
        raise ValueError(f"method must be one of {AUC_METHODS}, got {method!r}")
    if method == "sort":
        return _roc_auc_sorted(y_true, y_score, to)
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


# -- imbalanced classes ------------------------------------------------------------------------
def predict_at_threshold(y_score: SecretTensor, threshold: float) -> SecretTensor:
    """Secret 0/1 predictions ``[y_score >= threshold]`` (integer tensor; scikit-learn's
    ``FixedThresholdClassifier`` rule) for a public ``threshold``: one comparison."""
    if not isinstance(y_score, SecretTensor):
        raise TypeError(f"y_score must be a SecretTensor, got {type(y_score).__name__}")
    return 1 - compare.less_than(y_score, float(threshold))


def _bits(n: int) -> int:
    """``L`` with ``n < 2^L``."""
    return max(1, int(n).bit_length())


def _labels_preds(y_true: SecretTensor, y_pred: SecretTensor) -> tuple[SecretTensor, SecretTensor, int]:
    y, p, n = _vectors(y_true, y_pred, "y_pred")
    return as_integer(y), as_integer(p), n


def _counts(
    y_true: SecretTensor, y_pred: SecretTensor
) -> tuple[SecretTensor, SecretTensor, SecretTensor, int]:
    """Secret integer counts ``(TP, P, PP)``: true positives (one product round), positive
    labels, positive predictions."""
    y, p, n = _labels_preds(y_true, y_pred)
    tp = F.raw_mul(y, p).sum()
    return tp, y.sum(), p.sum(), n


def ratio(num: SecretTensor, den: SecretTensor, lo: int, hi: int) -> SecretTensor:
    """Secret ``num / den`` at ``RATIO_FRAC`` bits for ``0 <= num <= den``, ``den`` (any frac)
    in ``[2^lo, 2^hi)``; relative error about ``2^-28``.

    ``den = m 2^e`` by the exact binary scaling (:mod:`covault.ops.nonlinear.scaling`, one
    comparison per stage), ``num 2^-e`` exactly (one product), ``1/m`` by the reciprocal's
    polynomial and Newton step plus one more Newton step (the reciprocal alone is good to
    8.4e-7), then one product. A ``den`` below ``2^lo`` gives garbage, except that ``num = 0``
    still gives 0 (up to one unit of ``2^-RATIO_FRAC``)."""
    sc = scaling.split(den, lo, scaling.stages_for(lo, hi, 2), 2, [Fraction(-1)])
    q = sc.factors[0]
    w = RATIO_WORK
    top = max(0, num.frac + q.frac - 58)  # keep num 2^-e (< 4) below 2^60 ring units
    scaled = fixed.mul(fixed.as_frac(num, num.frac - top) if top else num, q)  # num 2^-e, exact
    m = fixed.as_frac(sc.m, w)
    y = reciprocal_core(m, 0, 2, w, nearest=False)
    err = fixed.add_const(-fixed.mul(m, y, w), 1.0)
    y = fixed.wrap(y, y.shares + fixed.mul(y, err, w).shares, w)
    return fixed.mul(fixed.as_frac(scaled, w), fixed.as_frac(y, 28), RATIO_FRAC)


def _zero_or_one(den: SecretTensor) -> tuple[SecretTensor, SecretTensor]:
    """``(den + [den == 0], [den == 0])`` for a secret integer count (one zero test)."""
    zero = compare.equal(den, 0)
    return den + zero, zero


def _open_ratio(value: SecretTensor, flag: SecretTensor, to, undefined: float, what: str) -> float | None:
    """Open ``value`` (``RATIO_FRAC`` bits) and the 0/1 ``flag`` together (one opening);
    ``undefined`` with :class:`UndefinedMetricWarning` where the flag is set."""
    both = fixed.wrap(
        value, np.stack([value.shares, flag.shares << np.int64(RATIO_FRAC)], axis=-1), RATIO_FRAC
    )
    got = both.reveal(to)
    if got is None:
        return None
    if got[1] >= 0.5:
        warnings.warn(f"{what}; the metric is set to {undefined}", UndefinedMetricWarning, stacklevel=3)
        return undefined
    return float(got[0])


def _count_ratio(num: SecretTensor, den: SecretTensor, hi: int, to, what: str) -> float | None:
    den, zero = _zero_or_one(den)
    return _open_ratio(ratio(num, den, 0, hi), zero, to, 0.0, what)


def precision_score(y_true: SecretTensor, y_pred: SecretTensor, to=None) -> float | None:
    """``TP / (TP + FP)`` for 0/1 labels and 0/1 predictions (secret); 0 with
    :class:`UndefinedMetricWarning` when nothing is predicted positive (scikit-learn's
    ``zero_division="warn"``). Opens the precision and the bit "no positive prediction"."""
    tp, _, pp, n = _counts(y_true, y_pred)
    return _count_ratio(tp, pp, _bits(n), to, "precision is ill-defined: no predicted positives")


def recall_score(y_true: SecretTensor, y_pred: SecretTensor, to=None) -> float | None:
    """``TP / (TP + FN)``; 0 with :class:`UndefinedMetricWarning` when no label is positive.
    Opens the recall and the bit "no positive label"."""
    tp, pos, _, n = _counts(y_true, y_pred)
    return _count_ratio(tp, pos, _bits(n), to, "recall is ill-defined: no true positives labels")


def f1_score(y_true: SecretTensor, y_pred: SecretTensor, to=None) -> float | None:
    """``2 TP / (2 TP + FP + FN) = 2 TP / (P + PP)``; 0 with :class:`UndefinedMetricWarning`
    when no label and no prediction is positive. Opens F1 and that bit."""
    tp, pos, pp, n = _counts(y_true, y_pred)
    return _count_ratio(
        tp * 2, pos + pp, _bits(2 * n), to, "F1 is ill-defined: no positive labels or predictions"
    )


def _check_scores(y_true: SecretTensor, y_score: SecretTensor) -> tuple[SecretTensor, SecretTensor, int]:
    y, s, n = _vectors(y_true, y_score, "y_score")
    return as_integer(y), s, n


def _roc_auc_sorted(y_true: SecretTensor, y_score: SecretTensor, to) -> float | None:
    """ROC AUC by oblivious sorting (module doc): ``U = sum of positive ranks - P (P+1) / 2``
    for two sorts of the same rows, ties ordered negatives-first (``key = 2 s + y``) and
    positives-first (``2 s + 1 - y``), sorted together; their mean counts ties one half."""
    y, s, n = _check_scores(y_true, y_score)
    keys = []
    for lab in (y, 1 - y):
        raw = fixed.wrap(s, (s.shares << np.int64(1)) + lab.shares, s.frac + 1)
        keys.append(_with_bound(raw, s.bound, 1.0))
    hi_cols = ranking.shuffled(keys[0], [y])
    lo_cols = ranking.shuffled(keys[1], [y])
    order = ranking.sort_order(concatenate([hi_cols[0], lo_cols[0]]), cuts=[n])
    ys = concatenate([hi_cols[1], lo_cols[1]])[order]
    ranks = np.tile(np.arange(1, n + 1, dtype=np.int64), 2)
    rank_sum = fixed.wrap(ys, ys.shares @ ranks, 0)  # S_hi + S_lo, exact
    pos = y.sum()
    sq = F.raw_mul(
        concatenate([pos.reshape(1), pos.reshape(1)]), concatenate([pos.reshape(1), (n - pos).reshape(1)])
    )
    p2, pn = sq[0], sq[1]
    two_u = rank_sum - p2 - pos  # 2 U = S_hi + S_lo - P (P + 1)
    den, absent = _zero_or_one(pn * 2)
    lo = _bits(n) - 1  # 2 P N >= 2 (n - 1) >= 2^(L-1) when both classes occur
    auc = ratio(two_u, den, lo, 2 * _bits(n))
    return _open_ratio(auc, absent, to, math.nan, "ROC AUC is not defined when only one class is present")


def average_precision_score(y_true: SecretTensor, y_score: SecretTensor, to=None) -> float | None:
    """Average precision (area under the precision-recall curve, scikit-learn's definition
    ``sum_n (R_n - R_(n-1)) P_n``) for 0/1 labels and scores, by oblivious sorting (module doc):
    with the scores in descending order, ``AP = (1/P) sum_i y_i TP_i / i``, ``TP_i`` the
    secret prefix sums of the labels. Exact for distinct scores; tied rows are taken in a
    uniformly random order (scikit-learn uses each tie group's precision at its end). 0 with
    :class:`UndefinedMetricWarning` when no label is positive (that bit is opened)."""
    y, s, n = _check_scores(y_true, y_score)
    _, ys = ranking.sort_together(s, [y])
    desc = ys[::-1]
    tp = fixed.wrap(desc, np.cumsum(desc.shares, axis=-1), 0)  # TP_i, exact
    k = 60 - _bits(n)  # TP_i 2^k / i < 2^60
    inv_i = np.round(2.0**k / np.arange(1, n + 1)).astype(np.int64)
    prec = fixed.wrap(tp, tp.shares * inv_i, k)  # TP_i / i, error < 2^-(k+1) TP_i
    total = F.raw_mul(desc, prec).sum()  # sum_i y_i TP_i / i, at most P
    den, none = _zero_or_one(y.sum())
    ap = ratio(fixed.as_frac(total, min(k, 28)), den, 0, _bits(n))
    return _open_ratio(ap, none, to, 0.0, "average precision is ill-defined: no positive labels")


def _with_bound(t: SecretTensor, bound: float | None, extra: float) -> SecretTensor:
    return t if bound is None else t.with_bound(bound + extra)


accuracy = accuracy_score
roc_auc = roc_auc_score
r2 = r2_score
rmse = root_mean_squared_error
precision = precision_score
recall = recall_score
f1 = f1_score
average_precision = average_precision_score
