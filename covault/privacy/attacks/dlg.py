"""Deep leakage from gradients (DLG, Zhu, Liu and Han, NeurIPS 2019) with iDLG's label
(Zhao et al. 2020) and its batch extension (Yin et al. 2021).

The attacker knows the model and the observed update ``g``; it optimises dummy inputs (and,
without labels, dummy soft labels) so that their gradient matches ``g``: L-BFGS on
``sum ||grad(dummy) - g||^2`` (``loss="l2"``, DLG) or on ``1 - cos^2(grad(dummy), g)`` over all
parameters at once (``loss="cosine"``: the L2 distance after the best fit of a scale, for an
update whose scale is unknown, clipped or encoded; after Geiping et al. 2020). With
``restarts``, it keeps the start whose final matching loss is least (no original needed).
"""

from __future__ import annotations

import numpy as np

from covault.privacy.attacks.digits import CLASSES, PIXELS


def restore_labels(grad_last_bias: np.ndarray, batch: int) -> np.ndarray:
    """Labels read off the last layer's bias gradient ``mean(softmax - onehot)``: the classes
    whose entry is negative (exact for one image, iDLG; for a batch of distinct labels, Yin et al.),
    most negative first, repeated from the most negative on when there are fewer than ``batch``."""
    g = np.asarray(grad_last_bias, dtype=np.float64).reshape(-1)
    order = np.argsort(g, kind="stable")
    neg = [int(c) for c in order if g[c] < 0][:batch] or [int(order[0])]
    return np.array([neg[i] if i < len(neg) else neg[(i - len(neg)) % len(neg)] for i in range(batch)])


def dlg(
    model,
    target: list[np.ndarray],
    batch: int,
    *,
    labels: np.ndarray | None = None,
    iterations: int = 50,
    loss: str = "l2",
    seed: int = 0,
    restarts: int = 1,
) -> np.ndarray:
    """Dummy inputs ``(batch, 64)`` whose gradient under ``model`` matches ``target`` (one array
    per parameter, torch's layout) after ``iterations`` L-BFGS steps; ``labels`` known (iDLG)
    or optimised with the inputs (DLG). The result is not clipped to the pixel range."""
    import torch

    if loss not in ("l2", "cosine"):
        raise ValueError(f"dlg: loss must be 'l2' or 'cosine', got {loss!r}")
    params = list(model.parameters())
    if len(target) != len(params):
        raise ValueError(f"dlg: the model has {len(params)} parameters, the update {len(target)}")
    goal = [torch.as_tensor(np.asarray(t, dtype=np.float64).reshape(p.shape)) for t, p in zip(target, params)]
    flat_goal = torch.cat([g.reshape(-1) for g in goal])
    known = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def attempt(start: int) -> tuple[float, np.ndarray]:
        gen = torch.Generator().manual_seed(start)
        dummy = torch.rand(batch, PIXELS, generator=gen, dtype=torch.float64).requires_grad_(True)
        free = [dummy]
        if known is None:
            soft = torch.randn(batch, CLASSES, generator=gen, dtype=torch.float64).requires_grad_(True)
            free.append(soft)
        opt = torch.optim.LBFGS(free, lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            out = model(dummy)
            if known is None:
                ce = torch.sum(-torch.softmax(soft, -1) * torch.log_softmax(out, -1), dim=-1).mean()
            else:
                ce = torch.nn.functional.cross_entropy(out, known)
            grads = torch.autograd.grad(ce, params, create_graph=True)
            if loss == "l2":
                diff = sum(((a - b) ** 2).sum() for a, b in zip(grads, goal))
            else:
                flat = torch.cat([g.reshape(-1) for g in grads])
                diff = 1 - torch.nn.functional.cosine_similarity(flat, flat_goal, dim=0, eps=1e-30) ** 2
            diff.backward()
            return diff

        best, value = dummy.detach().clone(), float("inf")
        for _ in range(iterations):
            v = opt.step(closure)
            if v is None or not torch.isfinite(v) or not torch.isfinite(dummy).all():
                break  # diverged: keep the last finite dummies
            best, value = dummy.detach().clone(), float(v.detach())
        return value, best.numpy()

    tries = [attempt(seed + r) for r in range(max(1, restarts))]
    return min(tries, key=lambda t: t[0])[1]
