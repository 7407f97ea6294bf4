"""Engine benchmarks over real processes: secure op time vs plaintext, bytes and rounds.

Usage: python benchmarks/bench_engine.py [--transport tcp|local] [--tls] [--quick] [--only NAME ...]

For each protocol, every party runs the same program in its own OS process. Inputs are shared
first; each timed operation starts after a barrier that includes the dealer (so 2pc dealer work
is inside the timing) and ends when the last compute party has its result shares. Reported time
is the median over repetitions of the slowest compute party. Plaintext (float64 numpy) runs in
the same process for the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import covault

REPS = 3
EL = 8


def _barrier(s):
    # a tiny opening to every party, dealer included: nobody starts the next step early
    s.constant(np.zeros(1), integer=True).reveal(to=list(s.parties))


def _time_op(s, fn, reps):
    times, costs = [], []
    for _ in range(reps):
        _barrier(s)
        with s.scope() as cost:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        costs.append(cost.as_dict())
    return times, costs[-1]


def program(s, case: str, n: int, reps: int):
    owner_a, owner_b = s.compute_parties[0], s.compute_parties[1]
    gen = np.random.default_rng(5)  # benchmark data only
    if case == "matmul":
        a = s.input(gen.uniform(-1, 1, (n, n)) if s.party == owner_a else None, owner=owner_a)
        b = s.input(gen.uniform(-1, 1, (n, n)) if s.party == owner_b else None, owner=owner_b)
        fn = lambda: a @ b  # noqa: E731
    else:
        a = s.input(gen.uniform(-10, 10, n) if s.party == owner_a else None, owner=owner_a)
        b = s.input(gen.uniform(-10, 10, n) if s.party == owner_b else None, owner=owner_b)
        fn = {
            "mul": lambda: a * b,
            "gtz": lambda: a > 0,
            "sigmoid": lambda: a.sigmoid(),
        }[case]
    fn()  # warm up (allocations, torch kernels)
    times, cost = _time_op(s, fn, reps)
    return {"times": times, "cost": cost}


CASES = {
    # name: (size, plaintext fn, target seconds or ratio, theory(protocol) -> (elements sent/party, rounds))
    "matmul": (1000, "6x plaintext"),
    "mul": (1_000_000, "0.08 s"),
    "gtz": (1_000_000, "0.5 s"),
    "sigmoid": (1_000_000, "1 s"),
}


def theory(case: str, protocol: str, n: int) -> str:
    if case == "matmul":
        m = n * n
        return (
            f"2pc: E,F {2 * m * EL / 1e6:.0f} MB + trunc {m * EL / 1e6:.0f} MB, 2 rounds"
            if protocol == "2pc"
            else f"rep3 fused, dealer rotated over thirds: {8 / 3 * m * EL / 1e6:.1f} MB each, 2 rounds"
        )
    if case == "mul":
        return (
            f"2pc: {3 * n * EL / 1e6:.0f} MB, 2 rounds"
            if protocol == "2pc"
            else f"rep3 fused, dealer rotated over thirds: {8 / 3 * n * EL / 1e6:.1f} MB each, 2 rounds"
        )
    return "see docs/protocols.md"


def plaintext(case: str, n: int) -> float:
    gen = np.random.default_rng(5)
    if case == "matmul":
        a, b = gen.uniform(-1, 1, (n, n)), gen.uniform(-1, 1, (n, n))
        fn = lambda: a @ b  # noqa: E731
    else:
        a, b = gen.uniform(-10, 10, n), gen.uniform(-10, 10, n)
        fn = {"mul": lambda: a * b, "gtz": lambda: a > 0, "sigmoid": lambda: 1 / (1 + np.exp(-a))}[case]
    fn()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", default="tcp", choices=["tcp", "local"])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", default=None, help="write JSON results here")
    ap.add_argument("--tls", action="store_true", help="mutual TLS between parties (default: plain loopback)")
    args = ap.parse_args()
    rows = []
    for case, (size, target) in CASES.items():
        if args.only and case not in args.only:
            continue
        n = max(10, size // 100) if args.quick else size
        plain = plaintext(case, n)
        for protocol, parties in (("2pc", 2), ("rep3", 3)):
            res = covault.run(
                _Program(case, n, REPS),
                parties,
                protocol,
                transport=args.transport,
                timeout=120,
                **({"tls": args.tls} if args.transport == "tcp" else {}),
            )
            compute = [p for p in res if p != "dealer"]
            per_rep = [max(res[p]["times"][i] for p in compute) for i in range(REPS)]
            secs = statistics.median(per_rep)
            sent = max(res[p]["cost"]["bytes_sent"] for p in compute)
            rounds = max(res[p]["cost"]["rounds"] for p in compute)
            dealer = res.get("dealer", {}).get("cost", {}).get("bytes_sent", 0)
            rows.append(
                {
                    "case": case,
                    "protocol": protocol,
                    "n": n,
                    "seconds": secs,
                    "plaintext": plain,
                    "ratio": secs / plain,
                    "mb_sent_per_party": sent / 1e6,
                    "dealer_mb": dealer / 1e6,
                    "rounds": rounds,
                    "target": target,
                    "theory": theory(case, protocol, n),
                }
            )
            r = rows[-1]
            print(
                f"{case:<8} {protocol:<5} n={n:<8} secure {secs:8.4f} s  plain {plain:8.5f} s  "
                f"ratio {r['ratio']:8.1f}x  sent/party {r['mb_sent_per_party']:7.1f} MB  "
                f"dealer {r['dealer_mb']:6.1f} MB  rounds {rounds:3d}  target {target}  | {r['theory']}",
                flush=True,
            )
    if args.out:
        meta = {"python": sys.version.split()[0], "machine": platform.machine(), "transport": args.transport}
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


class _Program:
    """Picklable program object (the tcp transport starts fresh processes)."""

    def __init__(self, case: str, n: int, reps: int):
        self.case, self.n, self.reps = case, n, reps

    def __call__(self, s):
        return program(s, self.case, self.n, self.reps)


if __name__ == "__main__":
    sys.exit(main())
