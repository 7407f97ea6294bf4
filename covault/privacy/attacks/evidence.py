"""The three experiments of ``covault demo --attack`` on scikit-learn's digits.

1. Federated learning: an honest-but-curious aggregator inverts one client's update of an MLP
   64 -> 32 -> 10 (analytic inversion of the first layer; DLG / iDLG; batches of 1 and 4).
2. covault: the same images trained under MPC (2pc with a dealer, TCP with mutual TLS); the
   same attacker gets every byte one compute party received, its own messages and shares.
3. Secure aggregation (the aggregator sees the sum of N clients' updates) and DP (each update
   clipped and noised at several epsilon): how far each attack gets.

Every reconstruction is scored per image by MSE and PSNR (pixels in [0, 1]) against the
originals, beside what guessing achieves (:func:`covault.privacy.attacks.digits.baselines`).
The experiments' own randomness (which images, initial weights, DLG's start) is seeded numpy /
torch, nothing secret; covault's MPC and the DP noise draw from covault's CSPRNG.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from covault.privacy.attacks import analytic, mpc_view
from covault.privacy.attacks.digits import (
    baselines,
    best_match,
    distinct_labels,
    load_digits,
    matched,
    mse,
    psnr,
    to_image,
)
from covault.privacy.attacks.dlg import dlg, restore_labels
from covault.privacy.attacks.model import clip, mlp, noisy, update

HIDDEN = 32
SECAGG_CLIP = 1e3  # L2 norm of the quantiser's clipping: far above any update here (no DP)
RECOVERED_DB = 30.0  # PSNR from which a reconstruction is the image to the eye (8x8 digits)


@dataclass
class Options:
    """What to run: ``images`` attacked (batch of the federated and MPC updates), DLG's L-BFGS
    steps for one image (``iterations``) and for a batch (``batch_iterations``; the federated
    batch's iDLG keeps the best of ``restarts`` starts by matching loss), the clients of
    secure aggregation, the largest sum DLG is run on, the DP settings (epsilon at ``delta``,
    Poisson rate ``sample_rate`` over ``steps``, clipping norm ``clip_norm``; smaller
    ``noise_multipliers`` show where the attacks come back, with their epsilon) and the attacked
    compute party."""

    images: int = 4
    iterations: int = 10
    batch_iterations: int = 25
    clients: tuple[int, ...] = (1, 4, 16, 64)
    dlg_max_clients: int = 16
    restarts: int = 3
    epsilons: tuple[float, ...] = (1.0, 8.0, 64.0, 1024.0)
    noise_multipliers: tuple[float, ...] = (0.01, 0.001)
    delta: float = 1e-5
    sample_rate: float = 0.01
    steps: int = 100
    clip_norm: float = 1.0
    party: str = "p1"
    protocol: str = "2pc"
    transport: str = "tcp"
    seed: int = 0
    pictures: list = field(default_factory=list)


def _score(name: str, recon: np.ndarray, originals: np.ndarray, **info) -> dict:
    """One setting's record: per-image MSE and PSNR of ``recon`` (one row per original)."""
    err = mse(to_image(recon), originals)
    db = psnr(err)
    return {
        "setting": name,
        **info,
        "mse": err.tolist(),
        "psnr": db.tolist(),
        "mean_mse": float(err.mean()),
        "median_psnr": float(np.median(db)),
        "recovered": int(np.sum(db >= RECOVERED_DB)),
    }


def _picture(opts: Options, label: str, rows: np.ndarray) -> None:
    opts.pictures.append((label, to_image(np.asarray(rows)[: opts.images])))


def _idlg_each(opts: Options, model, updates: list[list[np.ndarray]], loss: str = "l2") -> np.ndarray:
    """iDLG on each batch-1 update (its label read off the update; two starts)."""
    return np.stack(
        [
            dlg(
                model,
                u,
                1,
                labels=restore_labels(u[3], 1),
                iterations=opts.iterations,
                restarts=2,
                loss=loss,
                seed=opts.seed,
            )[0]
            for u in updates
        ]
    )


def federated(opts: Options, x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Experiment 1: one client's plaintext update, attacked by the aggregator."""
    model = mlp(HIDDEN, opts.seed)
    out = []
    ups = [update(model, x[i], y[i]) for i in range(len(x))]
    rec = np.stack([analytic.reconstruct(u[0], u[1]) for u in ups])
    out.append(_score("analytic inversion, batch 1", rec, x, attack="analytic", batch=1))
    _picture(opts, "FL: analytic, batch 1", rec)
    rec = _idlg_each(opts, model, ups)
    out.append(_score("iDLG (label from the update), batch 1", rec, x, attack="idlg", batch=1))
    rec = np.stack([dlg(model, u, 1, iterations=opts.iterations, restarts=2, seed=opts.seed)[0] for u in ups])
    out.append(_score("DLG (label optimised), batch 1", rec, x, attack="dlg", batch=1))
    _picture(opts, "FL: DLG, batch 1", rec)
    u = update(model, x, y)
    n = len(x)
    cand = analytic.invert_linear(u[0], u[1])
    pick, _ = best_match(to_image(cand), x)
    out.append(
        _score(
            f"analytic inversion, batch {n} (best of {len(cand)} rows)",
            cand[pick],
            x,
            attack="analytic",
            batch=n,
        )
    )
    labels = restore_labels(u[3], n)
    rec = dlg(
        model, u, n, labels=labels, iterations=opts.batch_iterations, seed=opts.seed, restarts=opts.restarts
    )
    rec = matched(rec, x)
    out.append(
        _score(
            f"iDLG (labels from the update, best of {opts.restarts} starts), batch {n}",
            rec,
            x,
            attack="idlg",
            batch=n,
            labels_right=int(np.sum(np.sort(labels) == np.sort(y))),
        )
    )
    _picture(opts, f"FL: iDLG, batch {n}", rec)
    rec = matched(dlg(model, u, n, iterations=opts.batch_iterations, seed=opts.seed), x)
    out.append(_score(f"DLG (labels optimised), batch {n}", rec, x, attack="dlg", batch=n))
    return out


def _fixed_point(update_: list[np.ndarray]) -> dict:
    """A plaintext update as a party would receive it in covault's layout and encoding (the
    control: what :func:`mpc_view.candidates` finds when the images are there)."""
    arrays = [np.rint((g.T if g.ndim == 2 else g) * 2.0**16).astype(np.int64) for g in update_]
    return {"received": arrays, "sent": [], "opened": [], "shares": []}


def under_mpc(opts: Options, x: np.ndarray, y: np.ndarray, data: np.ndarray, indices: np.ndarray) -> dict:
    """Experiment 2: the images trained under MPC; one compute party's view attacked."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="covault-attack-") as d:
        shares = mpc_view.train_under_mpc(
            x, y, d, protocol=opts.protocol, transport=opts.transport, hidden=HIDDEN, seed=opts.seed
        )
        view = mpc_view.party_view(d, opts.party, shares.get(opts.party) or ())
    seconds = time.perf_counter() - started
    counts = {k: len(v) for k, v in view.items()}
    counts["bytes_received"] = int(sum(a.nbytes for a in view["received"]))
    rows = []
    n = len(x)
    guess = mpc_view.gradient_guess(view, HIDDEN)
    model = mpc_view.public_model(HIDDEN, opts.seed)
    if guess is not None:
        rec = analytic.invert_linear(guess[0], guess[1], tol=0.0)
        one = np.broadcast_to(rec[0] if len(rec) else np.zeros(x.shape[1]), x.shape)
        rows.append(
            _score(
                "analytic inversion of the view read as an update",
                one,
                x,
                attack="analytic",
                batch=n,
            )
        )
        _picture(opts, f"MPC {opts.party}: analytic", one)
        labels = restore_labels(guess[3], n)
        rec = matched(
            dlg(
                model,
                guess,
                n,
                labels=labels,
                iterations=opts.batch_iterations,
                loss="cosine",
                seed=opts.seed,
            ),
            x,
        )
        rows.append(
            _score(
                f"DLG (up to scale) on the view read as an update, batch {n}", rec, x, attack="dlg", batch=n
            )
        )
        _picture(opts, f"MPC {opts.party}: DLG", rec)
    cand = mpc_view.candidates(view, HIDDEN)
    pick, _ = best_match(cand, x)
    rows.append(
        _score(
            f"best of all {len(cand)} candidates per image (oracle)",
            cand[pick],
            x,
            attack="every reading",
            batch=n,
            candidates=len(cand),
        )
    )
    _picture(opts, f"MPC {opts.party}: best candidate", cand[pick])
    control = mpc_view.candidates(_fixed_point(update(mlp(HIDDEN, opts.seed), x[:1], y[:1])), HIDDEN)
    pick, err = best_match(control, x[:1])
    base = baselines(x, indices, data, len(cand), opts.seed)
    return {
        "party": opts.party,
        "protocol": opts.protocol,
        "transport": opts.transport + (" (mutual TLS)" if opts.transport == "tcp" else ""),
        "seconds": seconds,
        "view": counts,
        "attacks": rows,
        "best_of_random_images": {
            "tries": base["tries"],
            "mse": base["best_of_tries"].tolist(),
            "mean_mse": float(base["best_of_tries"].mean()),
            "median_psnr": float(np.median(psnr(base["best_of_tries"]))),
        },
        "control": {
            "setting": "the same reading of a plaintext batch-1 update (fixed point, 16 bits)",
            "candidates": len(control),
            "mse": float(err[0]),
            "psnr": float(psnr(err[0])),
        },
    }


def secure_sum(updates: list[list[np.ndarray]], seed: int) -> list[np.ndarray]:
    """The sum of the clients' updates as the aggregator learns it through covault's SecAgg+
    (:mod:`covault.fl`: fixed point with 32 fractional bits in Z_2^64, no clipping that binds;
    one client: its update itself, there is nothing to aggregate)."""
    from covault.fl.config import RoundConfig
    from covault.fl.quantise import Quantiser
    from covault.fl.simulate import secure_sum as secagg

    shapes = [g.shape for g in updates[0]]
    flat = [np.concatenate([g.reshape(-1) for g in u]) for u in updates]
    if len(flat) == 1:
        total = flat[0]
    else:
        q = Quantiser(SECAGG_CLIP, 32, bits=64, max_clients=len(flat))
        done = secagg(
            [q.encode(v) for v in flat], RoundConfig(clients=len(flat), dim=flat[0].size, seed=seed, bits=64)
        )
        total = q.decode_sum(done.total, len(done.survivors))
    cuts = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
    return [part.reshape(s) for part, s in zip(np.split(total, cuts), shapes)]


def secure_aggregation(opts: Options, data: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Experiment 3a: the aggregator sees only the sum of N clients' batch-1 updates, summed by
    SecAgg+ (:func:`secure_sum`)."""
    model = mlp(HIDDEN, opts.seed)
    out = []
    for n in opts.clients:
        idx = distinct_labels(labels, n)
        x, y = data[idx], labels[idx]
        total = secure_sum([update(model, x[i], y[i]) for i in range(n)], opts.seed)
        cand = analytic.invert_linear(total[0], total[1])
        pick, _ = best_match(to_image(cand), x)
        base = baselines(x, idx, data, len(cand), opts.seed)
        row = {
            "clients": n,
            "analytic": _score("analytic, best row per client (oracle)", cand[pick], x),
            "best_of_random_images": {
                "tries": base["tries"],
                "mean_mse": float(base["best_of_tries"].mean()),
            },
        }
        if n in (4, 16) or n == opts.clients[-1]:
            _picture(opts, f"SecAgg N={n}: analytic", cand[pick])
        if n <= opts.dlg_max_clients:
            mean = [t / n for t in total]  # the update of one batch of the N images
            rec = dlg(
                model,
                mean,
                n,
                labels=restore_labels(mean[3], n),
                iterations=opts.batch_iterations,
                seed=opts.seed,
            )
            row["idlg"] = _score(f"iDLG, batch {n}", matched(rec, x), x)
        out.append(row)
    return out


def differential_privacy(opts: Options, x: np.ndarray, y: np.ndarray) -> dict:
    """Experiment 3b: each batch-1 update clipped to ``clip_norm`` and noised with the DP-SGD
    noise multiplier of each epsilon (PLD accountant, replace-one neighbours,
    :mod:`covault.privacy.accountant`)."""
    from covault.privacy.accountant import epsilon_for, noise_for

    model = mlp(HIDDEN, opts.seed)
    ups = [clip(update(model, x[i], y[i]), opts.clip_norm) for i in range(len(x))]

    settings = [(None, 0.0)] + [
        (e, noise_for(e, opts.delta, opts.sample_rate, opts.steps)) for e in opts.epsilons
    ]
    settings += [
        (epsilon_for(s, opts.sample_rate, opts.steps, opts.delta), s) for s in opts.noise_multipliers
    ]
    rows = []
    for eps, sigma in settings:
        seen = [noisy(u, sigma * opts.clip_norm) for u in ups]
        rec = np.stack([analytic.invert_linear(u[0], u[1], tol=0.0)[0] for u in seen])
        idlg = _idlg_each(opts, model, seen, loss="cosine")
        rows.append(
            {
                "epsilon": eps,
                "noise_multiplier": sigma,
                "analytic": _score("analytic", rec, x),
                "idlg": _score("iDLG (up to scale)", idlg, x),
            }
        )
        if eps is None or eps == 8.0 or sigma in opts.noise_multipliers:
            _picture(opts, f"DP {'clip only' if eps is None else f'σ={sigma:g}'}: analytic", rec)
    return {
        "delta": opts.delta,
        "sample_rate": opts.sample_rate,
        "steps": opts.steps,
        "clip_norm": opts.clip_norm,
        "rows": rows,
    }


def run(opts: Options | None = None) -> dict:
    """All three experiments; a JSON-ready dict (``opts.pictures`` gets the picture rows)."""
    opts = opts or Options()
    if opts.images < 1:
        raise ValueError(f"attack demo: images must be at least 1, got {opts.images}")
    started = time.perf_counter()
    data, labels = load_digits()
    idx = distinct_labels(labels, opts.images)
    x, y = data[idx], labels[idx]
    opts.pictures.clear()
    _picture(opts, "originals", x)
    base = baselines(x, idx, data, 1, opts.seed)
    result = {
        "dataset": f"scikit-learn digits: {len(data)} images of 8x8 pixels scaled to [0, 1]",
        "model": f"MLP 64 -> {HIDDEN} -> 10 (ReLU), first linear layer with bias, mean cross-entropy",
        "images": idx.tolist(),
        "labels": y.tolist(),
        "baselines": {
            "mean_image": _score("the dataset's mean image", np.broadcast_to(data.mean(0), x.shape), x),
            "random_image": {
                "setting": "a random other image (expected MSE)",
                "mse": base["random_image"].tolist(),
                "mean_mse": float(base["random_image"].mean()),
                "median_psnr": float(np.median(psnr(base["random_image"]))),
            },
        },
        "federated": federated(opts, x, y),
        "mpc": under_mpc(opts, x, y, data, idx),
        "secure_aggregation": secure_aggregation(opts, data, labels),
        "dp": differential_privacy(opts, x, y),
    }
    result["seconds"] = time.perf_counter() - started
    return result
