"""Linear models on secret-shared data: LogisticRegression and LinearRegression (ridge).

Training (both): optional secure standardisation (:class:`~covault.ml.preprocessing.
StandardScaler`; the target too for regression), an oblivious shuffle of the rows
(:mod:`covault.protocols.shuffle`), then mini-batch SGD over public epoch orders
(:mod:`covault.ml.batching`). One batch of logistic regression with the piecewise sigmoid:

1. ``z = X_b w + b`` (fixed-point matmul: 2 rounds);
2. ``p = clip(1/2 + z/4, 0, 1)`` (one comparison on ``2B`` elements whose bits select in its
   conversion round: 8 rounds in 2pc; 9 in rep3, run by P1 and P2 in the dealt two-party view
   while P0 only deals) or the exact sigmoid (20 / 21 rounds);
3. ``grad_w = X_b^T (p - y)`` untruncated, ``grad_b = sum(p - y)`` (local);
4. SGD step, with ``lr / B``, the L2 penalty and momentum folded into ONE truncation that also
   takes the gradient product (2pc: 1 round for the product, 1 for the truncation; rep3: the
   product costs no round of its own).
In all 12 rounds per batch in 2pc, 13 in rep3 for P1 and P2 (2 for P0) (measured figures:
``docs/ml.md``).

The model stays secret: ``coef_``/``intercept_`` exist only after :meth:`reveal` (at the
receivers, as plaintext for raw features), which also returns a public copy usable for
plaintext prediction. The ``Reference*`` classes run exactly the same algorithm in float64
numpy (same standardisation, zero initialisation, public epoch orders, batches, sigmoid
approximation and update formulas) for accuracy comparisons; they are also the type of the
public copies.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from covault.errors import ProtocolError, ShapeError, TrainingDivergedWarning
from covault.ml import batching
from covault.ml.preprocessing import StandardScaler, concat_cols, mul_to
from covault.nn import BCEWithLogitsLoss, Linear, MSELoss
from covault.nn import functional as F
from covault.nn.layers import SIGMOIDS
from covault.optim import SGD
from covault.protocols import compare, nonlinear
from covault.protocols.shuffle import shuffle_together
from covault.tensor import SecretTensor, concatenate, stack

SHUFFLES = ("once", "epoch", "none")
PENALTIES = ("l2", None)
MAX_LEARNING_RATE = 10.0  # a larger step overflows the fixed-point update bound (SGD 16, Adam 64)
DIVERGENCE_FACTOR = 2.0  # last loss above this multiple of the trivial model's: diverged
NEGATIVE_LOSS = -0.05  # a mean loss below this is impossible: fixed-point values wrapped around


def check_learning_rate(learning_rate: float) -> None:
    """ValueError unless ``0 < learning_rate <= MAX_LEARNING_RATE``."""
    if not learning_rate <= MAX_LEARNING_RATE:
        raise ValueError(
            f"learning_rate must be at most {MAX_LEARNING_RATE:g} (with standardised features a "
            f"larger step overflows the fixed-point weight update; usual values are 0.001 to 1), "
            f"got {learning_rate!r}"
        )


class _LinearParams:
    """Hyper-parameters shared by the secure estimators and their plaintext references."""

    def __init__(
        self,
        *,
        alpha: float = 0.0,
        epochs: int = 10,
        learning_rate: float = 0.1,
        batch_size: int = 128,
        momentum: float = 0.0,
        standardize: bool = True,
        shuffle: str = "once",
        seed: int = 0,
    ):
        batching.check_hyper(epochs, batch_size, learning_rate)
        check_learning_rate(learning_rate)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        if shuffle not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {SHUFFLES}, got {shuffle!r}")
        self.alpha, self.epochs, self.learning_rate = float(alpha), int(epochs), float(learning_rate)
        self.batch_size, self.momentum, self.standardize = int(batch_size), float(momentum), bool(standardize)
        self.shuffle, self.seed = shuffle, int(seed)

    def _penalty(self, n: int) -> float:
        return self.alpha

    def _trivial_loss(self) -> float | None:
        """Training loss of the zero model (the mean): 1 on the standardised target; unknown
        (None) without standardisation."""
        return 1.0 if self.standardize else None


class _LogisticParams(_LinearParams):
    def __init__(self, *, penalty: str | None = "l2", C: float = 1.0, sigmoid: str = "piecewise", **kw):
        super().__init__(**kw)
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
        if sigmoid not in SIGMOIDS:
            raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {sigmoid!r}")
        if C is not None and not C > 0:
            raise ValueError(f"C must be positive, got {C!r}")
        self.penalty, self.C, self.sigmoid = penalty, C, sigmoid

    def _penalty(self, n: int) -> float:
        """L2 strength on the mean loss: ``alpha`` if given, else ``1 / (C n)`` (scikit-learn's
        objective ``C sum(loss) + |w|^2 / 2`` divided by ``C n``)."""
        if self.penalty is None:
            return 0.0
        return self.alpha if self.alpha else 1.0 / (self.C * n)

    def _trivial_loss(self) -> float | None:
        """Cross-entropy of the zero model (probability 1/2 everywhere): ln 2."""
        return math.log(2.0)


# -- plaintext -----------------------------------------------------------------------------------
def _sigmoid(z: np.ndarray, kind: str) -> np.ndarray:
    if kind == "piecewise":
        return np.clip(0.5 + z / 4.0, 0.0, 1.0)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class _PublicLinear:
    """Plaintext prediction with ``coef_`` (features,) and ``intercept_`` (float)."""

    coef_: np.ndarray
    intercept_: float
    _classifier = True

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        if getattr(self, "coef_", None) is None:
            raise ProtocolError("model has no plaintext coefficients (fit a reference or reveal())")
        return np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self.decision_function(x)
        return (z > 0).astype(np.int64) if self._classifier else z

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = _sigmoid(self.decision_function(x), "exact")
        return np.stack([1 - p, p], axis=1)

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if self._classifier:
            return float(np.mean(self.predict(x) == y))
        pred = self.predict(x)
        return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plaintext twin of :class:`~covault.ml.preprocessing.StandardScaler`: column means and
    ``1/sqrt(var)`` (1 where ``var < 2^-24``)."""
    mean, var = x.mean(axis=0), x.var(axis=0)
    return mean, np.where(var < 2.0**-24, 1.0, 1.0 / np.sqrt(np.maximum(var, 2.0**-24)))


def _reference_sgd(params: _LinearParams, xs, ys, grad_fn, alpha, perm):
    """Mini-batch SGD on ``w`` (d,) and ``b`` exactly as the secure estimators run it."""
    n, d = xs.shape
    if perm is not None:
        xs, ys = xs[perm], ys[perm]
    w, b = np.zeros(d), 0.0
    uw, ub = np.zeros(d), 0.0
    lr, mu = params.learning_rate, params.momentum
    for epoch in range(params.epochs):
        order = batching.epoch_order(n, epoch, params.seed) if params.shuffle != "none" else np.arange(n)
        xe, ye = xs[order], ys[order]
        for sl in batching.batch_slices(n, params.batch_size):
            xb, yb = xe[sl], ye[sl]
            g = grad_fn(xb @ w + b, yb)
            scale = 1.0 / len(yb)
            uw = mu * uw + lr * (scale * (xb.T @ g) + alpha * w)
            ub = mu * ub + lr * scale * g.sum()
            w, b = w - uw, b - ub
    return w, b


class _ReferenceLinear(_PublicLinear):
    def _fit_reference(self, x, y, grad_fn, perm, scale_target):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.ndim != 2 or len(y) != len(x):
            raise ShapeError(f"X of shape {x.shape} and y of shape {y.shape} do not match")
        mean, inv = standardise(x) if self.standardize else (np.zeros(x.shape[1]), np.ones(x.shape[1]))
        ymean, ystd = 0.0, 1.0
        if scale_target and self.standardize:
            ymean = y.mean()
            _, yinv = standardise(y[:, None])
            ystd = float(y.var() * yinv[0])  # as the secure fold: var / sqrt(var)
        xs = (x - mean) * inv
        ys = (y - ymean) / ystd
        w, b = _reference_sgd(self, xs, ys, grad_fn, self._penalty(len(y)), perm)
        self.coef_ = inv * w * ystd
        self.intercept_ = float(ymean + ystd * (b - mean @ (inv * w)))
        return self


class ReferenceLogisticRegression(_LogisticParams, _ReferenceLinear):
    """Plaintext float64 twin of :class:`LogisticRegression` (same algorithm, same defaults).
    ``fit(X, y, perm=None)``: ``perm`` replays an initial row permutation (as the oblivious
    shuffle would have applied)."""

    def fit(self, x: np.ndarray, y: np.ndarray, perm: np.ndarray | None = None):
        return self._fit_reference(x, y, lambda z, t: _sigmoid(z, self.sigmoid) - t, perm, False)


class ReferenceLinearRegression(_LinearParams, _ReferenceLinear):
    """Plaintext float64 twin of :class:`LinearRegression`."""

    _classifier = False

    def fit(self, x: np.ndarray, y: np.ndarray, perm: np.ndarray | None = None):
        return self._fit_reference(x, y, lambda z, t: 2.0 * (z - t), perm, True)


# -- secure --------------------------------------------------------------------------------------
def _check_xy(x, y: SecretTensor | None = None) -> SecretTensor:
    """``x`` as one (n, d) SecretTensor: a list of column blocks (vertically partitioned data,
    one block per owner) is concatenated in order (:func:`covault.ml.concat_cols`)."""
    if isinstance(x, list | tuple):
        x = concat_cols(x)
    if not isinstance(x, SecretTensor):
        raise TypeError(
            f"X must be a SecretTensor or a list of column blocks (use session.input / ml.concat_rows "
            f"/ ml.concat_cols), got {type(x).__name__}"
        )
    if x.ndim != 2:
        raise ShapeError(f"X must be 2-D (rows x features), got shape {x.shape}")
    if y is not None:
        if not isinstance(y, SecretTensor):
            raise TypeError(f"y must be a SecretTensor, got {type(y).__name__}")
        if y.shape not in ((x.shape[0],), (x.shape[0], 1)):
            raise ShapeError(f"y of shape {y.shape} does not match X of shape {x.shape}")
    return x


def fitted_input(est, fitted: bool, x) -> SecretTensor:
    """``x`` checked as the input of the fitted estimator ``est`` (ProtocolError if not fitted)."""
    if not fitted:
        raise ProtocolError(f"{type(est).__name__} is not fitted; call fit() first")
    x = _check_xy(x)
    if x.shape[1] != est.n_features_in_:
        raise ShapeError(f"model fitted on {est.n_features_in_} features got X of shape {x.shape}")
    return x


class _SecureLinear:
    """Fitting and secure prediction shared by the secure linear estimators."""

    _classifier = True
    _reference: type

    def _init_state(self) -> None:
        self.coef_: np.ndarray | None = None
        self.intercept_: float | None = None
        self.secret_coef_: SecretTensor | None = None  # folded, raw features, 24 bits
        self.secret_intercept_: SecretTensor | None = None
        self.scaler_: StandardScaler | None = None
        self.n_features_in_: int | None = None
        self.loss_curve_: SecretTensor | None = None

    def _loss(self):
        raise NotImplementedError

    def fit(
        self,
        x: SecretTensor,
        y: SecretTensor,
        *,
        track_loss: bool = False,
        on_epoch: Callable[[int], None] | None = None,
    ):
        """Train on secret rows ``x`` (n, d) and targets ``y`` (n,) or (n, 1).

        ``track_loss``: keep the secret mean training loss after every epoch in ``loss_curve_``
        (shape ``(epochs,)``; None otherwise): the model's outputs on every training row are
        computed after each epoch (one matmul), the loss values (standardised units, no penalty
        term) in one batched call at the end. ``on_epoch(k)`` is called after epoch ``k``
        (1-based; progress reporting).
        """
        x = _check_xy(x, y)
        n, d = x.shape
        session = x.session
        f = session.frac_bits
        y = y.reshape(n, 1)
        if y.frac > f:
            y = F.at_frac(y, f)
        self.n_features_in_ = d
        self.scaler_ = None
        ymean = yinv = None
        if self.standardize:
            if not self._classifier:
                both = StandardScaler().fit(_hstack(x, y))
                self.scaler_ = _sub_scaler(both, slice(0, d))
                ymean, yinv = both.mean_[d:], both.inv_scale_[d:]
                var_y = both.var_[d:]
                y = mul_to(y - ymean, yinv, f)
            else:
                self.scaler_ = StandardScaler().fit(x)
            x = self.scaler_.transform(x)
        if self.shuffle == "once":
            x, y = shuffle_together([x, y])
        model = Linear(d, 1, weight=np.zeros((d, 1)), bias_value=np.zeros(1))
        loss = self._loss()
        opt = SGD(
            model.parameters(), lr=self.learning_rate, momentum=self.momentum, weight_decay=self._penalty(n)
        )
        self.loss_curve_ = train_epochs(self, model, loss, opt, x, y, track_loss, on_epoch)
        model.eval()
        w, b = model.weight.value, model.bias.value
        if self.scaler_ is not None:
            w, b = self.scaler_.fold(w, b)
        else:
            w = F.at_frac(w, 24)
        if ymean is not None:
            sigma_y = mul_to(F.at_frac(var_y, f), yinv, f)  # var * var^-1/2
            w = mul_to(w, sigma_y, 24)
            b = ymean + b * sigma_y
        self.secret_coef_, self.secret_intercept_ = w.reshape(d), b.reshape(())
        self.coef_ = self.intercept_ = None
        return self

    def _check_fitted(self, x) -> SecretTensor:
        return fitted_input(self, self.secret_coef_ is not None, x)

    def decision_function(self, x: SecretTensor) -> SecretTensor:
        """Secret ``x @ coef + intercept`` (one fixed-point matmul, 2 rounds)."""
        x = self._check_fitted(x)
        return x @ self.secret_coef_ + self.secret_intercept_

    def reveal(self, to=None):
        """Open the coefficients (for raw features) to ``to`` (None: every compute party).

        At the receivers sets ``coef_`` and ``intercept_`` (numpy) and returns a plaintext
        copy (the ``Reference*`` type) for plaintext prediction; None elsewhere.
        """
        if self.secret_coef_ is None:
            raise ProtocolError(f"{type(self).__name__} is not fitted; call fit() first")
        coef = self.secret_coef_.reveal(to)
        icpt = self.secret_intercept_.reveal(to)
        if coef is None:
            return None
        self.coef_, self.intercept_ = coef, float(icpt)
        public = self._reference(**self.get_params())
        public.coef_, public.intercept_ = coef, float(icpt)
        return public


def train_epochs(est, model, loss, opt, x, y, track_loss, on_epoch) -> SecretTensor | None:
    """Mini-batch training of ``model`` for ``est.epochs`` epochs (``est.shuffle``: reshuffle
    obliviously every epoch, or visit the rows in a public per-epoch order, or not at all);
    the secret per-epoch losses with ``track_loss``, else None."""
    n = x.shape[0]
    outputs = []
    for epoch in range(est.epochs):
        if est.shuffle == "epoch":
            x, y = shuffle_together([x, y])
        if est.shuffle != "none":
            order = batching.epoch_order(n, epoch, est.seed)
            xe, ye = x[order], y[order]
        else:
            xe, ye = x, y
        for sl in batching.batch_slices(n, est.batch_size):
            grad = loss.backward(model(xe[sl]), ye[sl])
            model.backward(grad, scale=loss.scale, input_grad=False)
            opt.step()
            opt.zero_grad()
        if track_loss:
            outputs.append(eval_outputs(model, x, y))
        if on_epoch is not None:
            on_epoch(epoch + 1)
    return epoch_losses(loss, outputs) if track_loss else None


def loss_divergence(est: Any, curve: ArrayLike) -> str | None:
    """Why the revealed per-epoch training losses ``curve`` of ``est`` show that training
    diverged, or None.

    Diverged: a loss is not finite or below ``NEGATIVE_LOSS`` (a mean of non-negative losses:
    the fixed-point values wrapped around), or the last epoch's loss exceeds
    ``DIVERGENCE_FACTOR`` times the trivial model's (ln 2 for logistic regression, 1 for
    linear regression on the standardised target, ln(n_classes) for the MLP; the first
    epoch's loss where that is unknown)."""
    values = np.asarray(curve, dtype=np.float64).reshape(-1)
    if not values.size:
        return None
    hint = f"; lower learning_rate (now {est.learning_rate:g})"
    for epoch, v in enumerate(values, 1):
        if not math.isfinite(v):
            return f"training diverged: the loss after epoch {epoch} is {v}{hint}"
        if v < NEGATIVE_LOSS:
            return (
                f"training diverged: the loss after epoch {epoch} is {v:.4g}, below 0 "
                f"(the fixed-point values overflowed){hint}"
            )
    ref, what = est._trivial_loss(), "the trivial model's loss"
    if ref is None:
        ref, what = values[0], "the loss after epoch 1"
    if values[-1] > DIVERGENCE_FACTOR * ref:
        return (
            f"training diverged: the loss after epoch {len(values)} is {values[-1]:.4g}, more than "
            f"{DIVERGENCE_FACTOR:g} times {what} ({ref:.4g}){hint}"
        )
    return None


def check_loss_curve(est: Any, curve: ArrayLike) -> str | None:
    """Warn :class:`~covault.errors.TrainingDivergedWarning` if the revealed per-epoch losses
    ``curve`` of ``est`` (``est.loss_curve_.reveal(...)``) show that training diverged
    (:func:`loss_divergence`); the warning's message, or None."""
    reason = loss_divergence(est, curve)
    if reason is not None:
        warnings.warn(reason, TrainingDivergedWarning, stacklevel=2)
    return reason


def eval_outputs(model, x: SecretTensor, target: SecretTensor) -> tuple[SecretTensor, SecretTensor]:
    """``(model(x), target)`` in evaluation mode (no caches kept); training mode is restored."""
    model.eval()
    try:
        return model(x), target
    finally:
        model.train()


def epoch_losses(loss, outputs: list[tuple[SecretTensor, SecretTensor]]) -> SecretTensor:
    """Secret mean ``loss`` of each ``(output, target)`` pair, shape ``(len(outputs),)``: one
    batched ``forward`` over every pair (the loss's rounds once, not once per epoch)."""
    per_row = copy.copy(loss)
    per_row.reduction = "none"
    out = concatenate([o for o, _ in outputs])
    tgt = concatenate([t for _, t in outputs])
    return per_row.forward(out, tgt).reshape(len(outputs), -1).mean(axis=1)


def _hstack(x: SecretTensor, y: SecretTensor) -> SecretTensor:
    return concatenate([x, y], axis=1)


def _sub_scaler(sc: StandardScaler, cols: slice) -> StandardScaler:
    out = StandardScaler()
    out.mean_, out.var_, out.inv_scale_ = sc.mean_[cols], sc.var_[cols], sc.inv_scale_[cols]
    return out


class LogisticRegression(_LogisticParams, _SecureLinear):
    """Binary logistic regression trained by mini-batch SGD on secret data.

    Parameters (scikit-learn names where they exist): ``penalty`` ("l2" or None), ``C``
    (inverse strength; L2 weight ``1/(C n)`` on the mean loss) or ``alpha`` (that weight
    directly), ``epochs``, ``learning_rate``, ``batch_size``, ``momentum``, ``standardize``,
    ``sigmoid`` ("piecewise": ``clip(1/2 + z/4, 0, 1)``, 8 rounds; "exact": 20 rounds),
    ``shuffle`` ("once": one oblivious shuffle before training, "epoch": one per epoch,
    "none"), ``seed`` (public: epoch orders). Labels are 0/1.
    """

    _reference = ReferenceLogisticRegression

    def __init__(self, **kw):
        super().__init__(**kw)
        self._init_state()

    def get_params(self) -> dict:
        return dict(
            penalty=self.penalty, C=self.C, alpha=self.alpha, epochs=self.epochs, learning_rate=self.learning_rate,
            batch_size=self.batch_size, momentum=self.momentum, standardize=self.standardize,
            sigmoid=self.sigmoid, shuffle=self.shuffle, seed=self.seed,
        )  # fmt: skip

    def _loss(self):
        return BCEWithLogitsLoss(sigmoid=self.sigmoid)

    def predict_proba(self, x: SecretTensor) -> SecretTensor:
        """Secret ``[1 - p, p]`` rows with the exact sigmoid (2 + 20 rounds in 2pc)."""
        p = nonlinear.sigmoid(self.decision_function(x))
        return stack([1 - p, p], axis=1)

    def predict(self, x: SecretTensor) -> SecretTensor:
        """Secret 0/1 labels (integer tensor): ``[z > 0]``, one comparison."""
        return compare.greater_than(self.decision_function(x), 0)

    def score(self, x: SecretTensor, y: SecretTensor, to=None) -> float | None:
        """Accuracy revealed to ``to`` (None: every compute party); None elsewhere."""
        from covault.ml.metrics import accuracy_score

        return accuracy_score(y, self.predict(x), to=to)


class LinearRegression(_LinearParams, _SecureLinear):
    """Least squares (``alpha > 0``: ridge) trained by mini-batch SGD on secret data.

    The target is standardised with the features (unless ``standardize=False``); the model is
    folded back to raw units. ``alpha`` is the L2 weight on the mean squared error of the
    standardised problem: ``mean((y_std - X_std w - b)^2) + alpha |w|^2 / 2``.
    """

    _classifier = False
    _reference = ReferenceLinearRegression

    def __init__(self, **kw):
        kw.setdefault("learning_rate", 0.05)
        super().__init__(**kw)
        self._init_state()

    def get_params(self) -> dict:
        return dict(
            alpha=self.alpha, epochs=self.epochs, learning_rate=self.learning_rate, batch_size=self.batch_size,
            momentum=self.momentum, standardize=self.standardize, shuffle=self.shuffle, seed=self.seed,
        )  # fmt: skip

    def _loss(self):
        return MSELoss()

    def predict(self, x: SecretTensor) -> SecretTensor:
        """Secret predictions ``x @ coef + intercept``."""
        return self.decision_function(x)

    def score(self, x: SecretTensor, y: SecretTensor, to=None) -> float | None:
        """Coefficient of determination R^2 revealed to ``to``; None elsewhere."""
        from covault.ml.metrics import r2_score

        return r2_score(y, self.predict(x), to=to)
