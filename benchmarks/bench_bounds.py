"""Means and public scalings of large tables: exact results, and what the bound-planned scaling
costs (rounds, bytes) next to a plain truncated product.

Usage: python benchmarks/bench_bounds.py [--out FILE]   (in-process parties; rounds and bytes
do not depend on the transport)

Each case is run under both protocols; the table gives the secure result, its error against the
float64 result, and the rounds and bytes of the busiest compute party for the scaling alone.
Before covault tracked bounds, the first three means wrapped around to -2768, -56 and -12.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import covault
from covault.errors import BoundError

CASES = [
    # name, rows, value, declared bound, operation
    ("mean of 1,000 x 30,000", 1_000, 30_000.0, None, "mean"),
    ("mean of 100,000 x 200", 100_000, 200.0, None, "mean"),
    ("mean of 1,000,000 x 20", 1_000_000, 20.0, None, "mean"),
    ("mean of 10,000 x 600", 10_000, 600.0, None, "mean"),
    ("mean of 1,000,000 x 20, bound 32", 1_000_000, 20.0, 32.0, "mean"),
    ("mean of 128 x 3.5 (one truncation)", 128, 3.5, None, "mean"),
    ("sum of 65,536 x 30,000, times 3.7", 65_536, 30_000.0, None, "times"),
    ("sum of 2^20 x 1, times 3000.7", 1 << 20, 1.0, None, "times"),
]


def program(case):
    _, rows, value, bound, op = case

    def prog(s):
        owner = s.compute_parties[0]
        x = s.input(np.full(rows, value) if s.party == owner else None, owner=owner, bound=bound)
        with s.scope() as cost:
            try:
                y = x.mean() if op == "mean" else x.sum() * 3.7 if value > 1 else x.sum() * 3000.7
            except BoundError as e:
                return str(e).split(";")[0], cost.as_dict()
        out = y.reveal()
        return (None if out is None else float(out)), cost.as_dict()

    return prog


def exact(case) -> float:
    _, rows, value, _, op = case
    if op == "mean":
        return value
    return rows * value * (3.7 if value > 1 else 3000.7)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = ["# covault bound-planned scalings (f = 16); cost of the scaling step, busiest compute party"]
    lines.append(f"{'case':38} {'proto':5} {'result':>22} {'error':>10} {'rounds':>6} {'bytes':>8}")
    for case in CASES:
        for proto, n in (("2pc", 2), ("rep3", 3)):
            res = covault.run(program(case), n, proto)
            parties = [p for p in res if p != "dealer"]
            value, _ = res[parties[0]]
            rounds = max(res[p][1]["rounds"] for p in parties)
            sent = max(res[p][1]["bytes_sent"] for p in parties)
            if isinstance(value, str):
                shown, err = "BoundError", "refused"
            else:
                shown, err = f"{value:.6f}", f"{abs(value - exact(case)):.2e}"
            lines.append(f"{case[0]:38} {proto:5} {shown:>22} {err:>10} {rounds:6d} {sent:8d}")
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
