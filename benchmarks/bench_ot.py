"""Oblivious transfer between two real processes over mutual TLS on loopback.

Runs the Chou-Orlandi base OTs once, then IKNP/ALSZ extension: random OT for every ``--random``
count (the first count twice: a first call pays for buffers and
TCP windows), correlated OT (1 word) and chosen-message OT (16 bytes) for ``--other``. Prints the
time at the slower party (base OTs apart), OTs per second, payload bytes per OT each way next to
IKNP's theory, rounds, and the per-step costs of one batch measured in this process.

    python benchmarks/bench_ot.py [--random 1000000 10000000] [--other 1000000]
                                  [--batch 262144] [--no-tls] [--out benchmarks/results/ot.txt]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time

import cryptography
import numpy as np

import covault
from covault.protocols.ot import OTExtReceiver, OTExtSender, session_channel
from covault.protocols.ot.base import random_choices
from covault.protocols.ot.bits import ColumnPRG, transpose
from covault.protocols.ot.crhash import FixedKeyHash
from covault.protocols.ot.extension import BATCH


def bench_program(session, plan: list[tuple[str, int]], batch: int):
    """p0 sends, p1 receives; every step of ``plan`` timed, with its cost."""
    if session.party not in ("p0", "p1"):  # the 2pc dealer idles
        return None
    ch = session_channel(session)
    sender = session.party == "p0"
    side = OTExtSender(ch, batch=batch) if sender else OTExtReceiver(ch, batch=batch)
    rows = []
    t0, c0 = time.perf_counter(), time.process_time()
    with session.net.scope() as cost:
        side.setup()
    rows.append(("base OT (128)", 128, time.perf_counter() - t0, time.process_time() - c0, cost.as_dict()))
    for op, n in plan:
        if sender:
            delta = np.ones((n, 1), np.int64) if op == "correlated" else None
            msgs = np.zeros((n, 16), np.uint8) if op == "chosen" else None
        else:
            c = random_choices(n) if op != "random" else None
        t0, c0 = time.perf_counter(), time.process_time()
        with session.net.scope() as cost:
            if op == "random":
                side.random_ot(n)
            elif op == "correlated":
                side.cot_send(n, delta) if sender else side.cot_recv(c, 1)
            else:
                side.chosen_ot(msgs, msgs) if sender else side.chosen_ot(c, 16)
        rows.append((f"{op} OT", n, time.perf_counter() - t0, time.process_time() - c0, cost.as_dict()))
    return rows


def steps(n: int) -> dict[str, float]:
    """Seconds of each local step for one batch of ``n`` OTs (this process, one core)."""
    m = n // 8
    prg = ColumnPRG(np.frombuffer(os.urandom(128 * 16), np.uint8).reshape(128, 16).copy())
    h = FixedKeyHash()
    out = {}
    t = time.perf_counter()
    cols = prg.expand(m)
    out["PRG, 128 columns (AES-CTR)"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = transpose(cols)
    out["bit transpose"] = time.perf_counter() - t
    t = time.perf_counter()
    h(rows, 0, 1)
    out["hash, one block per OT (fixed-key AES)"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--other", type=int, nargs="*", default=[1_000_000])
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--no-tls", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/ot.txt")
    args = ap.parse_args()
    plan = [("random", n) for n in args.random[:1]] + [("random", n) for n in args.random]
    plan += [(op, n) for n in args.other for op in ("correlated", "chosen")]
    prog = functools.partial(bench_program, plan=plan, batch=args.batch)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = covault.run(
        prog, parties=2, protocol="2pc", transport="tcp", timeout=args.timeout, tls=not args.no_tls
    )
    wall = time.perf_counter() - t0
    snd, rcv = res["p0"], res["p1"]
    lines = [
        "# OT extension (IKNP + ALSZ, kappa = 128) between two processes, TCP loopback, "
        + ("plaintext" if args.no_tls else "mutual TLS 1.3"),
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}, cryptography {cryptography.__version__}, "
        f"load average {load:.1f} at the start (a shared host)",
        f"# command: python benchmarks/bench_ot.py {' '.join(sys.argv[1:])}".rstrip(),
        f"# batch: {args.batch} OTs per message; time: the slower party; whole run {wall:.1f} s "
        "(three processes: the 2pc dealer idles)",
        "# CPU s: process time of the sender / the receiver (what the host's load does not inflate)",
        "# rounds: flights (consecutive messages one way count once; 0 = the previous flight goes on)",
        "",
        f"{'step':<16} {'OTs':>11} {'seconds':>8} {'OTs/s':>12} {'R->S B/OT':>10} {'S->R B/OT':>10} "
        f"{'theory':>12} {'rounds':>7} {'CPU s S/R':>11}",
    ]
    theory = {"random": "16 / 0", "correlated": "16 / 8", "chosen": "16 / 32", "base": "0.25 / 33"}
    for i, ((name, n, ts, us, cs), (_, _, tr, ur, cr)) in enumerate(zip(snd, rcv, strict=True)):
        name = "random (first)" if i == 1 else name
        sec = max(ts, tr)
        key = name.split()[0]
        lines.append(
            f"{name:<16} {n:>11,} {sec:>8.3f} {n / sec:>12,.0f} {cr['bytes_sent'] / n:>10.2f} "
            f"{cs['bytes_sent'] / n:>10.2f} {theory[key]:>12} {max(cs['rounds'], cr['rounds']):>7} {us:>5.2f}/{ur:.2f}"
        )
    lines += ["", "# local steps, one batch of 2^20 OTs, this process (seconds):"]
    lines += [f"{k:<42} {v:.4f}" for k, v in steps(1 << 20).items()]
    lines += [
        "",
        "# literature: emp-toolkit IKNP ~73 M OT/s and SoftSpokenOT 137-280 M OT/s (C++, one thread,",
        "# 9.5 Gbps link); IKNP's receiver sends kappa = 128 bits per OT (16 B), ALSZ's correlated OT",
        "# adds the sender's correction (8 B per 64-bit word), chosen OT two masked messages.",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
