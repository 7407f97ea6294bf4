"""Held-out metrics for imbalanced classes: seconds, bytes and rounds per metric and size.

Usage: python benchmarks/bench_metrics.py [--rows 2000 20000 200000] [--protocols 2pc rep3]
[--repeat 3] [--transport local|tcp] [--bound B] [--out FILE]

Synthetic held-out set with 10% positives and real-valued scores (distinct after encoding),
input by the first compute party. For each size and protocol, each metric runs ``--repeat``
times in one computation; the best wall time of the first compute party is reported (the
machine is shared, so times are noisy), with the bytes it SENT, its rounds and the dealer's
offline bytes (2pc). ``--bound`` declares the scores' public bound (``session.input``): below
``2^14`` (16 fractional bits) the sort compares on 32 bits instead of 64. Checked against
scikit-learn on the revealed values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn import metrics as skm

import covault
from covault import ml

METRICS = ("roc_auc (sort)", "average_precision", "precision", "recall", "f1", "roc_auc (pairs)")
PAIRS_MAX = 2000  # the pairwise AUC only at this size and below


def data(n: int):
    rng = np.random.default_rng(3)  # synthetic test data only, not secret
    y = (rng.random(n) < 0.1).astype(np.float64)
    noisy = rng.normal(size=n) + 1.2 * y
    score = np.argsort(np.argsort(noisy)) / n * 8 - 4
    return y, score, (noisy > 1.0).astype(np.float64)


def program(n: int, repeat: int, bound: float | None):
    y_all, s_all, p_all = data(n)

    def prog(s):
        a = s.compute_parties[0]
        mine = s.party == a
        y = s.input(y_all if mine else None, owner=a)
        score = s.input(s_all if mine else None, owner=a, bound=bound)
        pred = s.input(p_all if mine else None, owner=a, integer=True)
        calls = {
            "roc_auc (sort)": lambda: ml.roc_auc_score(y, score),
            "average_precision": lambda: ml.average_precision_score(y, score),
            "precision": lambda: ml.precision_score(y, pred),
            "recall": lambda: ml.recall_score(y, pred),
            "f1": lambda: ml.f1_score(y, pred),
            "roc_auc (pairs)": lambda: ml.roc_auc_score(y, score, method="pairs"),
        }
        out = {}
        for name in METRICS:
            if name == "roc_auc (pairs)" and n > PAIRS_MAX:
                continue
            best = None
            for _ in range(repeat):
                t0 = time.perf_counter()
                with s.scope() as cost:
                    value = calls[name]()
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
            out[name] = (value, best, cost.bytes_sent, cost.rounds)
        return out

    return prog


def reference(n: int) -> dict[str, float]:
    y, score, pred = data(n)
    score = np.round(score * 2**16) / 2**16
    return {
        "roc_auc (sort)": skm.roc_auc_score(y, score),
        "average_precision": skm.average_precision_score(y, score),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc (pairs)": skm.roc_auc_score(y, score),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[2000, 20000, 200000])
    ap.add_argument("--protocols", nargs="+", default=["2pc", "rep3"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--transport", default="local")
    ap.add_argument("--bound", type=float, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines = [
        f"{'rows':>7} {'protocol':8} {'metric':18} {'seconds':>8} {'MB sent':>9} {'rounds':>6} {'dealer MB':>9} {'|err|':>8}"
    ]
    print(lines[0], flush=True)
    for n in args.rows:
        ref = reference(n)
        for proto in args.protocols:
            k = 2 if proto == "2pc" else 3
            res = covault.run(
                program(n, args.repeat, args.bound), k, proto, transport=args.transport, timeout=600
            )
            dealer = res.get("dealer") or {}
            for name, (value, secs, sent, rounds) in res["p0"].items():
                dmb = f"{dealer[name][2] / 1e6:9.2f}" if name in dealer else f"{'-':>9}"
                line = (
                    f"{n:>7} {proto:8} {name:18} {secs:8.3f} {sent / 1e6:9.2f} {rounds:>6} {dmb} "
                    f"{abs(value - ref[name]):8.1e}"
                )
                lines.append(line)
                print(line, flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
