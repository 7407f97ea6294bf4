"""Optimizers for secret parameters: SGD (momentum, weight decay) and Adam.

Both read ``Parameter.grad`` (the untruncated gradient of the summed loss) and
``Parameter.grad_scale`` (the public factor of the mean), and fold every public coefficient
(learning rate, batch mean, momentum, weight decay) into as few truncations as possible with
:func:`covault.nn.functional.combine`: an SGD step is ONE truncation round for all
parameters together. Costs and fixed-point ranges: ``docs/ml.md``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from covault.errors import ProtocolError
from covault.nn import functional as F
from covault.nn.module import Parameter
from covault.ops.nonlinear import fixed
from covault.tensor import SecretTensor, concatenate


class Optimizer:
    """Base class: the parameters, the learning rate, ``zero_grad``."""

    def __init__(self, params: Iterable[Parameter], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"optimizer parameters must be nn.Parameter, got {type(p).__name__}")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr!r}")
        self.lr = float(lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad, p.grad_scale = None, 1.0

    def _active(self) -> list[Parameter]:
        return [p for p in self.params if p.has_grad]

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent: ``u = momentum u + lr (scale g + weight_decay w)``,
    ``w = w - u`` (weight decay only on parameters with ``decay``; the velocity is kept in parameter units, which equals PyTorch's
    ``v = momentum v + g; w -= lr v`` for a constant learning rate).

    One truncation round per step for all parameters. Range: every step ``|u|`` must stay below
    ``bound`` (default 16); a smaller bound leaves more bits to the coefficients (the gradient's
    multiplier is ``round(lr scale 2^(61 - log2(bound) - g.frac))``).
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        bound: float = 16.0,
    ):
        super().__init__(params, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.momentum, self.weight_decay, self.bound = float(momentum), float(weight_decay), float(bound)
        self.velocity: dict[int, SecretTensor] = {}

    def step(self) -> None:
        active = self._active()
        if not active:
            return
        session = active[0].grad_term().session
        f = session.frac_bits
        outputs = []
        for p in active:
            w = p.secret(session)
            terms = [(self.lr * p.grad_scale, p.grad_term())]
            if self.weight_decay and p.decay:
                terms.append((self.lr * self.weight_decay, w))
            if self.momentum and id(p) in self.velocity:
                terms.append((self.momentum, self.velocity[id(p)]))
            outputs.append((terms, f, self.bound))
        for p, u in zip(active, F.combine(outputs)):
            if self.momentum:
                self.velocity[id(p)] = u
            p.value = p.value - u


class Adam(Optimizer):
    """Adam (Kingma-Ba 2015) in fixed point, with bias-corrected moments kept directly:

    ``m_t = a1 m + c1 g``, ``v_t = a2 v + c2 g^2`` with the public ``c = (1 - beta) /
    (1 - beta^t)``, ``a = beta (1 - beta^(t-1)) / (1 - beta^t)``, and the step
    ``w -= lr m_t / sqrt(v_t + eps^2)`` (``eps`` inside the root: the same as ``sqrt(v) + eps``
    up to a factor below ``sqrt(2)``, and it keeps the root's input in range).

    Fixed point: ``g`` and ``m`` at 24 fractional bits, ``v`` at 30 (``c2`` is small: the squared
    gradients need the extra bits), ``1/sqrt(.)`` by a binary-scaled inverse square root on
    ``[2^-20, 2^12)``; hence ``eps >= 2^-10`` (default 1e-3, instead of float Adam's 1e-8, which
    is not representable) and root-mean-square gradients below 64.
    Cost per step: 3 truncation rounds, 2 fixed-point products and one inverse square root
    (about 50 rounds in 2pc, 58 in rep3; the root is 85% of it). In 2pc, up to 1,024 parameters
    in all, the root's comparisons take the radix-4 carry tree: about 35 rounds.
    """

    LO, HI = -20, 12  # range of v + eps^2 for the inverse square root
    G_FRAC, V_FRAC, R_FRAC = 24, 30, 30

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        bound: float = 64.0,
    ):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        if not eps >= 2.0 ** (self.LO / 2):
            raise ValueError(
                f"eps must be >= 2^{self.LO // 2} = {2.0 ** (self.LO / 2):.3g} in fixed point, got {eps!r}"
            )
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.betas, self.eps, self.weight_decay, self.bound = (
            (float(b1), float(b2)),
            float(eps),
            float(weight_decay),
            float(bound),
        )
        self.t = 0
        self.m: SecretTensor | None = None
        self.v: SecretTensor | None = None
        self._layout: list[tuple[int, tuple[int, ...]]] | None = None

    def step(self) -> None:
        active = self._active()
        if not active:
            return
        layout = [(id(p), p.shape) for p in active]
        if self._layout is None:
            self._layout = layout
        elif layout != self._layout:
            raise ProtocolError("Adam: the set of parameters with gradients changed between steps")
        session = active[0].grad.session
        f = session.frac_bits
        self.t += 1
        t, (b1, b2) = self.t, self.betas
        c1, c2 = (1 - b1) / (1 - b1**t), (1 - b2) / (1 - b2**t)
        a1, a2 = b1 * (1 - b1 ** (t - 1)) / (1 - b1**t), b2 * (1 - b2 ** (t - 1)) / (1 - b2**t)
        # 1. mean gradients and first moments, one truncation
        outputs, pos = [], 0
        for p in active:
            w = p.secret(session)
            s = p.grad_scale
            g_terms = [(s, p.grad)] + ([(self.weight_decay, w)] if self.weight_decay and p.decay else [])
            m_terms = [(c1 * c, x) for c, x in g_terms]
            if self.m is not None:
                m_terms.append((a1, self.m[pos : pos + w.size].reshape(w.shape)))
            outputs += [(g_terms, self.G_FRAC, self.bound), (m_terms, self.G_FRAC, self.bound)]
            pos += w.size
        res = F.combine(outputs)
        g = concatenate([r.reshape(-1) for r in res[0::2]])
        self.m = concatenate([r.reshape(-1) for r in res[1::2]])
        # 2. second moments: g^2 (one fixed-point product), then one truncation
        sq = fixed.mul(g, g, self.V_FRAC)
        v_terms = [(c2, sq)] + ([(a2, self.v)] if self.v is not None else [])
        vbound = 2.0**self.HI
        self.v = F.combine([(v_terms, self.V_FRAC, vbound)])[0]
        # 3. lr m / sqrt(v + eps^2): inverse square root, one product, one truncation
        r = F.inv_sqrt_range(fixed.add_const(self.v, self.eps**2), self.LO, self.HI, self.R_FRAC)
        ratio = fixed.mul(self.m, r, 32)
        step = F.combine([([(self.lr, ratio)], f, self.bound)])[0]
        pos = 0
        for p in active:
            n = int(np.prod(p.shape, dtype=np.int64))
            p.value = p.value - step[pos : pos + n].reshape(p.shape)
            pos += n
