"""DP-SGD inside MPC: the cost of a private epoch against the non-private secure epoch, and
accuracy against epsilon.

Data: scikit-learn's breast cancer (569 rows, 30 features; the ``covault demo`` data) and
digits as a binary task (1797 rows, 64 pixels; label: digit >= 5), features scaled to [0, 1]
by public ranges (breast cancer: the per-feature maxima that scikit-learn's description of the
data lists; digits: pixel values / 16), a 70/30 split by a public permutation.

1. Cost (breast cancer, logistic regression, piecewise sigmoid, batch 64, one oblivious
   shuffle): ``fit`` for ``--epochs`` epochs, non-private vs DP-SGD (noise multiplier given,
   so the plaintext accountant is not in the timing); time at the first compute party (median
   of ``--repeats`` runs), bytes sent by all parties and rounds of P0; the DP run's one-time
   set-up (clipping bounds, noise inputs, the sampling seed) measured on its own and included.
2. Accuracy vs epsilon (delta 1e-5, clipping norm 1, ``--epochs`` epochs, mean over
   ``--seeds`` runs): secure DP-SGD (2pc), non-private secure training, and the plaintext
   DP-SGD twin (:func:`covault.ml.dp.reference_dpsgd`, float64, the same algorithm with CSPRNG
   noise and Poisson batches).

``--model mlp``: the same two tables for the MLP (one hidden layer of ``MLP_HIDDEN`` units,
softmax of two classes; :func:`covault.ml.dp.fit_private_mlp`, twin
:func:`covault.ml.dp.reference_dpsgd_mlp`).

    python benchmarks/bench_dp.py [--model logistic|mlp] [--epochs 10] [--repeats 3] [--seeds 3] [--no-cost] [--out benchmarks/results/dp.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits

import covault
from covault import ml
from covault.ml.dp import reference_dpsgd, reference_dpsgd_mlp
from covault.privacy import dpsgd, noise
from covault.privacy.dpsgd import DPSGD
from covault.randomness.prg import PRG, new_seed
from covault.randomness.public import public_permutation

EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
KW = dict(learning_rate=0.5, batch_size=64, momentum=0.5, standardize=False, shuffle="once", seed=0)
MLP_HIDDEN = 16
MLP_KW = dict(KW, hidden=(MLP_HIDDEN,), n_classes=2)


def estimator(model: str, epochs: int):
    """The secure estimator of ``model`` ("logistic" or "mlp")."""
    if model == "mlp":
        return ml.MLPClassifier(epochs=epochs, **MLP_KW)
    return ml.LogisticRegression(epochs=epochs, **KW)


def dataset(name: str):
    if name == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
        x = x / x.max(axis=0)  # the public per-feature maxima of the data's description
    else:
        x, y = load_digits(return_X_y=True)
        x, y = x / 16.0, (y >= 5).astype(float)
    perm = public_permutation(0, f"bench_dp/{name}", len(y))
    cut = int(0.7 * len(y))
    tr, te = perm[:cut], perm[cut:]
    enc = np.round(x * 2**16) / 2**16
    return enc[tr], y[tr].astype(float), enc[te], y[te].astype(float)


def secure_fit(proto: str, n: int, x, y, xt, yt, epochs: int, privacy: DPSGD | None, model: str = "logistic"):
    """``(seconds per epoch at P0, bytes per epoch sent by all, rounds per epoch at P0, held-out
    accuracy, whole fit seconds at P0)``; per epoch: from the end of epoch 1 to the end of the last
    (steady state: no set-up, no accounting)."""

    def prog(s):
        p0 = s.compute_parties[0]
        xs = s.input(x if s.party == p0 else None, p0, bound=1.5)
        ys = s.input(y if s.party == p0 else None, p0)
        marks = []

        def mark(_epoch: int) -> None:
            marks.append((time.perf_counter(), s.stats.bytes_sent, s.stats.rounds, time.thread_time()))

        t = time.perf_counter()
        est = estimator(model, epochs).fit(xs, ys, privacy=privacy, on_epoch=mark)
        whole = time.perf_counter() - t
        (t1, b1, r1, c1), (t2, b2, r2, c2) = marks[0], marks[-1]
        k = max(1, len(marks) - 1)
        public = est.reveal()
        acc = None if public is None else float(np.mean(public.predict(xt) == yt))
        return (t2 - t1) / k, (b2 - b1) / k, (r2 - r1) / k, acc, whole, (c2 - c1) / k

    res = covault.run(prog, n, proto)
    p0 = res["p0"]
    return p0[0], sum(r[1] for r in res.values()), p0[2], p0[3], p0[4], p0[5]


def plaintext_dp(x, y, xt, yt, epochs: int, privacy: DPSGD, model: str = "logistic") -> float:
    q, steps = privacy.schedule(len(y), KW["batch_size"], epochs)
    sig = privacy.sigma(q, steps)
    positions = dpsgd.poisson_positions(new_seed(), len(y), q, steps)
    if model == "mlp":
        public = ml.ReferenceMLPClassifier(epochs=epochs, **MLP_KW)
        d = x.shape[1]
        size = (d + 1) * MLP_HIDDEN + (MLP_HIDDEN + 1) * 2
        z = noise.gaussian(PRG(new_seed()), (steps, size), sig * privacy.max_grad_norm)
        public.coefs_, public.intercepts_ = reference_dpsgd_mlp(public, x, y, privacy, positions, z)
        public.n_features_in_ = d
        return float(np.mean(public.predict(xt) == yt))
    params = ml.ReferenceLogisticRegression(epochs=epochs, **KW)
    z = noise.gaussian(PRG(new_seed()), (steps, x.shape[1] + 1), sig * privacy.max_grad_norm)
    w, b = reference_dpsgd(params, x, y, privacy, positions, z)
    return float(np.mean(((xt @ w + b) > 0) == yt))


def cost_table(args) -> list[str]:
    x, y, xt, yt = dataset("breast_cancer")
    priv = DPSGD(noise_multiplier=1.0)
    q, steps = priv.schedule(len(y), KW["batch_size"], args.epochs)
    t = time.perf_counter()
    priv.spent(1.0, q, steps)
    acct = time.perf_counter() - t
    what = f"an MLP (30-{MLP_HIDDEN}-2, ReLU, softmax)" if args.model == "mlp" else "logistic regression"
    lines = [
        f"1. cost: breast cancer, {len(y)} training rows, 30 features, {what}, batch 64, "
        f"{args.epochs} epochs (DP: noise multiplier 1.0, C = 1, Poisson rate 64/{len(y)}, {steps} steps); "
        f"per epoch: epochs 2..{args.epochs} (steady state), median of {args.repeats} interleaved runs; 's/epoch': "
        f"wall time at P0, 'cpu s': P0's thread CPU time; 'ratio': median of the DP / non-private pairs; 'fit s': the "
        f"whole fit (DP: with the one-time clipping bounds, noise inputs, sampling seed and the plaintext "
        f"PLD accounting, {acct:.2f} s alone in one thread)",
        f"{'protocol':<10}{'training':<14}{'s/epoch':>9}{'cpu s':>9}{'MB/epoch':>10}{'rounds/epoch':>14}"
        f"{'fit s':>8}{'ratio':>8}{'cpu ratio':>10}",
    ]
    for proto, n in (("2pc", 2), ("rep3", 3)):
        runs: dict[str, list] = {"non-private": [], "DP-SGD": []}
        for _ in range(args.repeats):  # interleaved: both see the same load
            runs["non-private"].append(secure_fit(proto, n, x, y, xt, yt, args.epochs, None, args.model))
            runs["DP-SGD"].append(secure_fit(proto, n, x, y, xt, yt, args.epochs, priv, args.model))
        ratios = [d[0] / p[0] for p, d in zip(runs["non-private"], runs["DP-SGD"])]
        cpu_ratios = [d[5] / p[5] for p, d in zip(runs["non-private"], runs["DP-SGD"])]
        for label, rs in runs.items():
            dp_row = label == "DP-SGD"
            lines.append(
                f"{proto:<10}{label:<14}{statistics.median(r[0] for r in rs):>9.4f}"
                f"{statistics.median(r[5] for r in rs):>9.4f}{rs[0][1] / 1e6:>10.3f}{rs[0][2]:>14.1f}"
                f"{statistics.median(r[4] for r in rs):>8.3f}"
                f"{statistics.median(ratios) if dp_row else 1.0:>8.2f}"
                f"{statistics.median(cpu_ratios) if dp_row else 1.0:>10.2f}"
            )
    return lines


def accuracy_table(args, name: str) -> list[str]:
    x, y, xt, yt = dataset(name)
    head = f"{'epsilon':>8}{'secure DP (2pc)':>17}{'plaintext DP twin':>19}{'sigma':>8}"
    lines = [
        f"2. accuracy vs epsilon: {name}, {args.model}, {len(y)} training / {len(yt)} held-out rows, delta 1e-5, C = 1, "
        f"{args.epochs} epochs, mean of {args.seeds} runs",
        head,
    ]
    for eps in EPSILONS:
        priv = DPSGD(epsilon=eps, delta=1e-5, max_grad_norm=1.0)
        q, steps = priv.schedule(len(y), KW["batch_size"], args.epochs)
        sig = priv.sigma(q, steps)
        fixed = DPSGD(noise_multiplier=sig, delta=1e-5, max_grad_norm=1.0)
        sec = [
            secure_fit("2pc", 2, x, y, xt, yt, args.epochs, fixed, args.model)[3] for _ in range(args.seeds)
        ]
        ref = [plaintext_dp(x, y, xt, yt, args.epochs, fixed, args.model) for _ in range(args.seeds)]
        lines.append(f"{eps:>8g}{np.mean(sec):>17.3f}{np.mean(ref):>19.3f}{sig:>8.3f}")
    nonpriv = secure_fit("2pc", 2, x, y, xt, yt, args.epochs, None, args.model)[3]
    lines.append(f"{'inf':>8}{nonpriv:>17.3f}{'(non-private secure)':>19}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("logistic", "mlp"), default="logistic")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--digits", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cost", action=argparse.BooleanOptionalAction, default=True, help="table 1")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines = [
        f"covault DP-SGD benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {sys.version.split()[0]}, local transport (threads)",
        "",
    ]
    if args.cost:
        lines += cost_table(args)
        lines.append("")
    lines += accuracy_table(args, "breast_cancer")
    if args.digits:
        lines.append("")
        lines += accuracy_table(args, "digits")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
