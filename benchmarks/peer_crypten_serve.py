"""CrypTen on bench_serve.py's private-inference models: the same weights, rows and checks.

Usage: python benchmarks/peer_crypten_serve.py [--queries 300] [--models ...] [--providers TFP TTP]

Install (beside the pinned torch; ``--no-deps`` so that pip never replaces it):
    pip install --no-deps -r benchmarks/requirements-peers.txt
CrypTen 0.4.1's ``crypten.nn.onnx_converter`` cannot be imported on torch 2.13 (it imports
``torch.onnx._internal.registration``, gone from torch); it is replaced here by a stub before
``import crypten`` (``from_pytorch`` / ``from_onnx`` unavailable) and the models are written with
crypten tensors directly.

Two CrypTen parties, each its own process (torch.distributed gloo on loopback, ``env://``
rendezvous, one torch thread each): party 0 holds the weights (``crypten.cryptensor(w, src=0)``,
once), party 1 is the client: per query its row is encrypted from party 1, the model runs
(``x.matmul(W) + b``, ``.relu()``, ``.sigmoid()``, decisions ``z > 0`` and ``z[:, 1] > z[:, 0]``)
and the answer is revealed to party 1 alone (``get_plain_text(dst=1)``). Providers: ``TFP``
(CrypTen's default: party 0 generates every Beaver triple itself and shares it without
communication, so party 0, here the model owner, knows the triples: a benchmarking setting,
not a secure one against party 0) and ``TTP`` (a third process deals the tuples; party 0 asks
it for each tuple online, one request and answer per tuple, in the query's latency).

Latency is measured at party 1 over ``--queries`` single-row queries after 20 warm-up. Rounds
and bytes are one query's (the last), counted by wrapping CrypTen's communicator: ``rounds``
the communication calls between the two parties (each a blocking exchange), ``sent/party`` the
bytes one party sends the other (the most of the two), ``dealer`` the bytes between party 0 and
the TTP (both ways; requests and tuples). ``crypten stats`` is CrypTen's own count at party 1
(``get_communication_stats``: calls and bytes, sent and received counted as CrypTen logs them).
Answers are checked against bench_serve.py's float64 model (``plain()``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import queue
import socket
import sys
import time
import types

import numpy as np
from bench_serve import MODELS, WARMUP, check, plain_seconds, rows, weights

PROVIDERS = ("TFP", "TTP")
PARTIES = 2
OWNER, CLIENT = 0, 1
TIMEOUT_S = 900


def import_crypten():
    """``import crypten`` on torch 2.13: its ONNX converter module stubbed (it cannot import)."""
    name = "crypten.nn.onnx_converter"
    if name not in sys.modules:
        stub = types.ModuleType(name)

        def unavailable(*args, **kwargs):
            raise NotImplementedError(
                "crypten's ONNX converter cannot be imported on this torch; build models with crypten tensors"
            )

        stub.from_onnx = stub.from_pytorch = stub.from_tensorflow = unavailable
        stub.TF_AND_TF2ONNX = False
        sys.modules[name] = stub
    import crypten

    return crypten


class Counter:
    """Rounds and bytes of one party, by wrapping its CrypTen communicator's calls."""

    CALLS = (
        "send", "recv", "isend", "irecv", "scatter", "reduce", "all_reduce", "gather",
        "all_gather", "broadcast", "barrier", "send_obj", "recv_obj", "broadcast_obj",
    )  # fmt: skip

    def __init__(self, comm):
        self.comm, self.rank, self.world = comm, comm.get_rank(), comm.get_world_size()
        self.reset()
        for name in self.CALLS:
            setattr(comm, name, self._wrap(name, getattr(comm, name)))

    def reset(self) -> None:
        self.rounds = self.sent = self.dealer_rounds = self.dealer_bytes = 0

    def as_dict(self) -> dict:
        return {
            "rounds": self.rounds,
            "sent": self.sent,
            "dealer_rounds": self.dealer_rounds,
            "dealer": self.dealer_bytes,
        }

    @staticmethod
    def _nbytes(t) -> int:
        if isinstance(t, (list, tuple)):
            return sum(Counter._nbytes(x) for x in t)
        return t.nelement() * t.element_size()

    def _sent(self, name: str, args: tuple, kwargs: dict) -> int:
        """Bytes this party sends in one call (two-party group, or party 0 and the TTP)."""
        a = args + tuple(kwargs.values())
        if name in ("send", "isend", "all_reduce", "all_gather"):
            return self._nbytes(a[0])
        if name in ("reduce", "gather"):
            return 0 if a[1] == self.rank else self._nbytes(a[0])
        if name == "broadcast":
            return self._nbytes(a[0]) if a[1] == self.rank else 0
        if name == "scatter":
            return (
                sum(self._nbytes(x) for i, x in enumerate(a[0]) if i != self.rank) if a[1] == self.rank else 0
            )
        if name == "send_obj":
            return len(pickle.dumps(a[0])) + 4
        if name == "broadcast_obj":
            return len(pickle.dumps(a[0])) + 4 if a[1] == self.rank else 0
        return 0

    def _wrap(self, name: str, call):
        main = self.comm.main_group

        def counted(*args, **kwargs):
            at = {"broadcast": 2, "send_obj": 2, "recv_obj": 1}.get(name)
            group = kwargs.get("group", args[at] if at is not None and len(args) > at else None)
            result = call(*args, **kwargs)
            if group is not None and group is not main:
                received = self._nbytes(result) if name == "broadcast" and self.rank != args[1] else 0
                if name == "recv_obj":
                    received = len(pickle.dumps(result)) + 4
                self.dealer_bytes += self._sent(name, args, kwargs) + received
                self.dealer_rounds += name == "send_obj"
            else:
                self.rounds += 1
                self.sent += self._sent(name, args, kwargs)
            return result

        return counted


def model_fn(crypten, model: str, w: dict):
    """The model on crypten tensors: ``x`` (1 x 30) to probabilities, logits or the class."""
    if model.startswith("lr"):

        def lr(x):
            z = x.matmul(w["w"]) + w["b"]
            return z.sigmoid() if model == "lr-proba" else z > 0

        return lr

    def mlp(x):
        z = (x.matmul(w["W1"]) + w["b1"]).relu().matmul(w["W2"]) + w["b2"]
        return z if model == "mlp-logits" else z[:, 1] > z[:, 0]

    return mlp


def _env(rank: int, port: int) -> None:
    os.environ.update(
        DISTRIBUTED_BACKEND="gloo", RENDEZVOUS="env://", WORLD_SIZE=str(PARTIES), RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )  # fmt: skip


def _party(rank: int, port: int, provider: str, queries: int, models: list[str], out) -> None:
    _env(rank, port)
    import torch

    torch.set_num_threads(1)
    crypten = import_crypten()
    from crypten.config import cfg

    cfg.mpc.provider = provider
    cfg.communicator.verbose = True  # CrypTen counts its communication only when verbose
    if rank == PARTIES:  # the trusted third party: serves party 0's requests until told to stop
        from crypten.mpc.provider.ttp_provider import TTPServer

        t0 = time.process_time()
        TTPServer()
        out.put((rank, {"cpu": time.process_time() - t0}))
        return
    crypten.init()
    comm = crypten.comm.get()
    counter = Counter(comm)
    p = weights()
    w = {
        k: crypten.cryptensor(torch.tensor(v if rank == OWNER else np.zeros_like(v)), src=OWNER)
        for k, v in p.items()
    }
    data = rows(WARMUP + queries, 1)
    res = {}
    for model in models:
        f = model_fn(crypten, model, w)
        lat, answers = [], []
        for i in range(WARMUP + queries):
            if i == WARMUP:
                cpu0 = time.process_time()
            counter.reset()
            crypten.reset_communication_stats()
            row = torch.tensor(data[i : i + 1] if rank == CLIENT else np.zeros((1, data.shape[1])))
            t0 = time.perf_counter()
            y = f(crypten.cryptensor(row, src=CLIENT)).get_plain_text(dst=CLIENT)
            t1 = time.perf_counter()
            if i >= WARMUP:
                lat.append(t1 - t0)
                answers.append(None if y is None else y.numpy().astype(np.float64))
        res[model] = {
            "lat": lat,
            "answers": answers if rank == CLIENT else None,
            "cost": counter.as_dict(),
            "crypten": comm.get_communication_stats(),
            "cpu": (time.process_time() - cpu0) / queries,
        }
    crypten.uninit()  # party 0 also tells the TTP to stop
    out.put((rank, res))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(provider: str, queries: int, models: list[str]) -> dict:
    """Every party (and the TTP) in its own spawned process; their results by rank."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    ranks = list(range(PARTIES)) + ([PARTIES] if provider == "TTP" else [])
    procs = [
        ctx.Process(target=_party, args=(r, port, provider, queries, models, out), daemon=True) for r in ranks
    ]
    for proc in procs:
        proc.start()
    res = {}
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(res) < len(ranks):
            try:
                rank, value = out.get(timeout=5)
                res[rank] = value
            except queue.Empty:
                failed = {r: proc.exitcode for r, proc in zip(ranks, procs) if proc.exitcode not in (None, 0)}
                if failed:
                    raise RuntimeError(
                        f"crypten {provider}: a party failed (rank: exit status) {failed}"
                    ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"crypten {provider}: no result after {TIMEOUT_S} s") from None
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    return res


def summarise(provider: str, model: str, res: dict, p: dict, queries: int) -> list[str]:
    client = res[CLIENT][model]
    lat = np.array(client["lat"]) * 1e3
    cost = {r: res[r][model]["cost"] for r in (OWNER, CLIENT)}
    sent = max(c["sent"] for c in cost.values())
    rounds = max(c["rounds"] for c in cost.values())
    dealer = cost[OWNER]["dealer"]
    err = check(model, p, queries, client["answers"])
    pt = plain_seconds(model, p, 1)
    p50 = np.percentile(lat, 50)
    cpu = f"cpu/query ms: party0 {res[OWNER][model]['cpu'] * 1e3:.2f}, party1 {client['cpu'] * 1e3:.2f}"
    if PARTIES in res:
        cpu += f", ttp {res[PARTIES]['cpu'] * 1e3 / (queries + WARMUP) / len(res[OWNER]):.2f} (its whole run / all queries)"
    stats = client["crypten"]
    return [
        f"{'crypten-' + provider.lower():<13} {'peer':<6} {model:<12} 1 row: p50 {p50:6.2f} ms  p99 {np.percentile(lat, 99):6.2f} ms"
        f"  rounds {rounds:3d}  sent/party {sent / 1e3:6.1f} kB  dealer {dealer / 1e3:6.1f} kB"
        f" ({cost[OWNER]['dealer_rounds']} requests)  | plaintext {pt * 1e6:5.1f} us ({p50 * 1e-3 / pt:,.0f}x)  {err}",
        f"{'':<34}{cpu}",
        f"{'':<34}crypten stats (party 1): rounds {stats['rounds']}, bytes {stats['bytes'] / 1e3:.1f} kB",
    ]


def run(queries: int, models: list[str], providers: tuple[str, ...] = PROVIDERS) -> list[str]:
    """CrypTen's lines for ``models`` (bench_serve.py's format), one measurement per provider."""
    import_crypten()  # fail here, in this process, when CrypTen is not installed
    p = weights()
    lines = []
    for provider in providers:
        res = measure(provider, queries, models)
        for model in models:
            lines += summarise(provider, model, res, p, queries)
    return lines


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    ap.add_argument("--providers", nargs="*", default=list(PROVIDERS), choices=PROVIDERS)
    args = ap.parse_args()
    print(
        f"CrypTen {PARTIES} parties, one process each (+ the TTP), gloo on loopback (no TLS); "
        f"{args.queries} single-row queries after {WARMUP} warm-up; latency at party 1 (the client); "
        "rounds and bytes of one query",
        flush=True,
    )
    print(f"# load average at the start {load()}", flush=True)
    t0 = time.monotonic()
    for provider in args.providers:
        for line in run(args.queries, args.models, (provider,)):
            print(line, flush=True)
        print(f"# {provider}: {time.monotonic() - t0:.0f} s; load average {load()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
