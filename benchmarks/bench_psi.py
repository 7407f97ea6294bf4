"""Private set intersection between real processes over mutual TLS on loopback.

Cases: two parties with ``n x n`` ids for every ``--sizes`` entry, three parties with ``--three``
ids each; every party's ids are shuffled ints, a fraction ``--overlap`` of them common to all.
Prints the time of :func:`covault.protocols.psi.intersect` at the slowest party (and the whole
run, process start included), payload bytes sent per party, rounds, and the per-operation costs
of the group measured in this process.

    python benchmarks/bench_psi.py [--sizes 100000 1000000] [--three 100000] [--overlap 0.5]
                                   [--timeout 600] [--no-tls] [--out benchmarks/results/psi.txt]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import ssl
import sys
import time

import cryptography
import numpy as np

import covault
from covault.protocols.psi import group, intersect, protocol
from covault.protocols.psi.ids import canonical_ids


def party_ids(index: int, n: int, common: int) -> np.ndarray:
    """Public benchmark data: ``common`` shared ints and ``n - common`` ints of this party only."""
    own = np.arange(n - common, dtype=np.int64) + (index + 1) * 10**12
    ids = np.concatenate([np.arange(common, dtype=np.int64) * 7919, own])
    return np.random.default_rng(index).permutation(ids)  # data, not secrets


def _timed(fn, spent: dict, key: str):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t

    return wrapper


def bench_program(session, names: tuple[str, ...], n: int, common: int):
    if session.party not in names:  # the 2pc dealer
        return None
    ids = party_ids(names.index(session.party), n, common)
    spent: dict[str, float] = {}
    # phase timers (this process only): hashing + first exponentiation, later exponentiations
    protocol.hash_and_power = _timed(protocol.hash_and_power, spent, "hash+exp own")
    protocol.power = _timed(protocol.power, spent, "exp received")
    t0 = time.perf_counter()
    with session.net.scope() as cost:
        res = intersect(session.net, list(names), ids)
    return {
        "seconds": time.perf_counter() - t0,
        "intersection": res.intersection,
        "stats": cost.as_dict(),
        "spent": spent,
    }


def run_case(names: tuple[str, ...], n: int, overlap: float, timeout: float, tls: bool) -> dict:
    common = round(n * overlap)
    prog = functools.partial(bench_program, names=names, n=n, common=common)
    proto = "2pc" if len(names) == 2 else "rep3"
    t0 = time.perf_counter()
    res = covault.run(prog, parties=list(names), protocol=proto, transport="tcp", timeout=timeout, tls=tls)
    wall = time.perf_counter() - t0
    out = {p: res[p] for p in names}
    for p, r in out.items():
        if r["intersection"] != common:
            raise SystemExit(f"party {p}: intersection {r['intersection']}, expected {common}")
    return {"names": names, "n": n, "common": common, "wall": wall, "parties": out}


def per_op_costs(count: int = 20000) -> list[str]:
    ids = [str(k * 7919) for k in range(count)]
    lines = []
    t = time.perf_counter()
    canonical_ids(np.arange(count, dtype=np.int64) * 7919)
    lines.append(
        f"canonical ids (numpy int64 -> str)       {1e6 * (time.perf_counter() - t) / count:6.2f} us/id"
    )
    for name in group.BACKENDS:
        try:
            fn = group.load_backend(name)
        except (OSError, AttributeError) as e:
            lines.append(f"hash to curve, Legendre via {name:9s}    unavailable ({e})")
            continue
        reps = count if name != "python" else count // 4
        t = time.perf_counter()
        group.hash_points(ids[:reps], fn)
        dt = 1e6 * (time.perf_counter() - t) / reps
        lines.append(f"hash to curve, Legendre via {name:9s}    {dt:6.2f} us/id (SHA-512 + Elligator 2)")
    key = group.new_key()
    pts = np.frombuffer(b"".join(group.hash_points(ids)), np.uint8).reshape(-1, 32)
    t = time.perf_counter()
    group.power(key, pts, "bench")
    dt = 1e6 * (time.perf_counter() - t) / count
    lines.append(f"X25519 exponentiation (cryptography)      {dt:6.2f} us/op")
    lines.append(f"Legendre backend in use: {group.legendre_backend()[0]}")
    return lines


def describe(case: dict) -> list[str]:
    names, n, common = case["names"], case["n"], case["common"]
    slowest = max(r["seconds"] for r in case["parties"].values())
    rounds = {r["stats"]["rounds"] for r in case["parties"].values()}
    sizes = " x ".join(f"{n:,}" for _ in names)
    lines = [
        f"{len(names)} parties, {sizes} ids, {common:,} common: {slowest:6.1f} s "
        f"(slowest party; whole run with process start {case['wall']:.1f} s), rounds {sorted(rounds)}"
    ]
    for p, r in case["parties"].items():
        st = r["stats"]
        sp = r["spent"]
        rest = r["seconds"] - sum(sp.values())
        lines.append(
            f"    {p}: {r['seconds']:6.1f} s (hash + exp own list {sp.get('hash+exp own', 0):5.1f} s, "
            f"exp received lists {sp.get('exp received', 0):5.1f} s, rest {rest:4.1f} s), "
            f"sent {st['bytes_sent'] / 1e6:6.1f} MB ({st['bytes_sent'] / n:4.1f} B/id), "
            f"received {st['bytes_received'] / 1e6:6.1f} MB"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000], help="two-party set sizes")
    ap.add_argument("--three", type=int, nargs="*", default=[100_000], help="three-party set sizes")
    ap.add_argument("--overlap", type=float, default=0.5, help="fraction of ids common to all parties")
    ap.add_argument("--timeout", type=float, default=600.0, help="network timeout in seconds")
    ap.add_argument("--no-tls", dest="tls", action="store_false", help="plain TCP (default: mutual TLS 1.3)")
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()

    head = [
        "# python benchmarks/bench_psi.py " + " ".join(sys.argv[1:]),
        f"# {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"cryptography {cryptography.__version__}, system {ssl.OPENSSL_VERSION}",
        f"# transport: tcp on loopback, {'mutual TLS 1.3' if args.tls else 'plain TCP'}; one process per party",
        "",
        "per-operation costs (one core, this process):",
    ]
    lines = head + ["  " + s for s in per_op_costs()] + [""]
    print("\n".join(lines), flush=True)
    cases = [(("p0", "p1"), n) for n in args.sizes] + [(("p0", "p1", "p2"), n) for n in args.three]
    for names, n in cases:
        block = describe(run_case(names, n, args.overlap, args.timeout, args.tls))
        print("\n".join(block), flush=True)
        lines += block
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
