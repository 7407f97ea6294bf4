"""The serving parties' loop in their one long-lived session: batches of many clients' queries.

Every serving party (the compute parties and the 2pc dealer) runs :func:`run_batches` in the
same session. Per step:

1. The leader (the first compute party) takes the pending queries from its front door, up to
   ``max_rows`` rows, at once when one is pending (no wait for a fuller batch), and announces
   them to the others: one int64 row ``[client, token, query id, rows]`` per query, and a stop
   word. With nothing pending it announces an empty batch every ``tick`` seconds, a heartbeat
   that finds a stopped party within that time.
2. Every serving party tells every other which announced queries' shares it holds: yes, not
   yet, or never (refused there, or its client's link there closed); the dealer holds none and
   says yes. A compute party waits up to :data:`FIRST_WAIT` seconds for the shares of a query
   announced for the first time, none for a query announced again. A query held everywhere is
   evaluated; one that some party will never hold fails at its client, naming that party; one
   only not yet there is announced again in the next batch (a few milliseconds later) until
   ``share_wait`` seconds after its first announcement, then fails. So a client that sends its
   shares to some parties only delays the others' queries by ``FIRST_WAIT`` once, not by
   ``share_wait``.
3. The compute parties evaluate the model once on the concatenated rows of the rest
   (:meth:`~covault.serving.model.SecretModel.forward`; the dealer on empty shares of the same
   shape), and each sends every client its own slice of its share of the answer. A batch of one
   row finds its tuples dealt ahead (the 2pc dealer's pool, :class:`~covault.serving.online.Query`).

The compute parties and the dealer learn each query's client and row count, never a row or an
answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from covault.errors import ProtocolError
from covault.serving.frontdoor import FrontDoor, Pending
from covault.serving.model import SecretModel
from covault.serving.online import Query

TICK = 0.5  # seconds between heartbeats of an idle service
FIRST_WAIT = 0.02  # seconds a compute party waits for the shares of a query announced for the first time
RETRY_WAIT = 0.005  # seconds the leader waits for new queries before announcing deferred ones again
FIRST, AGAIN, LAST = 0, 1, 2  # an announced query: first time, again, last time (share_wait passed)
HELD, NEVER, NOT_YET = 1, 0, 2  # a party's answer for an announced query
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
    deferred: list[tuple[Pending, float]] = []  # the leader's: announced, not yet held everywhere
    while True:
        if me == leader:
            batch, first = _next_batch(door, deferred, max_rows, tick)
            if on_batch is not None:  # before the announcement: if it fails, the service fails them
                on_batch(batch)
            ending = bool(stop())  # read once: what the others are told
            index = {c: i for i, c in enumerate(clients)}
            now = time.monotonic()
            ann = np.array(
                [
                    [index[p.client], p.token, p.qid, p.rows, _mark(t, now, share_wait)]
                    for p, t in zip(batch, first)
                ],
                np.int64,
            ).reshape(-1, 5)
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
            keys = [(clients[int(c)], int(t), int(q)) for c, t, q, _, _ in ann]
            gone: set = set()
            if door is not None:
                fresh = {k for k, w in zip(keys, ann[:, 4]) if w == FIRST}
                batch = door.collect(keys, FIRST_WAIT if fresh else 0.0, fresh, gone)
            else:
                batch = [None] * len(keys)
            wrong = {k for k, p, n in zip(keys, batch, ann[:, 3]) if p is not None and p.rows != int(n)}
            batch = [_same_rows(p, int(n), leader) for p, n in zip(batch, ann[:, 3])]
            if on_batch is not None and door is not None:
                on_batch([p for p in batch if p is not None])
        k = ann.shape[0]
        if me == leader or door is None:
            held = np.full(k, HELD, np.uint8)
        else:
            held = np.array(
                [HELD if p is not None else NEVER if key in gone or key in wrong else NOT_YET
                 for p, key in zip(batch, keys)],
                np.uint8,
            )  # fmt: skip
        got = net.exchange({p: [held] for p in others}, others)
        haves = {me: held, **{p: got[p][0].reshape(-1) for p in others}}
        ok, never = np.ones(k, bool), np.zeros(k, bool)
        for c in session.compute_parties:
            if haves[c].shape != (k,):
                raise ProtocolError(f"party {c!r} answered {haves[c].shape} for a batch of {k} queries")
            ok &= haves[c] == HELD
            never |= haves[c] == NEVER
        again = ~ok & ~never & (ann[:, 4] != LAST)  # announced again in the next batch
        if me == leader:
            deferred = [(batch[i], now if first[i] is None else first[i]) for i in np.flatnonzero(again)]
        if door is not None:
            for i in np.flatnonzero(~ok & ~again):
                lacking = next(c for c in session.compute_parties if haves[c][i] != HELD)
                key = (clients[int(ann[i, 0])], int(ann[i, 1]), int(ann[i, 2]))
                late = haves[lacking][i] == NOT_YET
                door.fail(
                    key,
                    lacking,
                    f"party {lacking!r} did not hold the query's shares "
                    + (f"(none came within {share_wait:g} s)" if late else "(it refused them, or they were "
                       "not of the rows the others hold, or the client's link to it closed)"),
                )  # fmt: skip
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
            on_batch([p for p, _ in deferred])  # still the service's to fail if the session breaks
        if ending:
            for p, _ in deferred:
                door.fail(p, me, "the service stopped before the query's shares reached every party")
            return answered


def _next_batch(
    door: FrontDoor, deferred: list[tuple[Pending, float]], max_rows: int, tick: float
) -> tuple[list[Pending], list[float | None]]:
    """The leader's next batch: the deferred queries first, then new ones up to ``max_rows``
    rows (waiting :data:`RETRY_WAIT` for them when some are deferred, else up to ``tick``); and
    when each was first announced (None: now, for the first time)."""
    batch: list[Pending] = [p for p, _ in deferred]
    first: list[float | None] = [t for _, t in deferred]
    room = max_rows - sum(p.rows for p in batch)
    if room > 0 or not batch:
        fresh = door.take(room if batch else max_rows, RETRY_WAIT if batch else tick)
        batch += fresh
        first += [None] * len(fresh)
    return batch, first


def _mark(first: float | None, now: float, share_wait: float) -> int:
    """The announcement's mark of a query first announced at ``first`` (None: now)."""
    if first is None:
        return FIRST
    return LAST if now - first >= share_wait else AGAIN


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
    if ann.dtype != np.int64 or ann.ndim != 2 or ann.shape[1] != 5:
        raise ProtocolError(f"party {leader!r} announced a batch of shape {ann.shape} (expected (k, 5))")
    if ann.size and (ann[:, 0].min() < 0 or ann[:, 0].max() >= clients or ann[:, 3].min() < 1):
        raise ProtocolError(f"party {leader!r} announced a batch with an unknown client or no rows")
    if ann.size and not np.isin(ann[:, 4], (FIRST, AGAIN, LAST)).all():
        raise ProtocolError(f"party {leader!r} announced a batch with an unknown mark")
    return ann
