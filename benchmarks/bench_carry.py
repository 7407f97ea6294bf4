"""The comparison's carry trees: radix-4 (one-round multi-input ANDs) against binary, 2pc with a dealer.

Usage: python benchmarks/bench_carry.py [--out FILE] [--sizes 1,64,1024,16384] [--rtt 0,1] [--reps 9]

``x < 0`` (``covault.ops.compare.less_than``: the msb and its conversion) of ``n`` secret values
with the default bound (64-bit words), over TCP with mutual TLS, one process per party (P0, P1
and the dealer), with a one-way delay of ``RTT / 2`` on every message (``benchmarks/common.py``).
Trees: ``radix-4`` (:func:`covault.ops.compare._carry_fused`, what 2pc with the dealer runs up to
``FUSED_ELEMENTS`` elements) and ``binary`` (:func:`covault.ops.compare._carry_tree`, what it runs
beyond, and every protocol without a one-round ``and_many``), each forced for every size.
Time: the slower compute party's wall time per call (median of ``R`` calls); bytes per value:
sent by P0 (online) and by the dealer (offline); rounds: P0's. Every answer is checked against
plaintext.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from common import DelayedTransport, barrier, emit

import covault
from covault.ops import compare

TREES = {"radix-4": 1 << 40, "binary": 0}  # FUSED_ELEMENTS forcing each tree


def _program(s, sizes: Sequence[int], rtts: Sequence[float], reps: int) -> dict:
    owner = s.compute_parties[0]
    base = s.net.transport
    out: dict = {}
    for n in sizes:
        vals = np.random.default_rng(n).uniform(-1000, 1000, n)  # benchmark data, not secret
        vals[:3] = np.array([0.0, 2.0**-16, -(2.0**-16)])[:n]
        x = s.input(vals if s.party == owner else None, owner)
        want = (np.round(vals * 2**16) < 0).astype(np.float64)
        for tree, limit in TREES.items():
            compare.FUSED_ELEMENTS = limit
            _ = x < 0  # warm-up at this size and tree (first-call costs: plans, buffers)
            for rtt in rtts:
                times, cpus = [], []
                for _ in range(reps):
                    barrier(s, base)
                    s.net.transport = DelayedTransport(base, rtt / 2e3)
                    t, c = time.perf_counter(), time.process_time()
                    with s.scope() as cost:
                        y = x < 0
                    times.append(time.perf_counter() - t)
                    cpus.append(time.process_time() - c)
                    s.net.transport = base
                got = y.reveal()
                ok = got is None or bool(np.array_equal(got, want))
                out[tree, n, rtt] = (
                    float(np.median(times)),
                    cost.bytes_sent,
                    cost.rounds,
                    ok,
                    float(np.median(cpus)),
                )
    return out


def table(sizes: Sequence[int], rtts: Sequence[float], reps: int) -> list[str]:
    res = covault.run(
        functools.partial(_program, sizes=tuple(sizes), rtts=tuple(rtts), reps=reps),
        2,
        "2pc",
        transport="tcp",
        tls=True,
        timeout=600,
    )
    lines = [
        "x < 0 of n values (64-bit words), 2pc with the dealer over TCP/TLS, one process per party, "
        "one-way delay RTT/2 per message;",
        "ms: the slower of P0 and P1, median of calls; cpu ms: the three processes' CPU per call (medians,"
        " summed; waiting in the transport included); B/value: P0 online, dealer offline; rounds: P0's",
        f"{'n':>7} {'RTT ms':>6} {'tree':<8} {'ms':>8} {'cpu ms':>7} {'online':>7} {'dealer':>7} {'rounds':>6} exact",
    ]
    for n in sizes:
        for rtt in rtts:
            for tree in TREES:
                secs = max(res[p][tree, n, rtt][0] for p in ("p0", "p1"))
                cpu = sum(res[p][tree, n, rtt][4] for p in res)
                ok = all(res[p][tree, n, rtt][3] for p in res)
                _, sent, rounds, _, _ = res["p0"][tree, n, rtt]
                dealt = res["dealer"][tree, n, rtt][1]
                lines.append(
                    f"{n:>7} {rtt:>6g} {tree:<8} {secs * 1e3:>8.3f} {cpu * 1e3:>7.3f} {sent / n:>7.2f} "
                    f"{dealt / n:>7.2f} {rounds:>6} {'yes' if ok else 'NO'}"
                )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",") if x], default=[1, 64, 1024, 16384]
    )
    ap.add_argument("--rtt", type=lambda v: [float(x) for x in v.split(",") if x], default=[0.0, 1.0])
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    lines = [
        f"bench_carry on {platform.node()}: {os.cpu_count()} cores, python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the start",
        "",
        *table(args.sizes, args.rtt, args.reps),
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
