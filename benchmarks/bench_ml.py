"""Training benchmarks over real processes with mutual TLS: secure vs plaintext.

Usage: python benchmarks/bench_ml.py [--transport tcp|local] [--plain] [--only NAME ...] [--out FILE]

Cases (``--only`` picks some): ``lr10k`` logistic regression on synthetic 10,000 x 30, batch
128, one epoch; ``lr100k`` the same on 100,000 x 100; ``mlp`` one SGD step (momentum 0.9) of
an MLP 30 -> 64 -> 2 with softmax cross-entropy on a batch of 128 (median of 5).

Every party runs in its own OS process over loopback TLS 1.3 (``--plain``: without TLS). The
data owner secret-shares the rows, the rows are shuffled obliviously, one warm-up step runs
(imports, first-use checks), then the timed part starts after a barrier that includes the dealer and ends when the last party is done; the
reported time is the slowest party's. The plaintext baseline runs the same algorithm (same
batches, same piecewise sigmoid for LR) in float64 numpy in one process.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import covault
from covault import ml, nn, optim
from covault.ml import batching

B = 128
CASES = {"lr10k": (10_000, 30), "lr100k": (100_000, 100), "mlp": (10_000, 30)}


def data(n: int, d: int):
    rng = np.random.default_rng(7)  # synthetic test data only, not secret
    x = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    y = (x @ w + 0.5 * rng.normal(size=n) > 0).astype(float)
    return x, y


def _barrier(s):
    s.constant(np.zeros(1), integer=True).reveal(to=list(s.parties))


def lr_epoch(n: int, d: int, s):
    x_np, y_np = data(n, d)
    a = s.compute_parties[0]
    x = s.input(x_np if s.party == a else None, owner=a)
    t = s.input(y_np.reshape(-1, 1) if s.party == a else None, owner=a)
    x, t = ml.shuffle_together([x, t])
    loss = nn.BCEWithLogitsLoss(sigmoid="piecewise")
    for _ in range(2):  # warm-up on a throw-away model: imports and first-use checks
        warm = nn.Linear(d, 1, weight=np.zeros((d, 1)))
        warm.backward(loss.backward(warm(x[:B]), t[:B]), scale=loss.scale, input_grad=False)
        optim.SGD(warm.parameters(), lr=0.1).step()
    model = nn.Linear(d, 1, weight=np.zeros((d, 1)))
    opt = optim.SGD(model.parameters(), lr=0.1)
    _barrier(s)
    t0 = time.perf_counter()
    with s.scope() as cost:
        for sl in batching.batch_slices(n, B):
            g = loss.backward(model(x[sl]), t[sl])
            model.backward(g, scale=loss.scale, input_grad=False)
            opt.step()
            opt.zero_grad()
        _barrier(s)
    return time.perf_counter() - t0, cost.as_dict()


def lr_plain(n: int, d: int) -> float:
    x, y = data(n, d)
    w, b = np.zeros(d), 0.0
    t0 = time.perf_counter()
    for sl in batching.batch_slices(n, B):
        xb, yb = x[sl], y[sl]
        p = np.clip(0.5 + (xb @ w + b) / 4, 0.0, 1.0)
        g = (p - yb) / len(yb)
        w -= 0.1 * (xb.T @ g)
        b -= 0.1 * g.sum()
    return time.perf_counter() - t0


def mlp_step(n: int, d: int, s):
    x_np, y_np = data(n, d)
    a = s.compute_parties[0]
    xb = s.input(x_np[:B] if s.party == a else None, owner=a)
    yb = s.input(np.stack([1 - y_np[:B], y_np[:B]], 1) if s.party == a else None, owner=a)
    model = nn.Sequential(nn.Linear(d, 64, seed=1), nn.ReLU(), nn.Linear(64, 2, seed=2))
    loss = nn.SoftmaxCrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    out = []
    for _ in range(6):
        _barrier(s)
        t0 = time.perf_counter()
        with s.scope() as cost:
            g = loss.backward(model(xb), yb)
            model.backward(g, scale=loss.scale, input_grad=False)
            opt.step()
            opt.zero_grad()
            _barrier(s)
        out.append((time.perf_counter() - t0, cost.as_dict()))
    out = out[1:]  # the first step pays imports and first-use checks
    secs = statistics.median(t for t, _ in out)
    return secs, out[0][1]


def mlp_plain(n: int, d: int) -> float:
    x, y = data(n, d)
    xb, yb = x[:B], np.stack([1 - y[:B], y[:B]], 1)
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=(d, 64)) * 0.2, np.zeros(64)
    w2, b2 = rng.normal(size=(64, 2)) * 0.2, np.zeros(2)
    v = [np.zeros_like(p) for p in (w1, b1, w2, b2)]
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        h = np.maximum(xb @ w1 + b1, 0)
        z = h @ w2 + b2
        e = np.exp(z - z.max(1, keepdims=True))
        g2 = (e / e.sum(1, keepdims=True) - yb) / B
        g1 = (g2 @ w2.T) * (h > 0)
        grads = (xb.T @ g1, g1.sum(0), h.T @ g2, g2.sum(0))
        for i, (p, g) in enumerate(zip((w1, b1, w2, b2), grads)):
            v[i] = 0.9 * v[i] + 0.1 * g
            p -= v[i]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(name: str, protocol: str, transport: str, tls: bool) -> dict:
    import functools

    n, d = CASES[name]
    prog = functools.partial(mlp_step if name == "mlp" else lr_epoch, n, d)
    parties = 3 if protocol == "rep3" else 2
    res = covault.run(prog, parties, protocol, transport=transport, tls=tls, timeout=600)
    secs = max(r[0] for r in res.values())
    return {"seconds": secs, "cost": {p: r[1] for p, r in res.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", choices=["tcp", "local"], default="tcp")
    ap.add_argument("--plain", action="store_true", help="tcp without TLS")
    ap.add_argument("--only", nargs="+", choices=sorted(CASES), default=list(CASES))
    ap.add_argument("--protocols", nargs="+", choices=["2pc", "rep3"], default=["2pc", "rep3"])
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    args = ap.parse_args(argv)
    tls = not args.plain
    link = f"{args.transport}{' + TLS 1.3' if tls and args.transport == 'tcp' else ''}"
    lines = [
        f"# covault training benchmarks ({link}; {platform.machine()}, {_cores()} cores, "
        f"python {platform.python_version()}); one OS process per party",
        f"{'case':<34} {'proto':<5} {'secure':>9} {'plain':>9} {'ratio':>7}  bytes sent / rounds per party",
    ]
    for line in lines:
        print(line, flush=True)
    for name in args.only:
        n, d = CASES[name]
        plain = mlp_plain(n, d) if name == "mlp" else lr_plain(n, d)
        what = f"MLP {d}-64-2 SGD step, batch {B}" if name == "mlp" else f"LR {n:,} x {d}, batch {B}, 1 epoch"
        for proto in args.protocols:
            r = run_case(name, proto, args.transport, tls)
            per = "  ".join(f"{p} {c['bytes_sent'] / 1e6:.2f} MB/{c['rounds']}" for p, c in r["cost"].items())
            line = (
                f"{what:<34} {proto:<5} {_t(r['seconds']):>9} {_t(plain):>9} "
                f"{r['seconds'] / plain:>6.0f}x  {per}"
            )
            lines.append(line)
            print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


def _t(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
