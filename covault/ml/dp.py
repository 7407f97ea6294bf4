"""DP-SGD training of the secure linear models (``fit(..., privacy=DPSGD(...))``) and its
plaintext float64 twin.

One step over the Poisson batch ``S`` (public size, hidden rows; :mod:`covault.privacy.dpsgd`):
``z = X_S w + b`` (2 rounds), the residual ``r = dL/dz`` (logistic: the sigmoid; linear:
``2 (z - y)``), the residual clamped to ``[-c_i, c_i]`` (one comparison on ``2|S|`` elements:
8 rounds in 2pc; with the piecewise sigmoid the sigmoid and the clamp are that ONE comparison,
:func:`covault.privacy.dpsgd.clipped_piecewise_residual`) so that every row's gradient
``r_i [x_i, 1]`` has norm at most ``C``, then
ONE truncation for ``w -= lr ((X_S^T r + n_w) / (q n) + penalty w)`` (and ``b`` alike) with the
secret noise ``n`` drawn for this step at the start. The denominator is the EXPECTED batch size
``q n`` (public), as in Opacus. Requirements: ``standardize=False`` (the standardisation's
means and variances come from every row and would enter the model without noise: scale the
features with public bounds instead), no ``class_weight`` (its counts come from every row), and
no loss curve (it would be a further release of the training rows, not accounted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from covault.ml.base import is_classifier
from covault.nn import Linear
from covault.nn import functional as F
from covault.ops.shuffle import shuffle_together
from covault.optim import SGD
from covault.privacy import dpsgd
from covault.privacy.dpsgd import DPSGD
from covault.tensor import SecretTensor


class NoisySGD(SGD):
    """:class:`~covault.optim.SGD` whose step adds ``lr * noise_scale * noise[p]`` to the update of
    each parameter ``p`` with a noise tensor (folded into the same single truncation)."""

    def __init__(self, params, session: Any, **kw: Any):
        super().__init__(params, **kw)
        self.session = session
        self.noise: dict[int, SecretTensor] = {}
        self.noise_scale = 1.0

    def step(self) -> None:
        f = self.session.frac_bits
        outputs, params = [], []
        for p in self.params:
            noise = self.noise.get(id(p))
            if not p.has_grad and noise is None:
                continue
            w = p.secret(self.session)
            terms = []
            if p.has_grad:
                terms.append((self.lr * p.grad_scale, p.grad_term()))
            if noise is not None:
                terms.append((self.lr * self.noise_scale, noise))
            if self.weight_decay and p.decay:
                terms.append((self.lr * self.weight_decay, w))
            if self.momentum and id(p) in self.velocity:
                terms.append((self.momentum, self.velocity[id(p)]))
            outputs.append((terms, f, self.bound))
            params.append(p)
        if not outputs:
            return
        for p, u in zip(params, F.combine(outputs)):
            if self.momentum:
                self.velocity[id(p)] = u
            p.value = p.value - u


def fit_private(
    est: Any,
    x: SecretTensor,
    y: SecretTensor,
    privacy: DPSGD,
    overwrite: bool,
    on_epoch: Callable[[int], None] | None = None,
) -> None:
    """Train the secure linear estimator ``est`` on ``x`` (n, d) and ``y`` (n, 1) by DP-SGD;
    sets ``secret_coef_``, ``secret_intercept_`` and ``privacy_`` (epsilon spent, delta, the
    noise multiplier, sample rate, steps, clipping norm, colluding parties)."""
    name = type(est).__name__
    if est.standardize:
        raise ValueError(
            f"{name}: DP-SGD needs standardize=False (the means and variances of every row would "
            f"enter the model without noise); scale the features with public bounds"
        )
    if getattr(est, "class_weight", None) is not None:
        raise ValueError(f"{name}: DP-SGD does not support class_weight (its class counts are not private)")
    session = x.session
    f = session.frac_bits
    n, d = x.shape
    if y.frac > f:
        y = F.at_frac(y, f)
    if est.shuffle != "none":
        x = x if overwrite else x._same(x.shares.copy())
        y = y if overwrite else y._same(y.shares.copy())
        x, y = shuffle_together([x, y], in_place=True)
    c = dpsgd.clip_bounds(x, privacy.max_grad_norm)
    fused = is_classifier(est) and est.sigmoid == "piecewise"  # sigmoid and clamp in one comparison
    if fused:
        lo, hi = dpsgd.piecewise_bounds(c, y)
    q, steps = privacy.schedule(n, int(est.batch_size), int(est.epochs))
    per_epoch = steps // int(est.epochs)
    sigma = privacy.sigma(q, steps)
    k = len(session.compute_parties)
    noise = None
    if sigma > 0:
        noise = dpsgd.secret_noise(session, (steps, d + 1), privacy.party_sigma(sigma, k))
    positions = dpsgd.batch_positions(session, n, q, steps, privacy.sampling_seed)
    model = Linear(d, 1, weight=np.zeros((d, 1)), bias_value=np.zeros(1))
    loss = est._loss()
    loss.reduction = "sum"
    opt = NoisySGD(
        model.parameters(),
        session,
        lr=float(est.learning_rate),
        momentum=float(est.momentum),
        weight_decay=est._penalty(n),
    )
    scale = 1.0 / (q * n)
    opt.noise_scale = scale
    for t in range(steps):
        epoch = t // per_epoch
        if t % per_epoch == 0:
            opt.lr = est._epoch_lr(epoch)
            if est.shuffle == "epoch" and epoch > 0:
                if fused:
                    x, y, lo, hi = shuffle_together([x, y, lo, hi], in_place=True)
                else:
                    x, y, c = shuffle_together([x, y, c], in_place=True)
        rows = positions[t]
        if len(rows):
            z = model(x[rows])
            if fused:
                r = dpsgd.clipped_piecewise_residual(z, y[rows], lo[rows], hi[rows])
            else:
                r = dpsgd.clamp(loss.backward(z, y[rows]), c[rows])
            model.backward(r, scale=scale, input_grad=False)
        if noise is not None:
            opt.noise = {id(model.weight): noise[t, :d].reshape(d, 1), id(model.bias): noise[t, d:]}
        opt.step()
        opt.zero_grad()
        if (t + 1) % per_epoch == 0 and on_epoch is not None:
            on_epoch(epoch + 1)
    w, b = model.weight.secret(session), model.bias.secret(session)
    est.secret_coef_, est.secret_intercept_ = F.at_frac(w, 24).reshape(d), b.reshape(())
    est.scaler_ = None
    est.loss_curve_ = None
    est.privacy_ = {
        "epsilon_spent": privacy.spent(sigma, q, steps),
        "delta": float(privacy.delta),
        "noise_multiplier": sigma,
        "sample_rate": q,
        "steps": steps,
        "max_grad_norm": float(privacy.max_grad_norm),
        "colluding": privacy.colluding,
        "noise_std": math.sqrt(k / (k - privacy.colluding)) * sigma * privacy.max_grad_norm if sigma else 0.0,
        "sampling": "poisson",
    }


def _residual(params: Any, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    if is_classifier(params):
        if params.sigmoid == "piecewise":
            return np.clip(0.5 + z / 4.0, 0.0, 1.0) - y
        return 0.5 * (1.0 + np.tanh(0.5 * z)) - y
    return 2.0 * (z - y)


def reference_dpsgd(
    params: Any,
    x: np.ndarray,
    y: np.ndarray,
    privacy: DPSGD,
    positions: list[np.ndarray],
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Plaintext float64 twin of :func:`fit_private` (no shuffle: ``positions`` index ``x``):
    per-example gradients ``r_i [x_i, 1]`` clipped to norm ``C`` by their exact norms, summed,
    plus ``noise[t]`` (steps, d + 1) if given, divided by the expected batch size; the same
    learning rates, penalty and momentum. Returns ``(w, b)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n, d = x.shape
    q, steps = privacy.schedule(n, int(params.batch_size), int(params.epochs))
    per_epoch = steps // int(params.epochs)
    C = float(privacy.max_grad_norm)
    alpha, mu = params._penalty(n), float(params.momentum)
    theta, u = np.zeros(d + 1), np.zeros(d + 1)
    decay = np.r_[np.ones(d), 0.0]
    scale = 1.0 / (q * n)
    for t in range(steps):
        lr = params._epoch_lr(t // per_epoch)
        rows = positions[t]
        xa = np.c_[x[rows], np.ones(len(rows))]
        g = _residual(params, xa @ theta, y[rows])[:, None] * xa  # per-example gradients
        norms = np.linalg.norm(g, axis=1)
        g = g * np.minimum(1.0, C / np.maximum(norms, 1e-300))[:, None]
        total = g.sum(axis=0)
        if noise is not None:
            total = total + noise[t]
        elif not len(rows):
            continue
        u = mu * u + lr * (scale * total + alpha * decay * theta)
        theta = theta - u
    return theta[:d], float(theta[d])
