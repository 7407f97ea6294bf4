"""Dealer-free 2pc (provider "ot") next to 2pc with a dealer, in one run.

Usage: python benchmarks/bench_dealerfree.py [--n N] [--rows R] [--out FILE]

Each workload runs over TCP with mutual TLS, one OS process per party (two with ``ot``, three
with the dealer), on this machine's loopback: products of ``N`` values, ``x > 0`` on ``N``
values, the sigmoid of ``N`` values, one epoch of logistic regression on ``R x 30``
(batches of 128, the piecewise sigmoid, no oblivious shuffle) and the oblivious shuffle of
``R x 31`` (features and label: with the dealer its permutation correlation, with ``ot`` two
Beneš networks over correlated OT, :mod:`covault.ops.benes`).
Reported per workload and provider: P0's wall time of the step (inputs excluded; the OT
extension's base OTs are run once before), P0's bytes sent (with the dealer also the dealer's,
which P1 receives) and P0's rounds (flights; the dealer's traffic and the OT provider's
correlations alike are generated in line, on demand).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

import covault
from covault.ml import LogisticRegression
from covault.ops.shuffle import shuffle_rows


def _own(s, value):
    return value if s.party == s.compute_parties[0] else None


def _program(s, work: str, n: int, rows: int) -> dict | None:
    if s.party not in s.compute_parties and s.party != "dealer":
        return None
    g = np.random.default_rng(1)  # benchmark data, not secret
    if work == "shuffle":
        x = s.input(_own(s, g.normal(size=(rows, 31))), s.compute_parties[0], bound=64.0)
        y = x[:, :1]
    elif work == "lr":
        x = s.input(_own(s, g.normal(size=(rows, 30))), s.compute_parties[0], bound=64.0)
        y = s.input(_own(s, (g.random(rows) < 0.5).astype(float)), s.compute_parties[0])
    else:
        x = s.input(_own(s, g.uniform(-8, 8, n)), s.compute_parties[0], bound=16.0)
        y = s.input(_own(s, g.uniform(-8, 8, n)), s.compute_parties[0], bound=16.0)
    # base OTs, pools, engines
    warm = {"lr": lambda: x[:8, 0] * y[:8], "shuffle": lambda: x[:8, 0] * y[:8, 0]}.get(
        work, lambda: x[:8] * y[:8]
    )()
    warm.reveal()
    t, cpu = time.perf_counter(), time.process_time()
    with s.scope() as cost:
        if work == "mul":
            out = x * y
        elif work == "positive":
            out = x > 0
        elif work == "sigmoid":
            out = x.sigmoid()
        elif work == "shuffle":
            out = shuffle_rows(x)
        else:
            model = LogisticRegression(
                epochs=1, batch_size=128, shuffle="none", sigmoid="piecewise", standardize=False
            )
            out = model.fit(x, y).secret_coef_
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    del out
    return {
        "seconds": seconds,
        "cpu": cpu,
        "sent": cost.bytes_sent,
        "received": cost.bytes_received,
        "rounds": cost.rounds,
    }


def measure(work: str, provider: str, n: int, rows: int) -> dict:
    res = covault.run(_program_for(work, n, rows), 2, "2pc", provider=provider, transport="tcp", timeout=3600)
    p0 = res["p0"]
    p0["dealer_sent"] = res["dealer"]["sent"] if "dealer" in res else 0
    return p0


def _program_for(work: str, n: int, rows: int):
    import functools

    return functools.partial(_program, work=work, n=n, rows=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="values for products, x > 0, sigmoid")
    ap.add_argument("--rows", type=int, default=10_000, help="rows of the logistic regression (30 columns)")
    ap.add_argument("--only", nargs="*", default=["mul", "positive", "sigmoid", "lr", "shuffle"])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dealerfree.txt")
    args = ap.parse_args()
    header = [
        "# dealer-free 2pc (provider ot) vs 2pc with a dealer; TCP loopback, mutual TLS, one process per party",
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}; "
        f"load average {os.getloadavg()[0]:.1f} at the start (a shared host)",
        f"# command: python benchmarks/bench_dealerfree.py --n {args.n} --rows {args.rows} --only {' '.join(args.only)}",
        "# time: P0's wall seconds of the step; CPU: P0's process time (what the host's load does not inflate); sent: P0's bytes (dealer: the dealer's); rounds: P0's flights",
        "",
        f"{'workload':<28} {'provider':<8} {'seconds':>9} {'CPU s':>7} {'P0 sent MB':>11} {'dealer MB':>10} {'rounds':>7}",
    ]
    print("\n".join(header), flush=True)
    lines = list(header)
    names = {
        "mul": f"products, {args.n:,}",
        "positive": f"x > 0, {args.n:,}",
        "sigmoid": f"sigmoid, {args.n:,}",
        "lr": f"LR {args.rows:,} x 30, 1 epoch",
        "shuffle": f"shuffle {args.rows:,} x 31",
    }
    for work in args.only:
        for provider in ("dealer", "ot"):
            r = measure(work, provider, args.n, args.rows)
            line = (
                f"{names[work]:<28} {provider:<8} {r['seconds']:>9.2f} {r['cpu']:>7.2f} {r['sent'] / 1e6:>11.1f} "
                f"{r['dealer_sent'] / 1e6:>10.1f} {r['rounds']:>7}"
            )
            print(line, flush=True)
            lines.append(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
