"""Accuracy cost of differential privacy for a secure mean: central DP (Laplace noise added inside
MPC before the reveal) against local DP (each owner noises its own rows before sharing them).

Usage: python benchmarks/bench_dp_stats.py [--reps 200] [--protocol 2pc|rep3]

Data: scikit-learn's breast cancer table (569 rows), column "mean radius" (6.98-28.11), public
bounds [0, 30]; the rows are split between two data owners (285 / 284 rows). For each epsilon,
over ``--reps`` repetitions: the central release is
``PrivateStatistics.mean`` (clipping and noise inside MPC, one part of Laplace(30 / (n eps))
per compute party); the local one noises every row at its owner
(:func:`covault.privacy.mechanisms.bounded_laplace`, scale 30 / eps), then takes the exact
secure mean of the noisy rows (all repetitions as columns of one secure sum). Reported: the
mean absolute error against the plaintext mean, in raw units and in % of the mean, and the
standard deviation the mechanism predicts.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

import covault
from covault.privacy.ledger import Ledger
from covault.privacy.mechanisms import bounded_laplace
from covault.privacy.statistics import Budget, PrivateStatistics
from covault.randomness.prg import PRG, new_seed

EPSILONS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
LO, HI = 0.0, 30.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--protocol", choices=["2pc", "rep3"], default="2pc")
    args = ap.parse_args()
    data = load_breast_cancer()
    col = data.data[:, list(data.feature_names).index("mean radius")]
    halves = {"p0": col[:285], "p1": col[285:]}
    n, truth = len(col), float(np.clip(col, LO, HI).mean())
    parties = 2 if args.protocol == "2pc" else 3
    folder = Path(tempfile.mkdtemp(prefix="covault-dp-bench-"))
    ledger = Ledger(folder / "owners.privacy.sqlite")

    def central(s):
        a = s.input(halves["p0"] if s.party == "p0" else None, owner="p0", bound=64.0)
        b = s.input(halves["p1"] if s.party == "p1" else None, owner="p1", bound=64.0)
        x = covault.concatenate([a, b])
        owner = s.party in ("p0", "p1")
        dp = PrivateStatistics(
            s, owners=("p0", "p1"), budget=Budget(ledger, None, "bench") if owner else None
        )
        out = {}
        for eps in EPSILONS:
            out[eps] = [dp.mean(x, (LO, HI), epsilon=eps).value for _ in range(args.reps)]
        return out

    def local(s):
        out = {}
        for eps in EPSILONS:
            mine = None
            if s.party in halves:
                rows = np.repeat(halves[s.party][:, None], args.reps, axis=1)
                mine = bounded_laplace(PRG(new_seed()), rows, (LO, HI), eps)
            bound = HI + 40 * (HI - LO) / eps
            a = s.input(mine if s.party == "p0" else None, owner="p0", bound=bound)
            b = s.input(mine if s.party == "p1" else None, owner="p1", bound=bound)
            total = covault.concatenate([a, b]).sum(axis=0).reveal()
            out[eps] = None if total is None else total / n
        return out

    c = covault.run(central, parties, args.protocol, timeout=600)["p0"]
    loc = covault.run(local, parties, args.protocol, timeout=600)["p0"]
    m = parties
    lines = [
        f"secure mean of breast cancer 'mean radius' (n = {n}, two owners, bounds [0, 30], true mean "
        f"{truth:.4f}), {args.protocol}, {args.reps} repetitions per epsilon",
        f"{'epsilon':>8} | {'central DP: MAE':>16} {'(% of mean)':>11} {'predicted sd':>12} | "
        f"{'local DP: MAE':>14} {'(% of mean)':>11} {'predicted sd':>12}",
    ]
    for eps in EPSILONS:
        ce = float(np.mean(np.abs(np.array(c[eps], dtype=np.float64) - truth)))
        le = float(np.mean(np.abs(np.asarray(loc[eps]) - truth)))
        csd = math.sqrt(2 * m) * (HI - LO) / (n * eps)  # m full Laplace parts
        lsd = math.sqrt(2) * (HI - LO) / (eps * math.sqrt(n))
        lines.append(
            f"{eps:>8g} | {ce:>16.4f} {100 * ce / truth:>10.3f}% {csd:>12.4f} | "
            f"{le:>14.4f} {100 * le / truth:>10.2f}% {lsd:>12.4f}"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
