"""Function secret sharing: DCF key generation and evaluation time per element, and the latency
of the one-round 2pc gates next to the comparisons of ``covault.ops.compare``.

Usage: python benchmarks/bench_fss.py [--out FILE] [--reps R]   (in-process parties)

Part 1 times ``covault.randomness.fss.keygen`` and ``evaluate`` (one party) alone, for the keys the
gates use on an ``n``-bit domain: drelu (``n - 1`` bits, 1 payload word) and relu (``n - 1`` bits,
3 words); the best of ``R`` runs. Part 2 runs each gate on the in-process transport (threads: P0,
P1 and the dealer share the cores, and the dealer generates the keys in line, as a dealer that
deals on demand would) and reports P0's wall time per call (median of ``R``), its rounds and
bytes sent, and the dealer's bytes; for the FSS gates also the time without the wait for the
keys (what a pool of keys dealt ahead leaves online: masking, the opening, the evaluation).
Part 3 runs the gates over TCP with mutual TLS, one process per party, the dealer dealing in
line (its key generation overlaps the opening round).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

import covault
from covault.ops import compare
from covault.ops import fss as gates
from covault.randomness import fss
from covault.randomness.prg import PRG

SIZES = (1, 64, 16_384)


def _best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def dcf_table(reps: int) -> list[str]:
    g = PRG(os.urandom(16))
    lines = [
        f"DCF alone (one party's evaluation; best of {reps}), microseconds per element",
        f"{'n':>3} {'key':>6} {'elements':>9} {'keygen':>10} {'eval':>10} {'key bytes':>10}",
    ]
    for n in (32, 48):
        for name, words in (("drelu", 1), ("relu", 3)):
            bits = n - 1
            for size in SIZES:
                alpha = g.words(size, np.uint64) >> np.uint64(64 - bits)
                beta = g.ring((size, words))
                roots = g.words((size, 2), np.uint64), g.words((size, 2), np.uint64)
                x = g.words(size, np.uint64) >> np.uint64(64 - bits)
                k0, _ = fss.keygen(alpha, beta, bits, *roots)
                r = max(1, reps if size < 10_000 else reps // 3)
                gen = _best(lambda: fss.keygen(alpha, beta, bits, *roots), r)  # noqa: B023
                ev = _best(lambda: fss.evaluate(0, k0, x), r)  # noqa: B023
                lines.append(
                    f"{n:>3} {name:>6} {size:>9} {gen / size * 1e6:>10.2f} {ev / size * 1e6:>10.2f} "
                    f"{fss.key_bytes(bits, words):>10.2f}"
                )
    return lines


def _gate_program(gate, size: int, reps: int):
    values = np.linspace(-30_000.0, 30_000.0, size)

    def prog(s):
        owner = s.compute_parties[0]
        x = s.input(values if s.party == owner else None, owner=owner, bound=32_767.0)
        provider, keys = s.protocol.provider, []
        deal = provider.dcf

        def timed(*args):  # the time P0 spends obtaining its keys (dealer in line)
            t = time.perf_counter()
            dealt = deal(*args)
            keys[-1] += time.perf_counter() - t
            if dealt is None:  # the dealer
                return None
            r, receive = dealt

            def received():
                t = time.perf_counter()
                got = receive()
                keys[-1] += time.perf_counter() - t
                return got

            return r, received

        provider.dcf = timed
        times, online, cost = [], [], None
        for _ in range(reps):
            keys.append(0.0)
            t = time.perf_counter()
            with s.scope() as c:
                gate(x)
            times.append(time.perf_counter() - t)
            online.append(times[-1] - keys[-1])
            cost = c.as_dict()
        return float(np.median(times)), float(np.median(online)), cost

    return prog


GATES = (
    ("fss.drelu", gates.drelu),
    ("fss.positive", gates.positive),
    ("fss.relu", gates.relu),
    ("fss.sigmoid", gates.sigmoid),
    ("compare.msb (x < 0)", compare.msb),
    ("compare.relu", compare.relu),
    ("x.sigmoid()", lambda x: x.sigmoid()),
)


def gate_table(reps: int) -> list[str]:
    lines = [
        "Gates on the in-process transport, |x| <= 32767 (n = 32), P0's median wall time per call",
        f"{'gate':<22} {'elements':>9} {'ms':>9} {'no keys':>9} {'rounds':>6} {'P0 sent B/el':>12} "
        f"{'dealer B/el':>11}",
    ]
    for name, gate in GATES:
        for size in SIZES:
            r = max(1, reps if size < 10_000 else reps // 3)
            res = covault.run(_gate_program(gate, size, r), 2, "2pc")
            ms, online, cost = res["p0"]
            dealer = res["dealer"][2]["bytes_sent"]
            bare = f"{online * 1e3:>9.3f}" if name.startswith("fss") else f"{'':>9}"
            lines.append(
                f"{name:<22} {size:>9} {ms * 1e3:>9.3f} {bare} {cost['rounds']:>6} "
                f"{cost['bytes_sent'] / size:>12.2f} {dealer / size:>11.2f}"
            )
    return lines


TCP_GATES = ("fss.drelu", "fss.relu", "fss.sigmoid", "compare.msb (x < 0)", "compare.relu", "x.sigmoid()")


def _tcp_program(s, reps: int = 30) -> dict:
    """Every gate of :data:`TCP_GATES` on 1 and 64 elements: median wall time and rounds."""
    owner = s.compute_parties[0]
    out = {}
    for size in SIZES[:2]:
        values = np.linspace(-30_000.0, 30_000.0, size)
        x = s.input(values if s.party == owner else None, owner=owner, bound=32_767.0)
        for name, gate in GATES:
            if name not in TCP_GATES:
                continue
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                with s.scope() as c:
                    gate(x)
                times.append(time.perf_counter() - t)
            out[name, size] = (float(np.median(times)), c.rounds)
    return out


def tcp_table() -> list[str]:
    res = covault.run(_tcp_program, 2, "2pc", transport="tcp", timeout=120)["p0"]
    lines = [
        "Gates over TCP with mutual TLS, one process per party (loopback), P0's median ms per call",
        f"{'gate':<22} {'1 element':>10} {'64 elements':>12} {'rounds':>6}",
    ]
    for name in TCP_GATES:
        (one, rounds), (many, _) = res[name, 1], res[name, 64]
        lines.append(f"{name:<22} {one * 1e3:>10.3f} {many * 1e3:>12.3f} {rounds:>6}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    head = [
        f"bench_fss on {platform.node()}: {os.cpu_count()} cores, python {platform.python_version()}, "
        f"load average {load:.1f} at the start",
        "",
    ]
    parts = [*head, *dcf_table(args.reps), "", *gate_table(args.reps), "", *tcp_table()]
    text = "\n".join(parts) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
