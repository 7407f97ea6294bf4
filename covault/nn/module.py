"""Module system with explicit forward and backward passes (no autograd).

A :class:`Module` maps a secret tensor to a secret tensor in :meth:`Module.forward`, keeping the
few values its backward pass needs (the input of a linear layer, the 0/1 mask of a ReLU) while
in training mode, and turns the gradient of the loss with respect to its output into the
gradients of its parameters and of its input in :meth:`Module.backward`.

Gradients are those of the SUMMED batch loss; the public factor that turns them into the
gradient of the mean loss (``1/batch``) travels separately as ``scale`` and ends up in
:attr:`Parameter.grad_scale`, so that an optimizer can fold it into the one truncation it
performs anyway. Parameter gradients are left untruncated (``Parameter.grad.frac`` is
typically ``2f`` or more) for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from covault.errors import ProtocolError, ShapeError
from covault.tensor import SecretTensor


class Parameter:
    """A trainable value: a secret tensor, or a public numpy array until it is first trained.
    ``decay=False`` exempts it from weight decay (biases, as in scikit-learn's penalties)."""

    def __init__(self, value: SecretTensor | np.ndarray, name: str = "", decay: bool = True):
        if not isinstance(value, SecretTensor):
            value = np.asarray(value, dtype=np.float64)
        self.value = value
        self.name = name
        self.decay = decay  # whether optimizers apply weight decay (not to biases)
        self._grad: SecretTensor | None = None
        self._pending: Any = None  # a gradient product not computed yet (nn.functional.Product)
        self.grad_scale = 1.0

    def __repr__(self) -> str:
        kind = "secret" if self.is_secret else "public"
        return f"Parameter({self.name!r}, shape={self.shape}, {kind})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def is_secret(self) -> bool:
        return isinstance(self.value, SecretTensor)

    def secret(self, session) -> SecretTensor:
        """The value as a secret tensor (a public value becomes a trivial sharing, once)."""
        if not self.is_secret:
            self.value = session.constant(self.value)
        return self.value

    @property
    def grad(self) -> SecretTensor | None:
        """The accumulated gradient (a pending product is computed now: one round)."""
        if self._pending is not None:
            self._grad, self._pending = self._pending.compute(), None
        return self._grad

    @grad.setter
    def grad(self, value: SecretTensor | None) -> None:
        self._grad, self._pending = value, None

    @property
    def has_grad(self) -> bool:
        return self._grad is not None or self._pending is not None

    def grad_term(self) -> Any:
        """The gradient as the optimizer's truncation can take it: a pending product as it is
        (:class:`covault.nn.functional.Product`), else the secret tensor; None without one."""
        return self._pending if self._pending is not None else self._grad

    def accumulate(self, grad: SecretTensor | Any, scale: float) -> None:
        """Add ``scale * grad`` to the stored gradient (same scale required). ``grad`` may be a
        :class:`~covault.nn.functional.Product`: the first one is kept pending for the optimizer."""
        if tuple(grad.shape) != self.shape:
            raise ShapeError(
                f"gradient of shape {grad.shape} for parameter {self.name!r} of shape {self.shape}"
            )
        if not self.has_grad:
            if isinstance(grad, SecretTensor):
                self._grad = grad
            else:
                self._pending = grad
            self.grad_scale = float(scale)
        elif float(scale) != self.grad_scale:
            raise ProtocolError(f"gradients of {self.name!r} accumulated with different scales")
        else:
            self.grad = self.grad + (grad if isinstance(grad, SecretTensor) else grad.compute())


class Module:
    """Base class: parameters, sub-modules, training mode, forward and backward."""

    def __init__(self) -> None:
        self.training = True

    # -- structure -----------------------------------------------------------------------------
    def children(self) -> Iterator[Module]:
        for v in vars(self).values():
            if isinstance(v, Module):
                yield v
            elif isinstance(v, list | tuple):
                yield from (m for m in v if isinstance(m, Module))

    def own_parameters(self) -> list[Parameter]:
        return [v for v in vars(self).values() if isinstance(v, Parameter)]

    def parameters(self) -> list[Parameter]:
        """Every parameter of this module and its sub-modules (each once, in definition order)."""
        seen, out = set(), []
        for p in self.own_parameters() + [q for c in self.children() for q in c.parameters()]:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad, p.grad_scale = None, 1.0

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for c in self.children():
            c.train(mode)
        if not mode:
            self.clear_cache()
        return self

    def eval(self) -> Module:
        return self.train(False)

    def clear_cache(self) -> None:
        """Drop the values kept for the backward pass."""
        for c in self.children():
            c.clear_cache()

    # -- computation ---------------------------------------------------------------------------
    def __call__(self, x: SecretTensor) -> SecretTensor:
        return self.forward(x)

    def forward(self, x: SecretTensor) -> SecretTensor:
        raise NotImplementedError

    def backward(self, grad: SecretTensor, *, scale: float = 1.0, input_grad: bool = True) -> Any:
        """Accumulate parameter gradients from ``grad`` (d loss / d output) and return
        d loss / d input (None when ``input_grad`` is False). ``scale``: public factor of the
        gradient (e.g. ``1/batch`` for a mean loss), recorded with the parameters' gradients."""
        raise NotImplementedError


class Sequential(Module):
    """Modules applied in order; the backward pass runs them in reverse."""

    def __init__(self, *modules: Module):
        super().__init__()
        for m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes modules, got {type(m).__name__}")
        self.modules = list(modules)

    def __getitem__(self, i: int) -> Module:
        return self.modules[i]

    def __len__(self) -> int:
        return len(self.modules)

    def forward(self, x: SecretTensor) -> SecretTensor:
        for m in self.modules:
            x = m(x)
        return x

    def backward(self, grad: SecretTensor, *, scale: float = 1.0, input_grad: bool = True) -> Any:
        for i in range(len(self.modules) - 1, -1, -1):
            grad = self.modules[i].backward(grad, scale=scale, input_grad=input_grad or i > 0)
        return grad
