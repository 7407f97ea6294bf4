"""Federated averaging through SecAgg+ between processes: the aggregator's and the clients' programs.

Per FedAvg round ``r`` (:mod:`covault.fl.training`), over one connection per client
(:mod:`covault.fl.processes`):

1. the aggregator draws the round's public seed (``secrets``; the neighbour graph and the round
   id) and sends it with the global weights to every client still connected; each client trains
   locally, clips its update, adds its part of the DP noise if ``p["sigma"]`` is set
   (:mod:`covault.fl.dp`, ``p["honest"]`` clients making up ``sigma``), quantises it
   (:class:`~covault.fl.quantise.Quantiser`) and answers
   with its public keys (:meth:`covault.fl.client.Client.advertise`);
2. - 4. the three other rounds of SecAgg+ (:mod:`covault.fl.server`), each one message to and
   one from every client;
5. the aggregator adds ``sum / survivors`` to the weights.

A client that closes its connection (``plan``: the FedAvg round and SecAgg+ round at which it
leaves, for the demo's ``--dropout``) is a dropout from then on: the aggregator sees a
:class:`~covault.errors.PeerError` naming it and goes on without it. Messages are
``[header int64 (kind, round, seed), payload bytes as uint8 (, weights float64)]``. The caller
gives each client its shard and the aggregator the test set (``p["shard"]``, ``p["test"]``). The clients'
and aggregator's payload bytes, the rounds and the time spent are returned by each program.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import numpy as np

from covault.errors import PeerError
from covault.fl import dp
from covault.fl.client import Client
from covault.fl.config import RoundConfig
from covault.fl.quantise import Quantiser
from covault.fl.server import Server
from covault.fl.training import accuracy, local_update
from covault.transport.base import Network

HUB = "aggregator"
START, STEP, STOP = 0, 1, 2


def client_name(i: int) -> str:
    return f"client_{i:02d}"


def _message(kind: int, rnd: int, seed: int, payload: bytes = b"", weights: np.ndarray | None = None) -> list:
    msg = [np.array([kind, rnd, seed], dtype=np.int64), np.frombuffer(payload, dtype=np.uint8)]
    return msg if weights is None else [*msg, weights]


def _quantiser(p: dict[str, Any]) -> Quantiser:
    sigma = dp.client_sigma(p["sigma"], p["honest"]) if p.get("sigma") else 0.0
    return Quantiser(
        clip=p["clip"], frac_bits=p["frac_bits"], bits=32, max_clients=p["clients"], noise_sigma=sigma
    )


def program(name: str, net: Network, p: dict[str, Any]) -> dict[str, Any]:
    """The program of every process: the aggregator's or a client's part."""
    return aggregator(net, p) if name == HUB else client(net, p)


def aggregator(net: Network, p: dict[str, Any]) -> dict[str, Any]:
    n, rounds = p["clients"], p["rounds"]
    names = [client_name(i) for i in range(n)]
    alive = set(range(n))
    test = p["test"]
    q = _quantiser(p)
    w = np.zeros(test[0].shape[1])
    history, t0, cpu0 = [], time.perf_counter(), time.process_time()

    def trip(sends: dict[int, list]) -> dict[int, bytes]:
        """Send to each client, then hear each; a client that is gone is dropped for good."""
        for u, msg in sends.items():
            try:
                net.exchange({names[u]: msg})
            except PeerError:
                alive.discard(u)
        got = {}
        for u in sorted(sends):
            if u not in alive:
                continue
            try:
                got[u] = net.exchange(None, [names[u]])[names[u]][1].tobytes()
            except PeerError:
                alive.discard(u)
        return got

    for r in range(rounds):
        seed = secrets.randbits(62)
        cfg = RoundConfig(
            clients=n, dim=len(w), seed=seed, neighbours=p["neighbours"], threshold=p["threshold"]
        )
        server = Server(cfg)
        got = trip({u: _message(START, r, seed, weights=w) for u in sorted(alive)})
        for step in (server.receive_keys, server.receive_shares, server.receive_masked):
            out = step(got)
            got = trip({u: _message(STEP, r, seed, m) for u, m in out.items() if u in alive})
        total = server.finish(got)
        count = len(server.survivors)
        w = w + q.decode_sum(total, count) / count
        history.append({"round": r, "survivors": count, "dropped": [names[u] for u in server.dropped]})
    for u in sorted(alive):
        net.exchange({names[u]: _message(STOP, rounds, 0)})
    return {
        "weights": w.tolist(),
        "accuracy": accuracy(w, test),
        "rounds": history,
        "finished": [names[u] for u in sorted(alive)],
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - cpu0,
        "stats": net.stats.as_dict(),
    }


def client(net: Network, p: dict[str, Any]) -> dict[str, Any]:
    i, n = p["index"], p["clients"]
    shard = p["shard"]
    q = _quantiser(p)
    leave = tuple(p["leave"]) if p.get("leave") else None  # (FedAvg round, SecAgg+ round)
    cpu, sa = 0.0, None
    while True:
        head, payload, *rest = net.exchange(None, [HUB])[HUB]
        kind, r, seed = (int(v) for v in head)
        if kind == STOP:
            break
        stage = 1 if kind == START else sa.stage + 1
        if leave == (r, stage):
            net.transport.close(0.0)
            return {
                "left": {"round": r, "secagg_round": stage},
                "cpu_seconds": cpu,
                "stats": net.stats.as_dict(),
            }
        t = time.process_time()
        if kind == START:
            w = rest[0]
            update = local_update(w, shard, p["epochs"], p["lr"])
            noise = (
                dp.client_noise(len(w), p["sigma"], p["honest"], p["frac_bits"]) if p.get("sigma") else None
            )
            cfg = RoundConfig(
                clients=n, dim=len(w), seed=seed, neighbours=p["neighbours"], threshold=p["threshold"]
            )
            sa = Client(i, q.encode(update, noise), cfg)
            reply = sa.advertise()
        else:
            reply = (sa.share_keys, sa.masked_input, sa.unmask)[stage - 2](payload.tobytes())
        cpu += time.process_time() - t
        net.exchange({HUB: _message(STEP, r, seed, reply)})
    return {"left": None, "cpu_seconds": cpu, "stats": net.stats.as_dict()}
