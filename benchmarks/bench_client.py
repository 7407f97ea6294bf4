"""Latency of private inference through the service: ``covault serve`` processes and the Python client.

Usage: python benchmarks/bench_client.py [--queries 100] [--protocol 2pc|rep3] [--model mlp|lr]
       python benchmarks/bench_client.py --clients 8 --rows 1 [--seconds 10] [--protocol ...] [--model ...]

A throw-away consortium in a temporary folder (mutual TLS 1.3 on loopback, a fresh CA): the
owner imports the model (an MLP 30-64-2 with a final softmax, or a logistic regression on 30
features), each serving party runs ``covault serve`` in its own process, and this process is the
client (``covault.serving.Client``). Latency is measured around ``predict`` of one row, after 10
warm-up queries; the answers are checked against the float64 numpy model.

With ``--clients N``: ``covault serve --many`` and N client processes (data parties c0, c1, ...),
each sending queries of ``--rows`` rows back to back for ``--seconds`` seconds from a common
start (once every client has connected and sent its warm-up queries); reported: rows per second answered by the service (all clients
together), p50 / p99 latency per query, the mean rows per batch is not visible to clients.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import covault
from covault.cli import main as cli
from covault.deploy.config import load_config
from covault.serving import Client
from covault.serving.formats import PlainModel
from covault.serving.importer import import_model
from covault.serving.keys import store_folders

WARMUP = 10


def plain_model(kind: str) -> tuple[PlainModel, Callable[[np.ndarray], np.ndarray]]:
    g = np.random.default_rng(14)
    if kind == "lr":
        w, b = g.normal(0, 0.3, (30, 1)), g.normal(0, 0.1, 1)
        layers = [{"op": "linear", "in": 30, "out": 1}, {"op": "sigmoid"}]
        return PlainModel(layers, [w, b]), lambda x: 1 / (1 + np.exp(-(x @ w + b)))
    w1, b1 = g.normal(0, 1 / np.sqrt(30), (30, 64)), g.normal(0, 0.1, 64)
    w2, b2 = g.normal(0, 1 / 8, (64, 2)), g.normal(0, 0.1, 2)
    layers = [{"op": "linear", "in": 30, "out": 64}, {"op": "relu"}, {"op": "linear", "in": 64, "out": 2}]
    layers.append({"op": "softmax"})

    def plain(x):
        z = np.maximum(x @ w1 + b1, 0) @ w2 + b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return PlainModel(layers, [w1, b1, w2, b2]), plain


def door_ports(n: int) -> list[int]:
    """``n`` loopback ports each free together with the next one (a compute party's front door)."""
    import socket

    held, out = [], []
    try:
        while len(out) < n:
            a = socket.socket()
            a.bind(("127.0.0.1", 0))
            held.append(a)
            b = socket.socket()
            try:
                b.bind(("127.0.0.1", a.getsockname()[1] + 1))
            except OSError:
                b.close()
                continue
            held.append(b)
            out.append(a.getsockname()[1])
    finally:
        for s in held:
            s.close()
    return out


def consortium(folder: Path, protocol: str, clients: int = 0) -> tuple[Path, list[str]]:
    compute = ["a", "b"] if protocol == "2pc" else ["a", "b", "c"]
    serving = [*compute, "dealer"] if protocol == "2pc" else compute
    names = [*serving, "owner", "client", *(f"c{i}" for i in range(clients))]
    ports = door_ports(len(names))
    certs = folder / "certs"
    with contextlib.redirect_stdout(io.StringIO()):  # the CA's and each party's file names
        cli(["certs", "init", str(certs), "--days", "1"])
    lines = [f'protocol = "{protocol}"', "timeout = 30", f"compute = {json.dumps(compute)}"]
    if protocol == "2pc":
        lines.append('dealer = "dealer"')
    lines += ["[tls]", 'certs = "certs"']
    for n, port in zip(names, ports):
        with contextlib.redirect_stdout(io.StringIO()):
            cli(["certs", "issue", str(certs), n, "--days", "1"])
        lines += [f"[parties.{n}]", f'address = "127.0.0.1:{port}"']
    path = folder / "consortium.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, serving


def worker(args: argparse.Namespace) -> int:
    """One client process of the throughput run: JSON ``{"lat", "rows", "err"}`` on stdout."""
    _, plain = plain_model(args.model)
    g = np.random.default_rng(int(args.worker[1:]) + 100)
    lat, rows, err = [], 0, 0.0
    with Client(args.config, as_=args.worker, model="m") as c:
        for _ in range(5):
            c.predict(np.clip(g.normal(0, 1, (args.rows, 30)), -7.99, 7.99))
        print("ready", flush=True)
        sys.stdin.readline()  # every client is ready: go
        end = time.time() + args.seconds
        while True:
            x = np.clip(g.normal(0, 1, (args.rows, 30)), -7.99, 7.99)
            t0 = time.perf_counter()
            y = c.predict(x)
            t1 = time.perf_counter()
            if time.time() > end:
                break
            lat.append(t1 - t0)
            rows += args.rows
            err = max(err, float(np.abs(y.reshape(args.rows, -1) - plain(x).reshape(args.rows, -1)).max()))
    print(json.dumps({"lat": lat, "rows": rows, "err": err}))
    return 0


def throughput(args: argparse.Namespace, config: Path, serving: list[str]) -> None:
    """``covault serve --many`` and ``args.clients`` client processes querying at once."""
    cmd = [sys.executable, "-m", "covault", "serve", str(config), "--model", "m", "--many"]
    procs = [subprocess.Popen([*cmd, "--as", n], stdout=subprocess.DEVNULL) for n in serving]
    me = [
        sys.executable,
        __file__,
        "--model",
        args.model,
        "--rows",
        str(args.rows),
        "--seconds",
        str(args.seconds),
    ]
    try:
        workers = [
            subprocess.Popen(
                [*me, "--worker", f"c{i}", "--config", str(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(args.clients)
        ]
        for w in workers:  # each connected and warmed up
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a client process failed (exit {w.wait()})")
        for w in workers:
            w.stdin.write("go\n")
            w.stdin.flush()
        outs = [json.loads(w.communicate(timeout=120 + args.seconds)[0]) for w in workers]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    ms = np.concatenate([o["lat"] for o in outs]) * 1e3
    rows = sum(o["rows"] for o in outs)
    print(
        f"{args.protocol} {args.model}: {args.clients} clients (own processes), queries of {args.rows} row(s) "
        f"back to back for {args.seconds:g} s, covault serve --many, mutual TLS on loopback: "
        f"{rows / args.seconds:,.0f} rows/s ({len(ms) / args.seconds:,.0f} queries/s); per query p50 "
        f"{np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms; max |err| vs float64 "
        f"{max(o['err'] for o in outs):.1e}",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--protocol", default="2pc", choices=["2pc", "rep3"])
    ap.add_argument("--model", default="mlp", choices=["mlp", "lr"])
    ap.add_argument("--clients", type=int, default=0, help="throughput: this many client processes")
    ap.add_argument("--rows", type=int, default=1, help="throughput: rows per query")
    ap.add_argument("--seconds", type=float, default=10.0, help="throughput: measured seconds")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    model, plain = plain_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        config, serving = consortium(Path(tmp), args.protocol, args.clients)
        folder, keys = store_folders(load_config(config))
        compute = [p for p in serving if p != "dealer"]
        covault.run(
            lambda s: import_model(s, "owner", model if s.party == "owner" else None, folder, keys, name="m"),
            compute,
            args.protocol,
            data_parties=["owner"],
        )
        if args.clients:
            throughput(args, config, serving)
            return 0
        cmd = [sys.executable, "-m", "covault", "serve", str(config), "--model", "m", "--client", "client"]
        procs = [subprocess.Popen([*cmd, "--as", n], stdout=subprocess.DEVNULL) for n in serving]
        x = np.clip(np.random.default_rng(1).normal(0, 1, (WARMUP + args.queries, 30)), -7.99, 7.99)
        lat, got = [], []
        try:
            with Client(config, as_="client", model="m") as c:
                for i, row in enumerate(x):
                    t0 = time.perf_counter()
                    y = c.predict(row[None])
                    t1 = time.perf_counter()
                    if i >= WARMUP:
                        lat.append(t1 - t0)
                        got.append(y.reshape(1, -1))
        finally:
            for p in procs:
                p.wait(timeout=60)
    ms = np.array(lat) * 1e3
    err = np.abs(np.concatenate(got) - plain(x[WARMUP:]).reshape(len(got), -1)).max()
    print(
        f"{args.protocol} {args.model}: {args.queries} single-row queries through covault.serving.Client, "
        f"covault serve processes, mutual TLS on loopback: p50 {np.percentile(ms, 50):.2f} ms, "
        f"p99 {np.percentile(ms, 99):.2f} ms; max |err| vs float64 {err:.1e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
