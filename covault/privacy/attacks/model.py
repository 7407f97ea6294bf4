"""The federated model attacked: a small MLP (64 -> hidden -> 10, ReLU, first layer with bias)
in float64 torch, its clients' updates (gradients of the mean cross-entropy) and their
clipping and Gaussian noise (DP)."""

from __future__ import annotations

import numpy as np

from covault.privacy.attacks.digits import CLASSES, PIXELS
from covault.privacy.noise import gaussian
from covault.randomness.prg import PRG, new_seed


def mlp(hidden: int = 32, seed: int = 0):
    """``Linear(64, hidden) -> ReLU -> Linear(hidden, 10)`` in float64, initialised from ``seed``
    (public: the aggregator knows the model it sent)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(PIXELS, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, CLASSES)
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            bound = 1.0 / np.sqrt(p.shape[-1] if p.ndim > 1 else hidden)
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 * bound - bound)
    return model


def update(model, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """A client's update: the gradient of the mean cross-entropy over its batch ``x`` (n, 64),
    labels ``y`` (n,), per parameter in torch's layout (weights ``(out, in)``)."""
    import torch

    xt = torch.as_tensor(np.atleast_2d(x), dtype=torch.float64)
    loss = torch.nn.functional.cross_entropy(model(xt), torch.as_tensor(np.atleast_1d(y), dtype=torch.long))
    return [g.detach().numpy().copy() for g in torch.autograd.grad(loss, list(model.parameters()))]


def clip(grads: list[np.ndarray], norm: float) -> list[np.ndarray]:
    """``grads`` scaled down to an L2 norm of at most ``norm`` (all parameters together)."""
    total = float(np.sqrt(sum(float(np.sum(g * g)) for g in grads)))
    scale = min(1.0, norm / total) if total > 0 else 1.0
    return [g * scale for g in grads]


def noisy(grads: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    """``grads`` plus Gaussian noise of standard deviation ``sigma`` per coordinate, from a
    CSPRNG stream (:func:`covault.privacy.noise.gaussian`)."""
    if sigma == 0:
        return [g.copy() for g in grads]
    prg = PRG(new_seed())
    return [g + gaussian(prg, g.shape, sigma) for g in grads]
