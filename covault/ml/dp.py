"""DP-SGD training of the secure linear models (``fit(..., privacy=DPSGD(...))``) and its
plaintext float64 twin.

One step over the Poisson batch ``S`` (public size, hidden rows; :mod:`covault.privacy.dpsgd`):
``z = X_S w + b`` (2 rounds), the residual ``r = dL/dz`` (logistic: the sigmoid; linear:
``2 (z - y)``), the residual clamped to ``[-c_i, c_i]`` (one comparison on ``2|S|`` elements:
8 rounds in 2pc, 4 for ``2|S| <= 1024``; with the piecewise sigmoid the sigmoid and the clamp
are that ONE comparison, :func:`covault.privacy.dpsgd.clipped_piecewise_residual`) so that
every row's gradient ``r_i [x_i, 1]`` has norm at most ``C``, then ONE truncation for
``w -= lr ((X_S^T r + n_w) / (q n) + penalty w)`` (and ``b`` alike) with the secret noise
``n`` drawn for this step at the start. The denominator is the EXPECTED batch size ``q n``
(public), as in Opacus. Requirements: ``standardize=False`` (the standardisation's
means and variances come from every row and would enter the model without noise: scale the
features with public bounds instead), no ``class_weight`` (its counts come from every row), and
no loss curve (it would be a further release of the training rows, not accounted).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from covault.errors import BoundError
from covault.ml.base import is_classifier
from covault.nn import Linear, SoftmaxCrossEntropyLoss
from covault.nn import functional as F
from covault.ops.nonlinear import fixed
from covault.ops.shuffle import shuffle_together
from covault.optim import SGD
from covault.privacy import dpsgd
from covault.privacy.dpsgd import DPSGD
from covault.tensor import SecretTensor, concatenate


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
    est.privacy_ = _privacy_info(privacy, sigma, q, steps, k)


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


# -- the MLP ----------------------------------------------------------------------------------------
FACTOR_CAP = 2.0**11  # |h_l,i|^2 + 1 and |d_l,i|^2 above this: the row is dropped (mlp_clip_factors)
RATIO_BITS = 30  # s_i / C^2 above 2^30: the row is dropped (the inverse square root's range is [1, 2^31))
WIDE = 24  # fractional bits of the deltas' squared norms and of s_i


def mlp_clip_factors(hs: list[SecretTensor], ds: list[SecretTensor], max_grad_norm: float) -> SecretTensor:
    """Secret per-row clip factors ``c_i`` (B, 1) of an MLP batch: ``hs[l]`` (B, in_l) the inputs of
    dense layer ``l``, ``ds[l]`` (B, out_l) its output deltas. Row ``i``'s gradient has the squared
    norm ``s_i = sum_l a_l,i b_l,i`` with ``a = |h_l,i|^2 + 1`` and ``b = |d_l,i|^2`` (Goodfellow
    2015; no per-example gradient is formed) and ``c_i = min(1, C / sqrt(s_i)) =
    inv_sqrt(max(s_i / C^2, 1))``.

    Precision: the squares are summed exactly (``2f`` bits), ``b`` and ``s`` kept at 24 bits, ``a
    >= 1`` at ``f``, ``s / C^2`` at ``f`` (``>= 1`` where it matters); the clipped norm ``c_i
    sqrt(s_i)`` is at most ``C (1 + 3e-5 + 2^-24 sum_l (a_l + 1) / C^2)``. Range: a row with some ``a``
    or ``b`` above ``FACTOR_CAP`` (2^11), or ``s_i / C^2`` above ``2^30``, gets ``c_i = 0`` (its
    gradient is dropped: norm ``0 <= C``, the sensitivity stays ``C``;
    :func:`reference_clip_factors` does the same). BoundError naming layer 1 when the features'
    public bound puts ``|x_i|^2 + 1`` above the cap (every row would be dropped). Cost: one
    product on the activations and deltas, three truncations, two comparisons (``2 L B`` and ``2
    B`` elements), two products on ``L B`` and ``B`` elements and the inverse square root on ``B``
    (4 scaling stages)."""
    from covault.ops import compare

    session = hs[0].session
    f = session.frac_bits
    x, layers = hs[0], len(hs)
    if x.bound is None or x.shape[1] * x.bound**2 + 1 > FACTOR_CAP:
        have = "no public bound" if x.bound is None else f"|x_i|^2 + 1 up to {x.shape[1] * x.bound**2 + 1:g}"
        raise BoundError(
            f"DP-SGD clipping of the MLP, layer 1: {x.shape[1]} features with {have}, beyond "
            f"{FACTOR_CAP:g} (the per-example norms' range); bound the features (feature_bound) or scale them"
        )
    parts = [F.at_frac(v, f) for v in (*hs, *ds)]
    cuts = np.cumsum([0] + [p.shape[1] for p in parts])
    both = concatenate(parts, axis=1)
    sq = F.raw_mul(both, both)  # every square exact, 2f bits
    sums = concatenate(
        [sq[:, int(a) : int(b)].sum(axis=1, keepdims=True) for a, b in itertools.pairwise(cuts)], axis=1
    )
    factors = F.at_frac(sums, WIDE) + np.r_[np.ones(layers), np.zeros(layers)]
    over, big = compare.relu(factors - FACTOR_CAP, with_mask=True)  # [factor > cap]
    capped = (factors - over).with_bound(FACTOR_CAP + 1.0)
    a = F.at_frac(capped[:, :layers], f)
    s = fixed.mul(a, capped[:, layers:], WIDE).with_bound(FACTOR_CAP**2 * 2).sum(axis=1, keepdims=True)
    r = s * (1.0 / float(max_grad_norm) ** 2) + big.sum(axis=1, keepdims=True) * 2.0**RATIO_BITS
    b, low = r.shape[0], 2.0**-f
    v = F.reinterpret(r, 2 * f)  # r 2^-f: the thresholds stay in the public operands' range
    ends, bits = compare.relu(concatenate([v - 2.0**RATIO_BITS * low, low - v]), with_mask=True)
    u = F.reinterpret(v - ends[:b] + ends[b:], f).with_bound(2.0**RATIO_BITS)  # clip(r, 1, 2^30)
    keep = 1 - bits[:b]  # r_i <= 2^30 and no factor above the cap
    c = F.inv_sqrt_range(u, 0, RATIO_BITS + 1, f).with_bound(1.0 + 2.0 ** (1 - f))
    return c * keep


def fit_private_mlp(
    est: Any,
    x: SecretTensor,
    target: SecretTensor,
    privacy: DPSGD,
    on_epoch: Callable[[int], None] | None = None,
) -> None:
    """Train the secure MLP ``est`` on ``x`` (n, d) and one-hot ``target`` (n, k) by DP-SGD: per
    step the forward pass, the deltas of every dense layer, the clip factors of
    :func:`mlp_clip_factors`, the deltas scaled by them, the weight gradients summed over the
    batch (inside the SGD truncation), the secret noise (:func:`covault.privacy.dpsgd.
    secret_noise`, drawn once per epoch) and the update (:class:`NoisySGD`: momentum, ``alpha``).
    Sets ``secret_coefs_``, ``secret_intercepts_`` and ``privacy_``."""
    name = type(est).__name__
    if est.standardize:
        raise ValueError(
            f"{name}: DP-SGD needs standardize=False (the means and variances of every row would "
            f"enter the model without noise); scale the features with public bounds"
        )
    if est.optimizer != "sgd":
        raise ValueError(f"{name}: DP-SGD trains with optimizer='sgd' (momentum), not {est.optimizer!r}")
    session = x.session
    n, d = x.shape
    if est.shuffle != "none":
        x, target = shuffle_together([x, target])
    q, steps = privacy.schedule(n, int(est.batch_size), int(est.epochs))
    per_epoch = steps // int(est.epochs)
    sigma = privacy.sigma(q, steps)
    k = len(session.compute_parties)
    positions = dpsgd.batch_positions(session, n, q, steps, privacy.sampling_seed)
    model = est._build(d)
    linears = [m for m in model.modules if isinstance(m, Linear)]
    params = [p for m in linears for p in (m.weight, m.bias)]
    sizes = [int(np.prod(p.shape)) for p in params]
    loss = SoftmaxCrossEntropyLoss()
    opt = NoisySGD(
        params,
        session,
        lr=float(est.learning_rate),
        momentum=float(est.momentum),
        weight_decay=float(est.alpha),
    )
    scale = 1.0 / (q * n)
    opt.noise_scale = scale
    noise = None
    for t in range(steps):
        epoch, j = divmod(t, per_epoch)
        if j == 0:
            if est.shuffle == "epoch" and epoch > 0:
                x, target = shuffle_together([x, target], in_place=True)
            if sigma > 0:
                noise = dpsgd.secret_noise(session, (per_epoch, sum(sizes)), privacy.party_sigma(sigma, k))
        rows = positions[t]
        if len(rows):
            _private_step(model, linears, loss, x[rows], target[rows], privacy.max_grad_norm, scale)
        if noise is not None:
            cuts = np.cumsum([0, *sizes])
            opt.noise = {
                id(p): noise[j, int(a) : int(b)].reshape(*p.shape)
                for p, a, b in zip(params, cuts[:-1], cuts[1:])
            }
        opt.step()
        opt.zero_grad()
        if j == per_epoch - 1 and on_epoch is not None:
            on_epoch(epoch + 1)
    model.eval()
    est.secret_coefs_ = [m.weight.secret(session) for m in linears]
    est.secret_intercepts_ = [m.bias.secret(session) for m in linears]
    est.loss_curve_ = None
    est.privacy_ = _privacy_info(privacy, sigma, q, steps, k)


def _private_step(
    model: Any, linears: list, loss: Any, xb: Any, tb: Any, max_grad_norm: float, scale: float
) -> None:
    """One batch: forward, every dense layer's delta, the clip factors, the scaled deltas' weight
    gradients accumulated (pending products for the optimizer's truncation)."""
    from covault.nn import ReLU

    relus = [m for m in model.modules if isinstance(m, ReLU)]
    g = loss.backward(model(xb), tb)
    hs = [m._x for m in linears]
    ds = [g] * len(linears)
    for i in range(len(linears) - 1, 0, -1):
        g = relus[i - 1].backward(g @ linears[i].weight.value.T)
        ds[i - 1] = g
    c = mlp_clip_factors(hs, ds, max_grad_norm)
    ds = [F.at_frac(dl, c.session.frac_bits) for dl in ds]
    cuts = np.cumsum([0] + [dl.shape[1] for dl in ds])
    scaled = concatenate(ds, axis=1) * c  # one product for every layer's deltas
    for m, a, b in zip(linears, cuts[:-1], cuts[1:]):
        m.backward(scaled[:, int(a) : int(b)], scale=scale, input_grad=False)


def _privacy_info(privacy: DPSGD, sigma: float, q: float, steps: int, k: int) -> dict[str, Any]:
    """The ``privacy_`` fields of a DP-SGD run."""
    return {
        "epsilon_spent": privacy.spent(sigma, q, steps),
        "delta": float(privacy.delta),
        "noise_multiplier": sigma,
        "sample_rate": q,
        "steps": steps,
        "max_grad_norm": float(privacy.max_grad_norm),
        "colluding": privacy.colluding,
        "noise_std": math.sqrt(k / (k - privacy.colluding)) * sigma * privacy.max_grad_norm if sigma else 0.0,
        "sampling": "poisson",
        "neighbours": "replace one row",  # the accountant's relation: row count and batch sizes are public
    }


def reference_clip_factors(hs: list[np.ndarray], ds: list[np.ndarray], max_grad_norm: float) -> np.ndarray:
    """Float64 twin of :func:`mlp_clip_factors` from MATERIALISED per-example gradients
    ``[h_l,i, 1] (x) d_l,i``: ``min(1, C / |g_i|)``, 0 for a row beyond the range rule."""
    C = float(max_grad_norm)
    sq = np.zeros(len(hs[0]))
    drop = np.zeros(len(hs[0]), dtype=bool)
    for h, dl in zip(hs, ds):
        ha = np.c_[h, np.ones(len(h))]
        g = ha[:, :, None] * dl[:, None, :]  # per-example gradients of the layer
        sq += (g**2).sum(axis=(1, 2))
        drop |= ((ha**2).sum(1) > FACTOR_CAP) | ((dl**2).sum(1) > FACTOR_CAP)
    drop |= sq / C**2 > 2.0**RATIO_BITS
    c = np.minimum(1.0, C / np.sqrt(np.maximum(sq, 1e-300)))
    return np.where(drop, 0.0, c)


def reference_dpsgd_mlp(
    params: Any,
    x: np.ndarray,
    y: np.ndarray,
    privacy: DPSGD,
    positions: list[np.ndarray],
    noise: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Plaintext float64 twin of :func:`fit_private_mlp` (no shuffle: ``positions`` index ``x``;
    integer labels ``y``): per-example gradients clipped to norm ``C`` by
    :func:`reference_clip_factors`, summed, plus ``noise[t]`` (steps, P: each layer's weights
    row-major then its bias) if given, divided by the expected batch size; SGD with momentum and
    ``alpha`` as :class:`NoisySGD`. Returns ``(coefs, intercepts)``."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    onehot = (np.asarray(y).reshape(-1)[:, None] == np.arange(int(params.n_classes))).astype(np.float64)
    q, steps = privacy.schedule(n, int(params.batch_size), int(params.epochs))
    ws = params._init_weights(d)
    bs = [np.zeros(w.shape[1]) for w in ws]
    theta = [p for pair in zip(ws, bs) for p in pair]
    vel = [np.zeros_like(p) for p in theta]
    decay = [i % 2 == 0 for i in range(len(theta))]
    lr, mu, alpha, scale = (
        float(params.learning_rate),
        float(params.momentum),
        float(params.alpha),
        1.0 / (q * n),
    )
    for t in range(steps):
        rows = positions[t]
        grads = [np.zeros_like(p) for p in theta]
        if len(rows):
            acts = [x[rows]]
            for i in range(len(ws)):
                z = acts[-1] @ theta[2 * i] + theta[2 * i + 1]
                acts.append(np.maximum(z, 0) if i < len(ws) - 1 else z)
            e = np.exp(acts[-1] - acts[-1].max(axis=1, keepdims=True))
            g = e / e.sum(axis=1, keepdims=True) - onehot[rows]
            ds = [g] * len(ws)
            for i in range(len(ws) - 1, 0, -1):
                g = (g @ theta[2 * i].T) * (acts[i] > 0)
                ds[i - 1] = g
            c = reference_clip_factors(acts[:-1], ds, privacy.max_grad_norm)
            for i in range(len(ws)):
                grads[2 * i], grads[2 * i + 1] = acts[i].T @ (c[:, None] * ds[i]), (c[:, None] * ds[i]).sum(0)
        elif noise is None:
            continue
        if noise is not None:
            cuts = np.cumsum([0] + [p.size for p in theta])
            grads = [gp + noise[t, a:b].reshape(gp.shape) for gp, a, b in zip(grads, cuts[:-1], cuts[1:])]
        for i, p in enumerate(theta):
            vel[i] = mu * vel[i] + lr * (scale * grads[i] + (alpha * p if decay[i] else 0.0))
            theta[i] = p - vel[i]
    return theta[0::2], theta[1::2]
