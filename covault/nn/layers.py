"""Layers: Linear, ReLU, Sigmoid, Softmax.

Costs are per call on a batch of ``B`` rows (rounds for 2pc / rep3; see ``docs/ml.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from covault.errors import ProtocolError, ShapeError
from covault.nn import functional as F
from covault.nn.module import Module, Parameter
from covault.ops import compare, nonlinear
from covault.randomness.public import public_uniform
from covault.tensor import SecretTensor, stack

SIGMOIDS = ("exact", "piecewise")


def glorot_uniform(fan_in: int, fan_out: int, seed: int, label: str = "linear") -> np.ndarray:
    """Public Glorot-uniform weights ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``, shape
    ``(fan_in, fan_out)``, from the public ``seed`` (AES-CTR, reproducible in plaintext)."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return public_uniform(seed, f"{label}/{fan_in}x{fan_out}", (fan_in, fan_out), -bound, bound)


class Linear(Module):
    """``y = x @ W + b`` with ``W`` of shape ``(in_features, out_features)`` (scikit-learn's
    ``coefs_`` layout, so the forward pass needs no transpose).

    ``weight``/``bias`` may be given (secret tensors or public arrays); otherwise ``W`` is
    Glorot-uniform from the public ``seed`` and ``b = 0``. Public parameters are used as such
    in evaluation (a public-by-secret product costs one truncation) and become secret when
    trained.
    Cost: forward one fixed-point matmul (2 rounds in both protocols); backward: the weight
    gradient ``x^T g`` untruncated (1 round), ``sum(g)`` (local), and, unless it is the first
    layer, ``g W^T`` (2 rounds).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        seed: int = 0,
        weight: SecretTensor | np.ndarray | None = None,
        bias_value: SecretTensor | np.ndarray | None = None,
    ):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ShapeError(f"Linear needs positive sizes, got {in_features} x {out_features}")
        self.in_features, self.out_features = in_features, out_features
        if weight is None:
            weight = glorot_uniform(in_features, out_features, seed)
        if tuple(weight.shape) != (in_features, out_features):
            raise ShapeError(f"weight of shape {tuple(weight.shape)}, expected {(in_features, out_features)}")
        self.weight = Parameter(weight, "weight")
        self.bias = None
        if bias:
            if bias_value is None:
                bias_value = np.zeros(out_features)
            if tuple(bias_value.shape) != (out_features,):
                raise ShapeError(f"bias of shape {tuple(bias_value.shape)}, expected {(out_features,)}")
            self.bias = Parameter(bias_value, "bias", decay=False)
        self._x: SecretTensor | None = None

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias is not None})"

    def forward(self, x: SecretTensor) -> SecretTensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"Linear({self.in_features}, {self.out_features}) got input of shape {x.shape}")
        if self.training:
            self.weight.secret(x.session)
            if self.bias is not None:
                self.bias.secret(x.session)
            self._x = x
        y = x @ self.weight.value
        if self.bias is not None:
            y = y + self.bias.value
        return y

    def backward(self, grad: SecretTensor, *, scale: float = 1.0, input_grad: bool = True) -> Any:
        if self._x is None:
            raise ProtocolError("Linear.backward needs a forward pass in training mode first")
        x = self._x
        self.weight.accumulate(F.Product(x.T, grad), scale)  # computed inside the optimizer's truncation
        if self.bias is not None:
            self.bias.accumulate(grad.sum(axis=0), scale)
        self._x = None
        if not input_grad:
            return None
        return grad @ self.weight.value.T

    def clear_cache(self) -> None:
        self._x = None


class ReLU(Module):
    """``max(x, 0)``: one comparison whose 0/1 mask is injected into ``x`` in its conversion
    round (:func:`covault.ops.compare.relu`, no truncation); the mask is kept for
    backward (one more product). Rounds: forward 8 (2pc; 4 for at most 1,024 elements, the
    radix-4 carry tree) / 9 (rep3), backward 1."""

    def __init__(self) -> None:
        super().__init__()
        self._mask: SecretTensor | None = None

    def forward(self, x: SecretTensor) -> SecretTensor:
        out, mask = compare.relu(x, with_mask=True)
        if self.training:
            self._mask = mask
        return out

    def backward(self, grad: SecretTensor, *, scale: float = 1.0, input_grad: bool = True) -> Any:
        if self._mask is None:
            raise ProtocolError("ReLU.backward needs a forward pass in training mode first")
        mask, self._mask = self._mask, None
        return grad * mask if input_grad else None

    def clear_cache(self) -> None:
        self._mask = None


class Sigmoid(Module):
    """Logistic sigmoid, ``"exact"`` (:func:`covault.ops.nonlinear.sigmoid`, error
    2e-4, 20/21 rounds; 16/17 for at most 512 elements) or ``"piecewise"``
    (:func:`covault.nn.functional.sigmoid_piecewise`, ``clip(1/2 + x/4, 0, 1)``, 8/9 rounds;
    4/5 for at most 512 elements). Backward: ``g s (1 - s)`` (two products) for
    the exact one, ``g [|x| < 2] / 4`` (one product by the kept bit) for the piecewise one."""

    def __init__(self, kind: str = "exact"):
        super().__init__()
        if kind not in SIGMOIDS:
            raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {kind!r}")
        self.kind = kind
        self._keep: SecretTensor | None = None

    def forward(self, x: SecretTensor) -> SecretTensor:
        if self.kind == "exact":
            s = nonlinear.sigmoid(x)
            keep = s
        else:
            s, keep = F.sigmoid_piecewise(x, with_mask=True)
        if self.training:
            self._keep = keep
        return s

    def backward(self, grad: SecretTensor, *, scale: float = 1.0, input_grad: bool = True) -> Any:
        if self._keep is None:
            raise ProtocolError("Sigmoid.backward needs a forward pass in training mode first")
        keep, self._keep = self._keep, None
        if not input_grad:
            return None
        if self.kind == "exact":
            return grad * (keep * (1 - keep))
        g = grad * keep
        return F.reinterpret(g, g.frac + 2)

    def clear_cache(self) -> None:
        self._keep = None


class Softmax(Module):
    """Softmax along the last axis (:func:`covault.ops.nonlinear.softmax`; for two
    columns the cheaper ``[1 - s, s]`` with ``s = sigmoid(x1 - x0)``). Backward:
    ``s (g - sum(g s))`` (two products)."""

    def __init__(self) -> None:
        super().__init__()
        self._s: SecretTensor | None = None

    def forward(self, x: SecretTensor) -> SecretTensor:
        s = softmax(x)
        if self.training:
            self._s = s
        return s

    def backward(self, grad: SecretTensor, *, scale: float = 1.0, input_grad: bool = True) -> Any:
        if self._s is None:
            raise ProtocolError("Softmax.backward needs a forward pass in training mode first")
        s, self._s = self._s, None
        if not input_grad:
            return None
        gs = grad * s
        return s * (grad - gs.sum(axis=-1, keepdims=True))

    def clear_cache(self) -> None:
        self._s = None


def softmax(x: SecretTensor) -> SecretTensor:
    """Softmax along the last axis; two columns use one sigmoid of the difference."""
    if x.ndim >= 1 and x.shape[-1] == 2:
        s1 = nonlinear.sigmoid(x[..., 1] - x[..., 0])
        return stack([1 - s1, s1], axis=-1)
    return nonlinear.softmax(x, axis=-1)
