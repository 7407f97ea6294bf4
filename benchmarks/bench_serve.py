"""Private inference latency and throughput: a secret-shared model answering one client's rows.

Usage: python benchmarks/bench_serve.py [--queries 300] [--protocols 2pc rep3] [--batches 1 16 256]
    [--models lr-proba lr-decision mlp-logits mlp-argmax] [--paths online online-fss online-nopool plain]
    [--gap-ms 0] [--rtt-ms 0] [--no-tls] [--peers crypten]

Every party is its own OS process (``covault.run(..., transport="tcp")``, mutual TLS 1.3 on
loopback unless ``--no-tls``): the compute parties (plus the 2pc dealer), a model owner and a
client, both data parties. The owner secret-shares the weights once; then, in one long-lived
session, the client secret-shares each query row and alone receives the answer
(``reveal(to=client)``). Models: logistic regression on 30 features (``lr-proba``: the
probability, ``lr-decision``: ``score > 0``) and an MLP 30-64-2 with ReLU (``mlp-logits``,
``mlp-argmax``: the class). The online path evaluates them as stored models do
(:meth:`covault.serving.model.SecretModel.forward` with ``output="scores" | "logits" |
"decision"``; ReLU and decisions by one-round FSS gates where the session offers them). Latency is measured at the client, from handing its row
to receiving the answer, over ``--queries`` single-row queries after a warm-up; rounds and bytes
are one query's (``session.scope()``; bytes sent per compute party, the most of any, and by the
dealer, offline). Then batches of rows per query give rows/s. Answers are checked against the
float64 numpy model (largest absolute error of probabilities and logits, decisions equal).

Two paths, each in its own session: ``online`` (:class:`covault.serving.online.Query`: the row
count to the compute parties and dealer only, the client computes nothing, public bounds
declared for the rows (8) and weights (4) so that comparisons run on 32 bits, decisions
without the last truncation) and ``plain`` (the same model through the plain API:
``session.input``, the model, ``reveal(to=client)``, default bounds). ``cpu`` is the CPU time
per single-row query of each process (the most of the compute parties; the dealer; the
client), waiting in the transport included. ``online-nopool``: the online path without the
dealer's pool (2pc). ``online-fss``: the online path with every FSS gate
(``SecretModel.forward(..., fss="all")``: ReLU and decisions in one round; ``online`` uses
the FSS sigmoid only); ``online-nofss``: no FSS gate (``fss="off"``: every comparison and
sigmoid generic). ``--gap-ms``: the client pauses between single-row queries (a service
that idles between queries, when the pool is refilled; CPU per query then counts the idle
polling too). ``--rtt-ms``: every message of the queries is held for a one-way delay of
``RTT / 2`` (``benchmarks/common.py``; loopback itself adds its own), a network between
organisations.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import numpy as np

import covault
from covault.serving.model import SecretModel
from covault.serving.online import Query

OWNER, CLIENT = "owner", "client"
FEATURES, HIDDEN, CLASSES = 30, 64, 2
MODELS = ("lr-proba", "lr-decision", "mlp-logits", "mlp-argmax")
WARMUP = 20
ROW_BOUND, WEIGHT_BOUND = 8.0, 4.0  # public magnitude bounds: the client's features, the owner's weights


def weights() -> dict[str, np.ndarray]:
    """The benchmark's plaintext model (fixed seed): what the owner holds."""
    g = np.random.default_rng(14)
    return {
        "w": g.normal(0, 0.3, (FEATURES, 1)),
        "b": g.normal(0, 0.1, 1),
        "W1": g.normal(0, 1 / np.sqrt(FEATURES), (FEATURES, HIDDEN)),
        "b1": g.normal(0, 0.1, HIDDEN),
        "W2": g.normal(0, 1 / np.sqrt(HIDDEN), (HIDDEN, CLASSES)),
        "b2": g.normal(0, 0.1, CLASSES),
    }


def rows(n: int, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0, 1, (n, FEATURES)), -7.99, 7.99)


def plain(model: str, p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The float64 numpy model; decisions as the secure side returns them (the class, 0 or 1)."""
    if model.startswith("lr"):
        z = (x @ p["w"] + p["b"])[:, 0]
        return 1 / (1 + np.exp(-z)) if model == "lr-proba" else (z > 0).astype(np.int64)
    z = np.maximum(x @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
    if model == "mlp-logits":
        return z
    return np.argmax(z, axis=-1)


LR_LAYERS = [{"op": "linear", "in": FEATURES, "out": 1}, {"op": "sigmoid"}]
MLP_LAYERS = [
    {"op": "linear", "in": FEATURES, "out": HIDDEN},
    {"op": "relu"},
    {"op": "linear", "in": HIDDEN, "out": CLASSES},
    {"op": "softmax"},
]
OUTPUT = {"lr-proba": "scores", "lr-decision": "decision", "mlp-logits": "logits", "mlp-argmax": "decision"}


def secret_model(model: str, m: dict) -> SecretModel:
    if model.startswith("lr"):
        return SecretModel("lr", "logistic_regression", LR_LAYERS, [m["w"], m["b"]])
    return SecretModel("mlp", "mlp", MLP_LAYERS, [m["W1"], m["b1"], m["W2"], m["b2"]])


def forward(model: str, m: dict, x, exact: bool = True, fss: str = "auto"):
    """The model on secret tensors: the stored model's forward (``exact``), or the plain API's
    ops with a truncation before every comparison and the generic comparisons."""
    if exact:
        return secret_model(model, m).forward(x, output=OUTPUT[model], fss=fss)
    decide = model.endswith(("decision", "argmax"))
    if model.startswith("lr"):
        z = (x @ m["w"] + m["b"]).reshape(x.shape[0])
        return z > 0 if decide else z.sigmoid()
    z = (x @ m["W1"] + m["b1"]).relu() @ m["W2"] + m["b2"]
    return (z[:, 1] > z[:, 0]) if decide else z


def plain_seconds(model: str, p: dict[str, np.ndarray], n: int) -> float:
    x = rows(n, 7)
    plain(model, p, x)
    ts = []
    for _ in range(200):
        t0 = time.perf_counter()
        plain(model, p, x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


class Program:
    """Picklable SPMD program: every party runs it (the tcp transport starts fresh processes)."""

    def __init__(
        self,
        models: list[str],
        queries: int,
        batches: list[int],
        path: str,
        gap: float = 0.0,
        rtt: float = 0.0,
    ):
        self.models, self.queries, self.batches, self.gap, self.rtt = models, queries, batches, gap, rtt
        self.fss = {"online-fss": "all", "online-nofss": "off"}.get(path, "auto")
        self.path = path.removesuffix("-nopool").removesuffix("-nofss").removesuffix("-fss")
        self.pool = not path.endswith("-nopool")

    def _query(self, s, model: str, m: dict):
        if self.path == "online":
            fn = lambda x: forward(model, m, x, fss=self.fss)  # noqa: E731
            return Query(s, CLIENT, FEATURES, fn, bound=ROW_BOUND, pool=self.pool)

        def plain_api(x):
            z = s.input(x, owner=CLIENT)
            return forward(model, m, z, exact=False).reveal(to=CLIENT)

        return contextlib.nullcontext(plain_api)

    def __call__(self, s):
        p = weights()
        mine = s.party == OWNER
        bound = WEIGHT_BOUND if self.path == "online" else None
        m = {k: s.input(v if mine else None, owner=OWNER, bound=bound) for k, v in p.items()}
        if self.rtt:
            from common import DelayedTransport

            s.net.transport = DelayedTransport(s.net.transport, self.rtt / 2)
        out: dict = {}
        for model in self.models:
            with self._query(s, model, m) as query:
                out[model] = self._measure(s, query)
        return out

    def _measure(self, s, query) -> dict:
        lat, costs, answers = [], [], []
        data = rows(WARMUP + self.queries, 1)
        for i in range(WARMUP + self.queries):
            if i == WARMUP:
                cpu0 = time.process_time()
            row = data[i : i + 1] if s.party == CLIENT else None
            if self.gap and s.party == CLIENT:
                time.sleep(self.gap)  # queries arrive apart: the service idles in between
            with s.scope() as cost:
                t0 = time.perf_counter()
                y = query(row)
                t1 = time.perf_counter()
            if i >= WARMUP:
                lat.append(t1 - t0)
                costs.append(cost.as_dict())
                answers.append(y)
        cpu = (time.process_time() - cpu0) / self.queries
        rate = {}
        for n in self.batches:
            x = rows(n, 2)
            query(x[:n] if s.party == CLIENT else None)  # warm-up at this shape
            reps = max(3, min(20, 2000 // n))
            t0 = time.perf_counter()
            for _ in range(reps):
                y = query(x if s.party == CLIENT else None)
            rate[n] = (reps * n / (time.perf_counter() - t0), y)
        return {
            "lat": lat,
            "cost": costs[-1],
            "answers": answers if s.party == CLIENT else None,
            "rate": rate,
            "cpu": cpu,
        }


def check(model: str, p: dict, queries: int, answers: list) -> str:
    """The single-row answers against the float64 model: largest error, or decisions equal."""
    want = plain(model, p, rows(WARMUP + queries, 1)[WARMUP:])
    got = np.concatenate([np.asarray(a).reshape(1, -1) for a in answers])
    want = want.reshape(got.shape)
    if model in ("lr-proba", "mlp-logits"):
        return f"max |err| {np.abs(got - want).max():.1e}"
    return f"decisions equal {int((got == want).all(axis=1).sum())}/{len(got)}"


def summarise(protocol: str, path: str, model: str, res: dict, p: dict, queries: int) -> list[str]:
    client = res[CLIENT][model]
    compute = [n for n in res if n not in (OWNER, CLIENT, "dealer")]
    lat = np.array(client["lat"]) * 1e3
    cost = {n: res[n][model]["cost"] for n in res}
    sent = max(cost[n]["bytes_sent"] for n in compute)
    rounds = max(cost[n]["rounds"] for n in compute)
    dealer = cost["dealer"]["bytes_sent"] if "dealer" in cost else 0
    err = check(model, p, queries, client["answers"])
    pt = plain_seconds(model, p, 1)
    cpu = {n: res[n][model]["cpu"] * 1e3 for n in res}
    cpus = f"cpu/query ms: compute {max(cpu[n] for n in compute):.2f}, client {cpu[CLIENT]:.2f}" + (
        f", dealer {cpu['dealer']:.2f}" if "dealer" in cpu else ""
    )
    lines = [
        f"{protocol:<5} {path:<13} {model:<12} 1 row: p50 {np.percentile(lat, 50):6.2f} ms  p99 {np.percentile(lat, 99):6.2f} ms"
        f"  rounds {rounds:3d}  sent/compute party {sent / 1e3:6.1f} kB  client {cost[CLIENT]['bytes_sent'] / 1e3:4.2f} kB"
        f"  dealer {dealer / 1e3:6.1f} kB  | plaintext {pt * 1e6:5.1f} us ({np.percentile(lat, 50) * 1e-3 / pt:,.0f}x)  {err}",
        f"{'':<33}{cpus}",
    ]
    for n, (rate, y) in client["rate"].items():
        ok = np.asarray(y).reshape(n, -1)
        ref = plain(model, p, rows(n, 2)).reshape(ok.shape)
        agree = (
            f"max |err| {np.abs(ok - ref).max():.1e}"
            if model in ("lr-proba", "mlp-logits")
            else f"equal {int((ok == ref).all(axis=1).sum())}/{n}"
        )
        lines.append(f"{'':<33}batch {n:4d}: {rate:9,.0f} rows/s  ({agree})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--protocols", nargs="*", default=["2pc", "rep3"])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 16, 256])
    ap.add_argument(
        "--paths",
        nargs="*",
        default=["online", "plain"],
        choices=["online", "online-fss", "online-nofss", "online-nopool", "plain"],
    )
    ap.add_argument("--gap-ms", type=float, default=0.0, help="the client's pause between single-row queries")
    ap.add_argument("--rtt-ms", type=float, default=0.0, help="a round-trip delay added to every message")
    ap.add_argument("--no-tls", action="store_true")
    ap.add_argument(
        "--peers",
        nargs="*",
        default=[],
        choices=["crypten"],
        help="also run a peer framework on the same models",
    )
    args = ap.parse_args()
    p = weights()
    print(
        f"private inference, one process per party, {'plain TCP' if args.no_tls else 'mutual TLS 1.3'} on loopback; "
        f"{args.queries} single-row queries after {WARMUP} warm-up; latency at the client; "
        + (f"a round trip of {args.rtt_ms:g} ms added to every message; " if args.rtt_ms else "")
        + "bytes and rounds of one query (compute parties: the most of any)",
        flush=True,
    )
    for protocol in args.protocols:
        for path in args.paths:
            res = covault.run(
                Program(args.models, args.queries, args.batches, path, args.gap_ms / 1e3, args.rtt_ms / 1e3),
                2 if protocol == "2pc" else 3,
                protocol,
                transport="tcp",
                tls=not args.no_tls,
                timeout=300,
                data_parties=[OWNER, CLIENT],
            )
            for model in args.models:
                for line in summarise(protocol, path, model, res, p, args.queries):
                    print(line, flush=True)
    if "crypten" in args.peers:  # benchmarks/requirements-peers.txt
        from peer_crypten_serve import run

        for line in run(args.queries, args.models):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
