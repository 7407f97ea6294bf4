"""Losses: the gradient with respect to the model output is all that training needs.

``backward(output, target)`` returns the gradient of the SUMMED batch loss (cheap, exact
formulas) and sets :attr:`Loss.scale` to the public factor of the chosen reduction (``1/B``
for ``"mean"`` over ``B`` rows, 1 for ``"sum"`` and ``"none"``); pass it on with
``model.backward(grad, scale=loss.scale)``. ``forward(output, target)`` (or calling the loss)
computes the secret loss value itself (``"none"``: one value per row), which needs logarithms
and costs far more than the gradient; training does not need it.
"""

from __future__ import annotations

from covault.errors import ShapeError
from covault.nn import functional as F
from covault.nn.layers import SIGMOIDS, softmax
from covault.ops import compare, nonlinear
from covault.tensor import SecretTensor

REDUCTIONS = ("mean", "sum", "none")


class Loss:
    """Base class: reduction handling and shape checks."""

    def __init__(self, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.scale = 1.0

    def __call__(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        return self.forward(output, target)

    def _check(self, output: SecretTensor, target: SecretTensor) -> None:
        if output.shape != target.shape:
            raise ShapeError(
                f"{type(self).__name__}: output shape {output.shape} != target shape {target.shape}"
            )
        if output.ndim == 0:
            raise ShapeError(f"{type(self).__name__} needs a batch axis")

    def _factor(self, output: SecretTensor) -> float:
        return 1.0 / output.shape[0] if self.reduction == "mean" else 1.0

    def _reduce(self, per_row: SecretTensor) -> SecretTensor:
        if self.reduction == "none":
            return per_row.reshape(per_row.shape[0])
        total = per_row.sum()
        return total * self._factor(per_row) if self.reduction == "mean" else total

    def backward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        raise NotImplementedError

    def forward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        raise NotImplementedError


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits ``z`` with 0/1 targets ``y`` (same shape).

    Gradient: ``sigmoid(z) - y`` with the ``"exact"`` sigmoid (20 / 21 rounds; 16 / 17 for at
    most 512 elements) or the ``"piecewise"`` ``clip(1/2 + z/4, 0, 1)`` (8 / 9 rounds; 4 / 5
    for at most 512 elements; the gradient then has ``f + 2`` fractional bits). Value:
    ``mean(softplus(z) - y z)``, ``softplus(z) = relu(z) + log(1 + exp(-|z|))``.
    """

    def __init__(self, sigmoid: str = "exact", reduction: str = "mean"):
        super().__init__(reduction)
        if sigmoid not in SIGMOIDS:
            raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {sigmoid!r}")
        self.sigmoid = sigmoid

    def probabilities(self, z: SecretTensor) -> SecretTensor:
        return nonlinear.sigmoid(z) if self.sigmoid == "exact" else F.sigmoid_piecewise(z)

    def backward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        self._check(output, target)
        self.scale = self._factor(output)
        return self.probabilities(output) - target

    def forward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        self._check(output, target)
        absz = compare.abs_(output)
        relu = (absz + output) * 0.5
        soft = relu + nonlinear.log(1 + nonlinear.exp(-absz))
        return self._reduce(soft - output * target)


class SoftmaxCrossEntropyLoss(Loss):
    """Cross-entropy of ``softmax(z)`` (rows of logits) against one-hot targets (same shape).

    Gradient: ``softmax(z) - onehot`` (two classes: one sigmoid of the logit difference, 20 / 21
    rounds, 16 / 17 for at most 512 rows; more: :func:`covault.ops.nonlinear.softmax`). Value:
    ``mean(logsumexp(z) - sum(onehot z))``.
    """

    def backward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        self._check(output, target)
        self.scale = self._factor(output)
        return softmax(output) - target

    def forward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        self._check(output, target)
        top = output.max(axis=-1, keepdims=True)
        lse = top + nonlinear.log(nonlinear.exp(output - top).sum(axis=-1, keepdims=True))
        return self._reduce(lse.sum(axis=-1) - (output * target).sum(axis=-1))


class MSELoss(Loss):
    """Squared error summed over the columns of a row, averaged (or summed) over rows.

    Gradient: ``2 (pred - y)`` (local). Value: one product.
    """

    def backward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        self._check(output, target)
        self.scale = self._factor(output)
        return (output - target) * 2

    def forward(self, output: SecretTensor, target: SecretTensor) -> SecretTensor:
        self._check(output, target)
        d = output - target
        per_row = (d * d).sum(axis=tuple(range(1, d.ndim))) if d.ndim > 1 else d * d
        return self._reduce(per_row)
