"""Linear models on secret-shared data: LogisticRegression and LinearRegression (ridge).

Training (both): optional secure standardisation (:class:`~covault.ml.preprocessing.
StandardScaler`; the target too for regression), an oblivious shuffle of the rows
(:mod:`covault.ops.shuffle`), then mini-batch SGD over public epoch orders
(:mod:`covault.ml.batching`). One batch of logistic regression with the piecewise sigmoid:

1. ``z = X_b w + b`` (fixed-point matmul: 2 rounds);
2. ``p = clip(1/2 + z/4, 0, 1)`` (one comparison on ``2B`` elements whose bits select in its
   conversion round: 4 rounds in 2pc; 5 in rep3, run by P1 and P2 in the dealt two-party view
   while P0 only deals) or the exact sigmoid (16 / 17 rounds), for ``B <= 512`` (the radix-4
   carry tree of :mod:`covault.ops.compare`); 8 / 9 and 20 / 21 for larger batches;
3. ``grad_w = X_b^T (p - y)`` untruncated, ``grad_b = sum(p - y)`` (local);
4. SGD step, with ``lr / B``, the L2 penalty and momentum folded into ONE truncation that also
   takes the gradient product (2pc: 1 round for the product, 1 for the truncation; rep3: the
   product costs no round of its own).
In all 8 rounds per batch in 2pc, 9 in rep3 for P1 and P2 (2 for P0), for ``B <= 512``
(measured figures: ``docs/ml.md``).

The model stays secret: ``coef_``/``intercept_`` exist only after :meth:`reveal` (at the
receivers, as plaintext for raw features), which also returns a public copy usable for
plaintext prediction: a plaintext twin of :mod:`covault.ml.reference`, which runs exactly the
same algorithm in float64 numpy. Hyper-parameters: :mod:`covault.ml.params`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import ArrayLike

from covault.errors import ShapeError, TrainingDivergedWarning
from covault.ml import batching
from covault.ml.base import check_fitted, is_classifier
from covault.ml.metrics import as_integer, predict_at_threshold
from covault.ml.params import LinearParams, LogisticParams
from covault.ml.preprocessing import ROW_BLOCK, StandardScaler, concat_cols, mul_to
from covault.ml.reference import ReferenceLinearRegression, ReferenceLogisticRegression, logit_threshold
from covault.nn import BCEWithLogitsLoss, Linear, MSELoss
from covault.nn import functional as F
from covault.nn.losses import Loss
from covault.ops import compare, nonlinear
from covault.ops.nonlinear.roots import reciprocal_core
from covault.ops.shuffle import shuffle_together
from covault.optim import SGD
from covault.tensor import SecretTensor, concatenate, stack

if TYPE_CHECKING:
    from covault.privacy.dpsgd import DPSGD

DIVERGENCE_FACTOR = 2.0  # last loss above this multiple of the trivial model's: diverged
NEGATIVE_LOSS = -0.05  # a mean loss below this is impossible: fixed-point values wrapped around
LOSS_ELEMS = 1 << 18  # per-epoch losses are evaluated on about this many outputs at a time


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


def fitted_input(est, attribute: str, x) -> SecretTensor:
    """``x`` checked as the input of the fitted estimator ``est`` (NotFittedError, a
    ProtocolError, without the fitted ``attribute``)."""
    check_fitted(est, attribute)
    x = _check_xy(x)
    if x.shape[1] != est.n_features_in_:
        raise ShapeError(f"model fitted on {est.n_features_in_} features got X of shape {x.shape}")
    return x


class _SecureLinear:
    """Fitting and secure prediction shared by the secure linear estimators. Fitted:
    ``secret_coef_`` (folded for raw features, 24 fractional bits), ``secret_intercept_``,
    ``scaler_`` (None without standardisation), ``n_features_in_``, ``loss_curve_``;
    ``coef_``/``intercept_`` after :meth:`reveal`, at the receivers."""

    _reference: type

    def _loss(self):
        raise NotImplementedError

    def fit(
        self,
        x: SecretTensor,
        y: SecretTensor,
        *,
        track_loss: bool = False,
        on_epoch: Callable[[int], None] | None = None,
        overwrite: bool = False,
        privacy: DPSGD | None = None,
    ) -> Self:
        """Train on secret rows ``x`` (n, d) and targets ``y`` (n,) or (n, 1); returns the estimator.

        Tables of more than ``ROW_BLOCK`` rows are not standardised as a whole: each chunk of
        about ``ROW_BLOCK`` rows is standardised as training visits it (the same product per
        value as a whole-table transform, two rounds more per chunk and epoch), so training
        holds no standardised copy of the data. ``overwrite``: ``x`` and ``y`` may be
        overwritten (the oblivious shuffle permutes their shares in place) instead of copied;
        for a caller that holds no other use for them.

        ``track_loss``: keep the secret mean training loss after every epoch in ``loss_curve_``
        (shape ``(epochs,)``; None otherwise): the model's outputs on every training row are
        computed after each epoch (one matmul), the loss values (standardised units, no penalty
        term) in one batched call at the end. ``on_epoch(k)`` is called after epoch ``k``
        (1-based; progress reporting). ``privacy``: train by DP-SGD inside MPC instead
        (:mod:`covault.ml.dp`; no loss curve; ``privacy_`` reports the epsilon spent).
        """
        x = _check_xy(x, y)
        n, d = x.shape
        if privacy is not None:
            from covault.ml.dp import fit_private

            if track_loss:
                raise ValueError(
                    f"{type(self).__name__}.fit: track_loss with privacy would release the training "
                    f"loss outside the privacy accounting"
                )
            self.n_features_in_ = d
            fit_private(self, x, y.reshape(n, 1), privacy, overwrite, on_epoch)
            for stale in ("coef_", "intercept_"):
                self.__dict__.pop(stale, None)
            return self
        session = x.session
        f = session.frac_bits
        y = y.reshape(n, 1)
        if y.frac > f:
            y = F.at_frac(y, f)
        self.n_features_in_ = d
        self.scaler_ = None
        ymean = yinv = None
        owned = {"x": overwrite, "y": overwrite}  # may the shuffle overwrite them in place
        chunked = None  # the scaler applied chunk by chunk while training (large tables)
        if self.standardize:
            if not is_classifier(self):
                both = StandardScaler().fit(_hstack(x, y))
                self.scaler_ = _sub_scaler(both, slice(0, d))
                ymean, yinv = both.mean_[d:], both.inv_scale_[d:]
                var_y = both.var_[d:]
                y = mul_to(y - ymean, yinv, f)
                owned["y"] = True
            else:
                self.scaler_ = StandardScaler().fit(x)
            if n > ROW_BLOCK:
                chunked = self.scaler_
            else:
                x = self.scaler_.transform(x)
                owned["x"] = True
        weights = self._row_weights(y)
        if weights is not None:  # targets carry each row's class weight: [y, w]
            y = concatenate([y, weights], axis=1)
            owned["y"] = True
        if self.shuffle != "none":  # shuffled in place: a copy of what the caller still uses
            x = x if owned["x"] else x._same(x.shares.copy())
            y = y if owned["y"] else y._same(y.shares.copy())
        if self.shuffle == "once":
            x, y = shuffle_together([x, y], in_place=True)
        model = Linear(d, 1, weight=np.zeros((d, 1)), bias_value=np.zeros(1))
        loss = self._loss()
        opt = SGD(
            model.parameters(),
            lr=float(self.learning_rate),
            momentum=float(self.momentum),
            weight_decay=self._penalty(n),
        )
        self.loss_curve_ = train_epochs(
            self, model, loss, opt, x, y, track_loss, on_epoch, chunked, owned=True
        )
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
        for stale in ("coef_", "intercept_"):  # a model revealed before: not this one
            self.__dict__.pop(stale, None)
        return self

    def _row_weights(self, y: SecretTensor) -> SecretTensor | None:
        """Secret per-row weights ``(n, 1)`` of the training loss, or None (unweighted)."""
        return None

    def _check_fitted(self, x) -> SecretTensor:
        return fitted_input(self, "secret_coef_", x)

    def decision_function(self, x: SecretTensor) -> SecretTensor:
        """Secret ``x @ coef + intercept`` (one fixed-point matmul, 2 rounds)."""
        x = self._check_fitted(x)
        return x @ self.secret_coef_ + self.secret_intercept_

    def reveal(self, to=None):
        """Open the coefficients (for raw features) to ``to`` (None: every compute party).

        At the receivers sets ``coef_`` and ``intercept_`` (numpy) and returns a plaintext
        copy (the ``Reference*`` type) for plaintext prediction; None elsewhere.
        """
        check_fitted(self, "secret_coef_")
        coef = self.secret_coef_.reveal(to)
        icpt = self.secret_intercept_.reveal(to)
        if coef is None:
            return None
        self.coef_, self.intercept_ = coef, float(icpt)
        public = self._reference(**self.get_params())
        public.coef_, public.intercept_, public.n_features_in_ = coef, float(icpt), self.n_features_in_
        return public


def train_epochs(
    est,
    model,
    loss,
    opt,
    x,
    y,
    track_loss,
    on_epoch,
    scaler: StandardScaler | None = None,
    owned: bool = False,
) -> SecretTensor | None:
    """Mini-batch training of ``model`` for ``est.epochs`` epochs (``est.shuffle``: reshuffle
    obliviously every epoch, or visit the rows in a public per-epoch order, or not at all; the
    optimizer's learning rate is set each epoch to ``est._epoch_lr(epoch)``, public); the
    secret per-epoch losses with ``track_loss``, else None. ``scaler``: ``x`` is raw,
    standardised one chunk of batches (about ``ROW_BLOCK`` rows) at a time as it is visited.
    ``owned``: ``x`` and ``y`` are the caller's to overwrite (every reshuffle runs in place;
    otherwise the first one copies)."""
    n = x.shape[0]
    outputs = []
    batches = batching.batch_slices(n, est.batch_size)
    per = max(1, len(batches) if scaler is None else ROW_BLOCK // est.batch_size)
    for epoch in range(est.epochs):
        opt.lr = est._epoch_lr(epoch)  # public: the schedule depends on the epoch alone
        if est.shuffle == "epoch":
            x, y = shuffle_together([x, y], in_place=owned or epoch > 0)
        order = batching.epoch_order(n, epoch, int(est.seed)) if est.shuffle != "none" else None
        for c in range(0, len(batches), per):
            group = batches[c : c + per]
            if scaler is None:
                xc, yc, base = x, y, 0
            else:  # one chunk of batches gathered and standardised, then cut into batches
                span = slice(group[0].start, group[-1].stop)
                rows = span if order is None else order[span]
                xc, yc, base = scaler.transform(x[rows]), y[rows], span.start
            for sl in group:
                local = slice(sl.start - base, sl.stop - base)
                rows = local if order is None or scaler is not None else order[sl]
                grad = loss.backward(model(xc[rows]), yc[rows])  # one batch gathered at a time
                model.backward(grad, scale=loss.scale, input_grad=False)
                opt.step()
                opt.zero_grad()
        if track_loss:
            outputs.append(eval_outputs(model, x, y, scaler))
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


def eval_outputs(
    model, x: SecretTensor, target: SecretTensor, scaler: StandardScaler | None = None
) -> tuple[SecretTensor, SecretTensor]:
    """``(model(x), target)`` in evaluation mode (no caches kept); training mode is restored.
    ``scaler``: ``x`` is raw and standardised ``ROW_BLOCK`` rows at a time."""
    model.eval()
    try:
        if scaler is None:
            return model(x), target
        n = x.shape[0]
        parts = [model(scaler.transform(x[i : i + ROW_BLOCK])) for i in range(0, n, ROW_BLOCK)]
        return concatenate(parts), target
    finally:
        model.train()


def epoch_losses(loss, outputs: list[tuple[SecretTensor, SecretTensor]]) -> SecretTensor:
    """Secret mean ``loss`` of each ``(output, target)`` pair, shape ``(len(outputs),)``: one
    batched ``forward`` over every pair (the loss's rounds once, not once per epoch) for each
    block of rows, about ``LOSS_ELEMS`` outputs in all, so that the non-linear loss's
    temporaries stay block-sized (the per-row losses are summed exactly, then divided by the
    number of rows once)."""
    per_row = copy.copy(loss)
    per_row.reduction = "none"
    n, epochs = outputs[0][0].shape[0], len(outputs)
    width = max(1, int(np.prod(outputs[0][0].shape[1:], dtype=np.int64)))
    step = max(1, LOSS_ELEMS // (epochs * width))
    total = None
    for r in range(0, n, step):
        out = concatenate([o[r : r + step] for o, _ in outputs])
        tgt = concatenate([t[r : r + step] for _, t in outputs])
        part = per_row.forward(out, tgt).reshape(epochs, -1).sum(axis=1)
        total = part if total is None else total + part
    return total / n


def _hstack(x: SecretTensor, y: SecretTensor) -> SecretTensor:
    return concatenate([x, y], axis=1)


def _sub_scaler(sc: StandardScaler, cols: slice) -> StandardScaler:
    out = StandardScaler()
    out.mean_, out.var_, out.inv_scale_ = sc.mean_[cols], sc.var_[cols], sc.inv_scale_[cols]
    return out


class WeightedLoss(Loss):
    """``base`` with per-row weights carried as the target's second column (``[y, w]``): the
    gradient and the value of row ``i`` are multiplied by ``w_i`` (scikit-learn's
    ``class_weight``). The gradient costs one product more (one round and its truncation)."""

    def __init__(self, base: Loss, reduction: str = "mean"):
        super().__init__(reduction)
        self.base = base

    def backward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        self.base.reduction = self.reduction
        grad = self.base.backward(output, target[:, :1])
        self.scale = self.base.scale
        return grad * target[:, 1:]

    def forward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        per_row = copy.copy(self.base)
        per_row.reduction = "none"
        values = per_row.forward(output, target[:, :1])
        return self._reduce(values * target[:, 1].reshape(values.shape))


def class_weights(y: SecretTensor, class_weight) -> SecretTensor | None:
    """Secret per-row weights ``w_0 + y (w_1 - w_0)`` of 0/1 labels ``y`` (n, 1) at the
    session's fractional bits, or None for ``class_weight=None``.

    ``"balanced"``: ``w_c = n / (2 n_c)`` with the class counts kept secret: ``P / 2^L`` and
    ``N / 2^L`` (exact, ``n < 2^L``) go through one secure reciprocal (8.4e-7 relative error),
    one public scaling and one product with the labels (no truncation): 28 rounds in 2pc (the
    radix-4 carry tree of :mod:`covault.ops.compare`; 40 with the binary one), 47 in rep3.
    Meaningless when a class is absent (nothing is opened to check it). A dict: public
    weights, one product round."""
    if class_weight is None:
        return None
    n = y.shape[0]
    f = y.session.frac_bits
    yi = as_integer(y)
    if class_weight == "balanced":
        bits = max(1, n.bit_length())
        pos = yi.sum()
        counts = F.reinterpret(stack([n - pos, pos]), bits)  # (N, P) / 2^L in [2^-L, 1)
        inv = reciprocal_core(counts, -bits, 0, f, nearest=False)  # 2^L / n_c
        w = F.combine([([(n / 2.0 ** (bits + 1), inv)], f, n / 2.0)])[0]  # n / (2 n_c)
        w0, w1 = w[0], w[1]
        return (w0 + F.raw_mul(yi, (w1 - w0).reshape(1, 1))).with_bound(n / 2.0)
    w0, w1 = float(class_weight.get(0, 1.0)), float(class_weight.get(1, 1.0))
    step = F.combine([([(w1 - w0, yi)], f, abs(w1 - w0) + 1.0)])[0]
    return (step + w0).with_bound(max(w0, w1) + 1.0)


class LogisticRegression(LogisticParams, _SecureLinear):
    """Binary logistic regression trained by mini-batch SGD on secret data.

    Parameters (scikit-learn names where they exist): ``penalty`` ("l2" or None), ``C``
    (inverse strength; L2 weight ``1/(C n)`` on the mean loss) or ``alpha`` (that weight
    directly), ``epochs``, ``learning_rate``, ``batch_size``, ``momentum``, ``standardize``,
    ``sigmoid`` ("piecewise": ``clip(1/2 + z/4, 0, 1)``, 4 rounds in 2pc up to 512 rows per
    batch, else 8; "exact": 16, else 20),
    ``shuffle`` ("once": one oblivious shuffle before training, "epoch": one per epoch,
    "none"), ``lr_schedule`` ("constant"; "linear": epoch ``e`` of ``E`` steps with
    ``learning_rate * (1 - e / E)``), ``seed`` (public: epoch orders), ``class_weight`` (None, "balanced": ``n / (2
    n_c)`` computed securely, :func:`class_weights`; or a dict ``{0: w_0, 1: w_1}``: each
    row's gradient is multiplied by its class's weight). Labels are 0/1.
    """

    _reference = ReferenceLogisticRegression

    def _loss(self):
        base = BCEWithLogitsLoss(sigmoid=self.sigmoid)
        return base if self.class_weight is None else WeightedLoss(base)

    def _row_weights(self, y: SecretTensor) -> SecretTensor | None:
        return class_weights(y, self.class_weight)

    def predict_proba(self, x: SecretTensor) -> SecretTensor:
        """Secret ``[1 - p, p]`` rows with the exact sigmoid (2 + 20 rounds in 2pc; 2 + 16 for at
        most 512 rows)."""
        p = nonlinear.sigmoid(self.decision_function(x))
        return stack([1 - p, p], axis=1)

    def predict(self, x: SecretTensor, threshold: float | None = None) -> SecretTensor:
        """Secret 0/1 labels (integer tensor): ``[z > 0]``; with a public ``threshold`` in
        (0, 1): ``[p >= threshold]`` for the probability ``p`` of class 1 (scikit-learn's
        ``FixedThresholdClassifier`` rule), computed as ``[z >= logit(threshold)]`` (no
        sigmoid; the logit is rounded to the fixed-point grid). One comparison either way."""
        z = self.decision_function(x)
        if threshold is None:
            return compare.greater_than(z, 0)
        return predict_at_threshold(z, logit_threshold(threshold))

    def score(self, x: SecretTensor, y: SecretTensor, to=None) -> float | None:
        """Accuracy revealed to ``to`` (None: every compute party); None elsewhere."""
        from covault.ml.metrics import accuracy_score

        return accuracy_score(y, self.predict(x), to=to)


class LinearRegression(LinearParams, _SecureLinear):
    """Least squares (``alpha > 0``: ridge) trained by mini-batch SGD on secret data.

    The target is standardised with the features (unless ``standardize=False``); the model is
    folded back to raw units. ``alpha`` is the L2 weight on the mean squared error of the
    standardised problem: ``mean((y_std - X_std w - b)^2) + alpha |w|^2 / 2``.
    """

    _reference = ReferenceLinearRegression

    def _loss(self):
        return MSELoss()

    def predict(self, x: SecretTensor) -> SecretTensor:
        """Secret predictions ``x @ coef + intercept``."""
        return self.decision_function(x)

    def score(self, x: SecretTensor, y: SecretTensor, to=None) -> float | None:
        """Coefficient of determination R^2 revealed to ``to``; None elsewhere."""
        from covault.ml.metrics import r2_score

        return r2_score(y, self.predict(x), to=to)
