"""Garbled circuits: half-gates garbling and evaluation rates, and x > 0 by a garbled circuit
against the secret-sharing comparisons of 2pc at 0, 10 and 50 ms round-trip time.

Usage: python benchmarks/bench_gc.py [--out FILE] [--sizes 1000,100000] [--rtt 0,10,50] [--reps R]

Part 1 (one process, one thread): ``covault.protocols.gc.garble.garble`` and ``evaluate`` on two
circuits: a level of 64 independent AND gates (the widest batch per AES call) and the
comparison circuit of ``gc_compare`` (the carry chain of a 32-bit sum: 31 AND gates, one per
level); the best of ``R`` runs, AND gates per second and table bytes per AND gate.

Part 2: ``[x > 0]`` of ``n`` secret values (public bound 1000, so every method works on 32-bit
words) over TCP with mutual TLS, one process per party (P0, P1 and the 2pc dealer), with a
one-way delay of ``RTT / 2`` on every message: each party's transport is wrapped so a message
is handed over no earlier than ``RTT / 2`` after it was sent (latency without a bandwidth cap:
messages in flight overlap, as on a long fat link). Methods: ``gc`` (``gc_compare``: A2Y into
the carry chain, Y2A by correlated OT; the base OTs are run once per RTT before the timing and
reported on their own), ``ss`` (``x > 0`` of ``covault.ops.compare``: the packed carry tree,
dealer's AND triples), ``fss`` (``covault.ops.fss.positive``: one opening, dealer's DCF keys),
and ``ss-ot``: ``x > 0`` in a second run with ``provider="ot"`` (two processes, no dealer: the
AND triples and daBits made by OT in line), the dealer-free secret-sharing alternative to GC.
Time: the slower compute party's wall time for the call (median of ``R`` calls up to 100000
values, one call beyond); bytes: sent by all three parties
during the call (the dealer's offline tuples included); rounds: P0's.
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
from covault.ops import fss as fss_gates
from covault.protocols.gc import builders
from covault.protocols.gc.circuit import Builder, Circuit
from covault.protocols.gc.convert import compare_circuit, gc_compare, gc_party
from covault.protocols.gc.garble import evaluate, garble
from covault.protocols.gc.hash import GarbleHash

BOUND = 1000.0


# -- part 1: AND gates per second ------------------------------------------------------------
def _wide() -> Circuit:
    b = Builder()
    x, y = b.input("garbler", 64), b.input("evaluator", 64)
    return b.build([b.and_(x[i], y[i]) for i in range(64)])


def _labels(shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(os.urandom(int(np.prod(shape)) * 8), dtype=np.uint64).reshape(shape).copy()


def rate_table(reps: int) -> list[str]:
    lines = [
        "Half-gates, one thread: AND gates per second (best of runs), table bytes per AND gate",
        f"{'circuit':<34} {'instances':>9} {'ANDs':>10} {'garble M/s':>10} {'eval M/s':>9} {'B/AND':>6}",
    ]
    for name, circuit, n in (
        ("64 ANDs in one level", _wide(), 1 << 15),
        ("x > 0 carry chain, 32-bit", compare_circuit(32), 1 << 17),
        ("add, 32-bit ripple carry", _adder(32), 1 << 16),
    ):
        h = GarbleHash(os.urandom(16))
        delta = _labels((2,))
        delta[0] |= np.uint64(1)
        zero = _labels((len(circuit.inputs), n, 2))
        tg = te = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            tables, _ = garble(circuit, zero, delta, h)
            tg = min(tg, time.perf_counter() - t)
            t = time.perf_counter()
            evaluate(circuit, zero, tables, h)
            te = min(te, time.perf_counter() - t)
        ands = circuit.n_and * n
        lines.append(
            f"{name:<34} {n:>9} {ands:>10} {ands / tg / 1e6:>10.2f} {ands / te / 1e6:>9.2f} "
            f"{tables.nbytes / ands:>6.0f}"
        )
    return lines


def _adder(width: int) -> Circuit:
    b = Builder()
    x, y = b.input("garbler", width), b.input("evaluator", width)
    return b.build(builders.add(b, x, y))


# -- part 2: x > 0, GC against secret sharing under latency --------------------------------
RUNS = (("dealer", ("gc", "ss", "fss")), ("ot", ("ss",)))  # provider, methods; "ot": named "ss-ot"
METHODS = ("gc", "ss", "fss", "ss-ot")


def _compare_program(
    s, sizes: Sequence[int], rtts: Sequence[float], reps: int, methods: Sequence[str]
) -> dict:
    owner = s.compute_parties[0]
    base = s.net.transport
    out: dict = {}
    for n in sizes:
        vals = np.random.default_rng(n).uniform(-BOUND + 1, BOUND - 1, n)
        vals[:3] = (0.0, 2.0**-16, -(2.0**-16))
        x = s.input(vals if s.party == owner else None, owner, bound=BOUND)
        want = (np.round(vals * 2**16) > 0).astype(np.float64)
        for rtt in rtts:
            barrier(s, base)
            s.net.transport = DelayedTransport(base, rtt / 2e3)
            t = time.perf_counter()
            link = gc_party(s) if "gc" in methods else None
            if link is not None:
                link.ot.setup()
            out["setup", n, rtt] = (time.perf_counter() - t, 0, 0, True)
            for method in methods:
                times = []
                for _ in range(reps if n <= 100_000 else 1):
                    barrier(s, base)
                    s.net.transport = DelayedTransport(base, rtt / 2e3)
                    t = time.perf_counter()
                    with s.scope() as cost:
                        if method == "gc":
                            y = gc_compare(x, link=link)
                        elif method == "ss":
                            y = x > 0
                        else:
                            y = fss_gates.positive(x)
                    times.append(time.perf_counter() - t)
                    s.net.transport = base
                got = y.reveal()
                ok = got is None or bool(np.array_equal(got, want))
                out[method, n, rtt] = (float(np.median(times)), cost.bytes_sent, cost.rounds, ok)
    s.net.transport = base
    return out


def compare_table(sizes: Sequence[int], rtts: Sequence[float], reps: int) -> list[str]:
    t = time.perf_counter()
    res: dict[str, dict] = {}
    for provider, methods in RUNS:
        prog = functools.partial(
            _compare_program, sizes=tuple(sizes), rtts=tuple(rtts), reps=reps, methods=methods
        )
        got = covault.run(prog, 2, "2pc", transport="tcp", timeout=600, provider=provider)
        for party, rows in got.items():
            for (method, *key), row in rows.items():
                if provider == "ot" and method == "setup":
                    continue  # no link there
                name = f"{method}-ot" if provider == "ot" else method
                res.setdefault(party, {})[(name, *key)] = row
    total = time.perf_counter() - t
    lines = [
        "x > 0 of n values (bound 1000: 32-bit words), 2pc over TCP/TLS, one process per party, "
        "one-way delay RTT/2 per message; seconds: the slower of P0 and P1, median of calls;",
        "gc: gc_compare; ss: x > 0 with the dealer's triples; fss: fss.positive (dealer's keys); "
        "ss-ot: x > 0 dealer-free (provider 'ot': AND triples and daBits by OT, in line)",
        f"{'n':>8} {'RTT ms':>6} {'method':<6} {'seconds':>8} {'MB sent':>9} {'B/value':>8} "
        f"{'rounds':>6} {'exact':>5}",
    ]
    for n in sizes:
        for rtt in rtts:
            setup = max(res[p]["setup", n, rtt][0] for p in ("p0", "p1"))
            for method in METHODS:
                rows = [res[p][method, n, rtt] for p in res if (method, n, rtt) in res[p]]
                secs = max(res[p][method, n, rtt][0] for p in ("p0", "p1"))
                sent = sum(r[1] for r in rows)
                ok = all(r[3] for r in rows)
                rounds = res["p0"][method, n, rtt][2]
                lines.append(
                    f"{n:>8} {rtt:>6g} {method:<6} {secs:>8.3f} {sent / 1e6:>9.2f} {sent / n:>8.1f} "
                    f"{rounds:>6} {'yes' if ok else 'NO':>5}"
                )
            lines.append(f"{n:>8} {rtt:>6g} {'(gc base OTs, once per pair: ' + f'{setup:.3f} s)':<40}")
    lines.append(f"(whole run {total:.0f} s, party start-up included)")
    return lines


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sizes", type=_ints, default=[100, 10_000, 1_000_000])
    ap.add_argument("--rtt", type=lambda s: [float(v) for v in s.split(",") if v], default=[0.0, 10.0, 50.0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-rates", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    lines = [
        f"bench_gc on {platform.node()}: {os.cpu_count()} cores, python {platform.python_version()}, "
        f"load average {load:.1f} at the start",
        "",
    ]
    if not args.skip_rates:
        lines += [*rate_table(args.reps), ""]
    lines += compare_table(args.sizes, args.rtt, args.reps)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
