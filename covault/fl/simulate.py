"""One SecAgg+ round with every client an object in this process: messages are bytes, counted.

For tests and the benchmark (the demo runs clients as processes: :mod:`covault.fl.processes`).
:class:`Dropouts` says which clients stop answering before which round: before round 1 (never
advertise keys), 2 (after advertising, before sharing), 3 (after sharing, before sending their
masked input: their pairwise masks must be removed) or 4 (after masking, before unmasking: their
input stays in the sum). Every message the server receives is kept in ``server_view``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from covault.fl.client import Client
from covault.fl.config import RoundConfig
from covault.fl.server import Server


@dataclass
class Dropouts:
    """Client ids that stop answering before each round (1-4)."""

    before: dict[int, set[int]] = field(default_factory=dict)

    def gone(self, stage: int) -> set[int]:
        """The clients silent at ``stage`` (those that dropped at it or earlier)."""
        return set().union(*(ids for s, ids in self.before.items() if s <= stage))


@dataclass
class RoundResult:
    total: np.ndarray  # the survivors' sum in Z_2^b
    survivors: list[int]
    dropped: list[int]  # reached round 2, sent no masked input
    bytes_sent: dict[int, int]  # per client, payload bytes
    bytes_received: dict[int, int]
    client_cpu: dict[int, float]  # per client, CPU seconds over the round
    server_cpu: float
    server_view: list[tuple[int, int, bytes]]  # (round, client, message) as received


def secure_sum(
    updates: Sequence[np.ndarray], config: RoundConfig, dropouts: Dropouts | None = None
) -> RoundResult:
    """The sum of ``updates`` (ring vectors, one per client id) by SecAgg+, with ``dropouts``."""
    dropouts = dropouts or Dropouts()
    n = config.clients
    sent, received, cpu = dict.fromkeys(range(n), 0), dict.fromkeys(range(n), 0), dict.fromkeys(range(n), 0.0)
    view: list[tuple[int, int, bytes]] = []
    server_cpu = 0.0

    def timed(fn, *args):
        t = time.process_time()
        out = fn(*args)
        return out, time.process_time() - t

    clients = {}
    for u in range(n):
        clients[u], cpu[u] = timed(Client, u, updates[u], config)
    server = Server(config)
    steps = [
        (Client.advertise, server.receive_keys),
        (Client.share_keys, server.receive_shares),
        (Client.masked_input, server.receive_masked),
        (Client.unmask, server.finish),
    ]
    inbox: dict[int, bytes | None] = dict.fromkeys(range(n))
    for stage, (client_step, server_step) in enumerate(steps, start=1):
        silent = dropouts.gone(stage)
        replies = {}
        for u in sorted(inbox):
            if u in silent:
                continue
            args = () if inbox[u] is None else (inbox[u],)
            replies[u], spent = timed(client_step, clients[u], *args)
            cpu[u] += spent
            sent[u] += len(replies[u])
            view.append((stage, u, replies[u]))
        out, spent = timed(server_step, replies)
        server_cpu += spent
        if stage < 4:
            for u, m in out.items():
                received[u] += len(m)
            inbox = out
    return RoundResult(out, server.survivors, server.dropped, sent, received, cpu, server_cpu, view)
