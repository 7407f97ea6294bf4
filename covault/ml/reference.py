"""Plaintext float64 twins of the secure estimators.

:class:`ReferenceLogisticRegression`, :class:`ReferenceLinearRegression` and
:class:`ReferenceMLPClassifier` run exactly the algorithm of :class:`~covault.ml.
LogisticRegression`, :class:`~covault.ml.LinearRegression` and :class:`~covault.ml.
MLPClassifier` in float64 numpy (the same standardisation, initialisation: zeros or Glorot
from the public seed, public epoch orders, batches, sigmoid approximation and update formulas)
for accuracy comparisons, with the same hyper-parameters. They are also the type of the public
copies that ``reveal()`` returns. ``fit(X, y, perm=None)``: ``perm`` replays an initial row
permutation (as the oblivious shuffle would have applied). Inputs are checked as the secure
estimators' are: 2-D ``X`` (ShapeError), finite values (EncodingError, as ``session.input``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Self

import numpy as np

from covault.errors import EncodingError, ShapeError
from covault.ml import batching
from covault.ml.base import check_fitted, is_classifier
from covault.ml.params import LinearParams, LogisticParams, MLPParams

UNFITTED_HINT = " (or use the copy that reveal() returns)"


def _sigmoid(z: np.ndarray, kind: str) -> np.ndarray:
    if kind == "piecewise":
        return np.clip(0.5 + z / 4.0, 0.0, 1.0)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logit_threshold(threshold: float) -> float:
    """``log(t / (1 - t))``: the decision-function value at which the probability of class 1
    reaches ``t``; ValueError unless ``0 < t < 1``."""
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold!r}")
    return math.log(t / (1.0 - t))


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plaintext twin of :class:`~covault.ml.preprocessing.StandardScaler`: column means and
    ``1/sqrt(var)`` (1 where ``var < 2^-24``)."""
    mean, var = x.mean(axis=0), x.var(axis=0)
    return mean, np.where(var < 2.0**-24, 1.0, 1.0 / np.sqrt(np.maximum(var, 2.0**-24)))


def _finite(est: object, what: str, a: np.ndarray) -> np.ndarray:
    """``a``; EncodingError naming ``est`` and the first NaN or infinite value."""
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise EncodingError(f"{type(est).__name__}: {what} has a NaN or infinite value at index {where}")
    return a


def _fit_input(est: object, x, y) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (n, d) and ``y`` (n,) as finite float64 arrays (ShapeError, EncodingError)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or len(y) != len(x):
        raise ShapeError(f"X of shape {x.shape} and y of shape {y.shape} do not match")
    return _finite(est, "X", x), _finite(est, "y", y)


def _predict_input(est: object, x, n_features: int) -> np.ndarray:
    """``x`` as a finite float64 (n, n_features) array (ShapeError, EncodingError)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ShapeError(f"model fitted on {n_features} features got X of shape {x.shape}")
    return _finite(est, "X", x)


def _score_labels(x: np.ndarray, y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(x):
        raise ShapeError(f"y of shape {y.shape} does not match X of shape {np.shape(x)}")
    return y


# -- linear models ---------------------------------------------------------------------------------
def _reference_sgd(params: LinearParams, xs, ys, grad_fn, alpha, perm) -> list[tuple[np.ndarray, float]]:
    """Mini-batch SGD on ``w`` (d,) and ``b`` exactly as the secure estimators run it; ``(w, b)``
    after every epoch."""
    n, d = xs.shape
    if perm is not None:
        xs, ys = xs[perm], ys[perm]
    w, b = np.zeros(d), 0.0
    uw, ub = np.zeros(d), 0.0
    mu = float(params.momentum)
    path = []
    for epoch in range(params.epochs):
        lr = params._epoch_lr(epoch)
        order = batching.epoch_order(n, epoch, int(params.seed)) if params.shuffle != "none" else np.arange(n)
        xe, ye = xs[order], ys[order]
        for sl in batching.batch_slices(n, params.batch_size):
            xb, yb = xe[sl], ye[sl]
            g = grad_fn(xb @ w + b, yb)
            scale = 1.0 / len(yb)
            uw = mu * uw + lr * (scale * (xb.T @ g) + alpha * w)
            ub = mu * ub + lr * scale * g.sum()
            w, b = w - uw, b - ub
        path.append((w.copy(), float(b)))
    return path


class _ReferenceLinear:
    """Plaintext fitting and prediction with ``coef_`` (features,) and ``intercept_`` (float);
    ``coef_path_``: ``(coef, intercept)`` after every epoch (the last is the model)."""

    coef_: np.ndarray
    intercept_: float

    def _fit_reference(self, x, y, grad_fn: Callable, perm, scale_target: bool) -> Self:
        x, y = _fit_input(self, x, y)
        mean, inv = standardise(x) if self.standardize else (np.zeros(x.shape[1]), np.ones(x.shape[1]))
        ymean, ystd = 0.0, 1.0
        if scale_target and self.standardize:
            ymean = y.mean()
            _, yinv = standardise(y[:, None])
            ystd = float(y.var() * yinv[0])  # as the secure fold: var / sqrt(var)
        xs = (x - mean) * inv
        ys = (y - ymean) / ystd
        path = _reference_sgd(self, xs, ys, grad_fn, self._penalty(len(y)), perm)
        self.coef_path_ = [(inv * w * ystd, float(ymean + ystd * (b - mean @ (inv * w)))) for w, b in path]
        self.coef_, self.intercept_ = self.coef_path_[-1]
        self.n_features_in_ = x.shape[1]
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """``x @ coef_ + intercept_``."""
        check_fitted(self, "coef_", UNFITTED_HINT)
        return _predict_input(self, x, len(self.coef_)) @ self.coef_ + self.intercept_

    def predict(self, x: np.ndarray) -> np.ndarray:
        """0/1 labels (int64) for a classifier, predictions (float64) for a regression."""
        z = self.decision_function(x)
        return (z > 0).astype(np.int64) if is_classifier(self) else z

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy (classifier) or R^2 (regression)."""
        pred = self.predict(x)
        y = _score_labels(pred, y)
        if is_classifier(self):
            return float(np.mean(pred == y))
        return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


class ReferenceLogisticRegression(LogisticParams, _ReferenceLinear):
    """Plaintext float64 twin of :class:`~covault.ml.LogisticRegression` (same algorithm, same
    parameters and defaults)."""

    def fit(self, x: np.ndarray, y: np.ndarray, perm: np.ndarray | None = None) -> Self:
        """Train on ``x`` (n, d) and 0/1 labels ``y`` (n,); with ``class_weight`` each row's
        gradient is multiplied by its class's weight."""
        labels = np.asarray(y, dtype=np.float64).reshape(-1)
        weights = self._class_weights(len(labels), float(np.sum(labels == 1)))
        if weights is None:
            return self._fit_reference(x, y, lambda z, t: _sigmoid(z, self.sigmoid) - t, perm, False)
        w0, w1 = weights
        grad = lambda z, t: (_sigmoid(z, self.sigmoid) - t) * np.where(t == 1, w1, w0)  # noqa: E731
        return self._fit_reference(x, y, grad, perm, False)

    def predict(self, x: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """0/1 labels (int64): ``z > 0``, or with a ``threshold`` in (0, 1) ``p >= threshold``
        for the probability ``p`` of class 1 (as ``z >= logit(threshold)``)."""
        z = self.decision_function(x)
        if threshold is None:
            return (z > 0).astype(np.int64)
        return (z >= logit_threshold(threshold)).astype(np.int64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``[1 - p, p]`` rows with the exact sigmoid."""
        p = _sigmoid(self.decision_function(x), "exact")
        return np.stack([1 - p, p], axis=1)


class ReferenceLinearRegression(LinearParams, _ReferenceLinear):
    """Plaintext float64 twin of :class:`~covault.ml.LinearRegression` (same algorithm and
    parameters; the default ``learning_rate`` is 0.1, the secure estimator's 0.05)."""

    def fit(self, x: np.ndarray, y: np.ndarray, perm: np.ndarray | None = None) -> Self:
        """Train on ``x`` (n, d) and targets ``y`` (n,)."""
        return self._fit_reference(x, y, lambda z, t: 2.0 * (z - t), perm, True)


# -- MLP -------------------------------------------------------------------------------------------
class ReferenceMLPClassifier(MLPParams):
    """Plaintext float64 twin of :class:`~covault.ml.MLPClassifier`; ``coefs_`` and
    ``intercepts_`` in scikit-learn's layout (first layer for raw features)."""

    coefs_: list[np.ndarray]
    intercepts_: list[np.ndarray]

    def fit(self, x: np.ndarray, y: np.ndarray, perm: np.ndarray | None = None) -> Self:
        """Train on ``x`` (n, d) and integer labels ``y`` (n,) in ``0 .. n_classes - 1``."""
        x, y = _fit_input(self, x, y)
        y = y.astype(np.int64)
        n, d = x.shape
        mean, inv = np.zeros(d), np.ones(d)
        if self.standardize:
            mean, inv = standardise(x)
        xs = (x - mean) * inv
        onehot = (y[:, None] == np.arange(int(self.n_classes))).astype(np.float64)
        if perm is not None:
            xs, onehot = xs[perm], onehot[perm]
        ws = self._init_weights(d)
        bs = [np.zeros(w.shape[1]) for w in ws]
        opt = _PlainOptimizer(self, ws + bs, decay=[True] * len(ws) + [False] * len(bs))
        for epoch in range(self.epochs):
            order = batching.epoch_order(n, epoch, int(self.seed)) if self.shuffle != "none" else np.arange(n)
            xe, te = xs[order], onehot[order]
            for sl in batching.batch_slices(n, self.batch_size):
                acts = [xe[sl]]
                for i, (w, b) in enumerate(zip(ws, bs)):
                    z = acts[-1] @ w + b
                    acts.append(np.maximum(z, 0) if i < len(ws) - 1 else z)
                g = _softmax(acts[-1]) - te[sl]
                gws, gbs = [None] * len(ws), [None] * len(ws)
                for i in range(len(ws) - 1, -1, -1):
                    gws[i], gbs[i] = acts[i].T @ g, g.sum(axis=0)
                    if i:
                        g = (g @ ws[i].T) * (acts[i] > 0)
                opt.step(gws + gbs, 1.0 / len(g))
        ws[0], bs[0] = inv[:, None] * ws[0], bs[0] - mean @ (inv[:, None] * ws[0])
        self.coefs_, self.intercepts_ = ws, bs
        self.n_features_in_ = d
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Logits (n, n_classes)."""
        check_fitted(self, "coefs_", UNFITTED_HINT)
        h = _predict_input(self, x, self.coefs_[0].shape[0])
        for i, (w, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            h = h @ w + b
            if i < len(self.coefs_) - 1:
                h = np.maximum(h, 0)
        return h

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the logits)."""
        return _softmax(self.decision_function(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Integer labels (int64): the argmax of the logits."""
        return self.decision_function(x).argmax(axis=1)

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy."""
        pred = self.predict(x)
        return float(np.mean(pred == _score_labels(pred, y)))


class _PlainOptimizer:
    """The update formulas of :class:`covault.optim.SGD` / :class:`covault.optim.Adam` in float64."""

    def __init__(self, p: MLPParams, params: list[np.ndarray], decay: list[bool]):
        self.optimizer, self.lr, self.momentum = p.optimizer, float(p.learning_rate), float(p.momentum)
        self.alpha, self.betas, self.eps = float(p.alpha), tuple(p.betas), float(p.eps)
        self.params, self.decay = params, decay
        self.state = [np.zeros_like(w) for w in params]
        self.v = [np.zeros_like(w) for w in params]
        self.t = 0

    def step(self, grads: list[np.ndarray], scale: float) -> None:
        self.t += 1
        t, (b1, b2) = self.t, self.betas
        c1, c2 = (1 - b1) / (1 - b1**t), (1 - b2) / (1 - b2**t)
        a1, a2 = b1 * (1 - b1 ** (t - 1)) / (1 - b1**t), b2 * (1 - b2 ** (t - 1)) / (1 - b2**t)
        for i, (w, g) in enumerate(zip(self.params, grads)):
            gm = scale * g + (self.alpha * w if self.decay[i] else 0.0)
            if self.optimizer == "sgd":
                self.state[i] = self.momentum * self.state[i] + self.lr * gm
                w -= self.state[i]
            else:
                self.state[i] = a1 * self.state[i] + c1 * gm
                self.v[i] = a2 * self.v[i] + c2 * gm * gm
                w -= self.lr * self.state[i] / np.sqrt(self.v[i] + self.eps**2)
