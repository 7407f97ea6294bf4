"""Ring matmul (exact mod 2^64) against torch int64 and plaintext float64, on one machine.

Usage: python benchmarks/bench_ringmm.py [--big] [--reps N] [--json PATH]

For each shape M x K x N: the engine ``ringmm.matmul`` picks, its time, the int8 engine's time,
torch's int64 matmul, and float64 numpy ``@`` (plaintext baseline). Times are the best of
``--reps`` runs. float64 is timed first, before any torch kernel has started its OpenMP
threads: numpy's BLAS threads and torch's spinning OpenMP threads slow each other down badly
on 2 cores, so timing them interleaved would measure that contention, not the kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from covault import ringmm

SHAPES = [
    (1000, 1000, 1000),
    (2000, 500, 1000),
    (256, 1000, 1000),
    (8192, 100, 64),
    (64, 784, 128),
    (128, 30, 64),
    (1, 30, 64),
    (8192, 100, 1),
    (1000, 1000, 4),
]
BIG = [(2000, 2000, 2000), (1000, 10000, 1000)]


def best(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ring_values(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform ring elements (like secret shares), from the OS CSPRNG."""
    return np.frombuffer(os.urandom(8 * int(np.prod(shape))), np.int64).reshape(shape).copy()


def reps_for(m: int, k: int, n: int, reps: int) -> int:
    return max(reps, min(200, int(2e8 / max(m * k * n, 1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also run the large shapes")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="write the rows as JSON to this path")
    args = ap.parse_args()
    shapes = SHAPES + (BIG if args.big else [])
    data = {s: (ring_values(s[:2]), ring_values(s[1:])) for s in shapes}

    f64 = {}
    for s in shapes:
        a, b = (x.astype(np.float64) for x in data[s])
        f64[s] = best(lambda a=a, b=b: a @ b, reps_for(*s, args.reps))

    int8 = ringmm.int8_available()
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, int8 engine {'on' if int8 else 'off'}"
    )
    head = f"{'M x K x N':>18} {'engine':>7} {'auto ms':>9} {'int8 ms':>9} {'int64 ms':>9} {'f64 ms':>8}"
    print(head + f" {'auto/f64':>9} {'int64/auto':>10}")
    rows = []
    for s in shapes:
        a, b = data[s]
        reps = reps_for(*s, args.reps)
        want = torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        got = ringmm.matmul(a, b)
        if not np.array_equal(got, want):
            raise SystemExit(f"mismatch at {s}")
        t_auto = best(lambda a=a, b=b: ringmm.matmul(a, b), reps)
        t_int8 = best(lambda a=a, b=b: ringmm.matmul(a, b, method="int8"), reps) if int8 else float("nan")
        t_i64 = best(lambda a=a, b=b: ringmm.matmul(a, b, method="int64"), max(1, reps // 2))
        row = {
            "shape": list(s),
            "engine": ringmm.choose(*s),
            "auto_s": t_auto,
            "int8_s": t_int8,
            "int64_s": t_i64,
            "f64_s": f64[s],
        }
        rows.append(row)
        label = "x".join(map(str, s))
        print(
            f"{label:>18} {row['engine']:>7} {t_auto * 1e3:9.3f} {t_int8 * 1e3:9.3f} {t_i64 * 1e3:9.3f}"
            f" {f64[s] * 1e3:8.3f} {t_auto / f64[s]:9.2f} {t_i64 / t_auto:10.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
