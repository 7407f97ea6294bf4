"""The serving parties' loop in their one long-lived session: batches of many clients' queries.

Every serving party (the compute parties and the 2pc dealer) runs :func:`run_batches` in the
same session. Per step:

1. The leader (the first compute party) takes the pending queries from its front door, up to
   ``max_rows`` rows, at once when one is pending (no wait for a fuller batch), and announces
   them to the others: one int64 row ``[client, token, query id, rows]`` per query, and a stop
   word. With nothing pending it announces an empty batch every ``tick`` seconds, a heartbeat
   that finds a stopped party within that time.
2. Every serving party tells every other which announced queries' shares it holds (a compute
   party waits up to ``share_wait`` seconds for those still on their way; the dealer holds
   none and says yes): a query missing anywhere fails at its client, naming that party.
3. The compute parties evaluate the model once on the concatenated rows of the rest
   (:meth:`~covault.serving.model.SecretModel.forward`; the dealer on empty shares of the same
   shape), and each sends every client its own slice of its share of the answer. A batch of one
   row finds its tuples dealt ahead (the 2pc dealer's pool, :class:`~covault.serving.online.Query`).

The compute parties and the dealer learn each query's client and row count, never a row or an
answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from covault.errors import ProtocolError
from covault.serving.frontdoor import FrontDoor, Pending
from covault.serving.model import SecretModel
from covault.serving.online import Query

TICK = 0.5  # seconds between heartbeats of an idle service
MAX_BATCH_ROWS = 4096  # rows of one batch (a single larger query goes alone)
log = logging.getLogger("covault.serving")


def serving_parties(session) -> list[str]:
    return [*session.compute_parties, *((session.dealer,) if session.dealer else ())]


def run_batches(
    session,
    model: SecretModel,
    door: FrontDoor | None,
    clients: list[str],
    *,
    forward: dict[str, Any] | None = None,
    max_rows: int = MAX_BATCH_ROWS,
    share_wait: float = 2.0,
    tick: float = TICK,
    stop: Callable[[], bool] = lambda: False,
    leave: Callable[[], bool] = lambda: False,
    on_batch: Callable[[list[Pending]], None] | None = None,
    on_answered: Callable[[int], None] | None = None,
    pool: bool = True,
) -> int:
    """Serve batches until the leader announces the end (``stop()`` true at the leader), or
    ``leave()`` is true at another party (it leaves the session: the others see it stop); the
    number of queries answered. ``door``: this compute party's front door (None at the dealer);
    ``clients``: the data parties, in one order at every party (the announcement's client
    index); ``forward``: keyword arguments of ``model.forward``; ``on_batch``: called at a compute
    party with the queries taken into a batch before it is evaluated (the service fails them if
    the session breaks); ``on_answered``: called with each batch's count of answered queries as
    it is answered (the count survives a session that breaks later); ``pool``: the 2pc dealer
    deals the next single-row batch's tuples ahead (:class:`~covault.serving.online.Query`)."""
    fn = lambda x: model.forward(x, **(forward or {}))  # noqa: E731
    with Query(session, None, model.n_features, fn, pool=pool) as query:
        return _loop(
            session,
            model,
            door,
            clients,
            query,
            max_rows,
            share_wait,
            tick,
            stop,
            leave,
            on_batch,
            on_answered,
        )


def _loop(
    session, model, door, clients, query, max_rows, share_wait, tick, stop, leave, on_batch, on_answered
) -> int:
    me = session.party
    leader = session.compute_parties[0]
    others = [p for p in serving_parties(session) if p != me]
    net = session.net
    answered = 0
    while True:
        if me == leader:
            batch = door.take(max_rows, tick)
            if on_batch is not None:  # before the announcement: if it fails, the service fails them
                on_batch(batch)
            ending = bool(stop())  # read once: what the others are told
            index = {c: i for i, c in enumerate(clients)}
            ann = np.array([[index[p.client], p.token, p.qid, p.rows] for p in batch], np.int64).reshape(
                -1, 4
            )
            net.exchange({p: [ann, np.array([int(ending)], np.int64)] for p in others})
        else:
            if leave():  # no drain: its rounds would meet the others' holdings messages
                query.abandon()
                return answered
            timeout, net.timeout = net.timeout, max(net.timeout, 4 * tick)
            try:
                ann, ctl = net.exchange(recv_from=[leader])[leader]
            finally:
                net.timeout = timeout
            ann = _check_announcement(ann, len(clients), leader)
            ending = bool(ctl.reshape(-1)[0])
            keys = [(clients[int(c)], int(t), int(q)) for c, t, q, _ in ann]
            batch = door.collect(keys, share_wait) if door is not None else [None] * len(keys)
            batch = [_same_rows(p, int(n), leader) for p, n in zip(batch, ann[:, 3])]
            if on_batch is not None and door is not None:
                on_batch([p for p in batch if p is not None])
        k = ann.shape[0]
        held = np.ones(k, np.uint8) if door is None else np.array([p is not None for p in batch], np.uint8)
        got = net.exchange({p: [held] for p in others}, others)
        haves = {me: held, **{p: got[p][0].reshape(-1) for p in others}}
        ok = np.ones(k, bool)
        for c in session.compute_parties:
            if haves[c].shape != (k,):
                raise ProtocolError(f"party {c!r} answered {haves[c].shape} for a batch of {k} queries")
            ok &= haves[c] == 1
        if door is not None:
            for i in np.flatnonzero(~ok):
                lacking = next(c for c in session.compute_parties if haves[c][i] != 1)
                key = (clients[int(ann[i, 0])], int(ann[i, 1]), int(ann[i, 2]))
                door.fail(
                    key,
                    lacking,
                    f"party {lacking!r} did not hold the query's shares (none came within {share_wait:g} s, "
                    "or not of the rows the others hold)",
                )
        if ok.any():
            rows = ann[ok, 3]
            n = int(rows.sum())
            if door is None:
                shares = session.protocol.empty((n, model.n_features))
            else:
                shares = np.concatenate([p.shares for p, good in zip(batch, ok) if good], axis=1)
            y = query.evaluate(query.secret(shares))
            if door is not None:
                at = 0
                for p, good in zip(batch, ok):
                    if good:
                        door.answer(p, y.frac, y.shares[0, at : at + p.rows])
                        at += p.rows
            answered += int(ok.sum())
            if on_answered is not None:
                on_answered(int(ok.sum()))
        if on_batch is not None and door is not None:
            on_batch([])
        if ending:
            return answered


def _same_rows(p: Pending | None, rows: int, leader: str) -> Pending | None:
    """``p`` if the client sent this party as many rows as the leader announced; else None
    (the query fails, with a log line naming the client)."""
    if p is None or p.rows == rows:
        return p
    log.warning(
        "query %d of client %r: it sent this party %d rows and party %r %d: failed",
        p.qid, p.client, p.rows, leader, rows,
    )  # fmt: skip
    return None


def _check_announcement(ann: np.ndarray, clients: int, leader: str) -> np.ndarray:
    if ann.dtype != np.int64 or ann.ndim != 2 or ann.shape[1] != 4:
        raise ProtocolError(f"party {leader!r} announced a batch of shape {ann.shape} (expected (k, 4))")
    if ann.size and (ann[:, 0].min() < 0 or ann[:, 0].max() >= clients or ann[:, 3].min() < 1):
        raise ProtocolError(f"party {leader!r} announced a batch with an unknown client or no rows")
    return ann
