"""A compute party's front door: clients connect, send their shares of queries, get answers.

:class:`FrontDoor` listens at :func:`~covault.serving.wire.door_address` and accepts any number
of clients at once, each on its own mutually authenticated link (one thread per link; the TLS
handshake and hello within :data:`HELLO_TIMEOUT` seconds). A link is admitted when its
certificate names a data party of the config allowed to query (:func:`~covault.transport.
handshake.prepare_socket` also checks the revocation list) and its hello names the served
model; the welcome carries the model's public header. Before a link is admitted it holds one of
the session acceptor's slots (:mod:`covault.transport.accept`): at most :data:`MAX_WAITING`
connections in their handshake or hello at once, :data:`MAX_WAITING_PER_SOURCE` per source
address (more are closed at once), of which :data:`MAX_HANDSHAKES` (per source
:data:`MAX_HANDSHAKES_PER_SOURCE`) run their TLS handshake while the others wait their turn.
Each query's sender is looked up in the revocation list again (a revoked client is refused and
dropped), and its shares are checked (int64, ``(components, n, features)``, ``1 <= n <=
max_query_rows``, a fresh query id, at most :data:`HELD_QUERIES` queries of one client held) and
kept until the service's batch takes them (:meth:`take` at the leader, :meth:`collect`
elsewhere); a malformed one is refused to its client alone. A client that sends a malformed frame or stalls in the
middle of one for ``stall`` seconds is dropped, with a log line naming it; nothing else is
disturbed. Answers and errors go out through one writer thread per link, so that a client that
stops reading delays nobody.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from covault.deploy.revocation import describe
from covault.errors import CovaultError
from covault.serving.online import MAX_ROWS
from covault.serving.wire import (
    ANSWER,
    BYE,
    ERROR,
    HELLO_MAX,
    MAGIC,
    PEER,
    QUERY,
    REFUSED,
    Link,
    Refused,
    op_of,
    text,
    untext,
)
from covault.transport.accept import (
    MAX_HANDSHAKES,
    MAX_HANDSHAKES_PER_SOURCE,
    MAX_WAITING,
    MAX_WAITING_PER_SOURCE,
    REFUSAL_LOG_INTERVAL,
    _source,
)
from covault.transport.framing import FrameError
from covault.transport.handshake import prepare_socket
from covault.transport.tls import TlsIdentity

log = logging.getLogger("covault.serving")
HELLO_TIMEOUT = 10.0  # seconds for a new link's TLS handshake and hello
STALE = 600.0  # seconds a query's shares wait for their batch before they are dropped
MAX_QUERY_ROWS = 1 << 16  # rows of one query (covault serve --max-query-rows)
HELD_QUERIES = 64  # queries of one client held at a party, waiting for their batch
MAX_REFUSED = 4096  # refused query ids remembered (the oldest forgotten first)
FRAME_SLACK = 1 << 12  # bytes of a query frame beyond its shares (header, op words)

Key = tuple[str, int, int]  # (client party, token, query id)


@dataclass
class Pending:
    """One query's shares at this party: ``client``, its link ``token``, ``qid``, ``rows``."""

    client: str
    token: int
    qid: int
    rows: int
    shares: np.ndarray
    at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> Key:
        return (self.client, self.token, self.qid)


class _Client:
    """One admitted link: its reader (the link's thread) and its writer thread."""

    def __init__(self, link: Link, party: str, token: int) -> None:
        self.link, self.party, self.token = link, party, token
        self.outbox: queue.Queue[list[np.ndarray] | None] = queue.Queue()
        self.alive = True
        self.done = False  # said bye
        threading.Thread(target=self._write, name=f"covault-door-out-{party}", daemon=True).start()

    def send(self, arrays: list[np.ndarray]) -> None:
        if self.alive:
            self.outbox.put(arrays)

    def _write(self) -> None:
        while True:
            arrays = self.outbox.get()
            if arrays is None:
                with contextlib.suppress(OSError):
                    self.link.close()  # after what was queued before the stop
                return
            try:
                self.link.send(arrays)
            except (OSError, ValueError) as exc:
                log.warning("front door: client %r gone while answering (%s)", self.party, exc)
                self.stop()
                return

    def stop(self, flush: bool = False) -> None:
        """Close the link; ``flush``: once the answers and errors already queued are sent."""
        if self.alive:
            self.alive = False
            self.outbox.put(None)
            if not flush:
                self.link.close()


class FrontDoor:
    """The front door of compute party ``party`` for model ``model`` (its public ``header``
    as JSON bytes): ``clients`` are the data parties allowed in; ``features`` and
    ``components`` (share components per party: 2pc 1, rep3 2) fix a query's shape."""

    def __init__(
        self,
        party: str,
        listener: socket.socket,
        tls: TlsIdentity | None,
        model: str,
        header: bytes,
        clients: Iterable[str],
        features: int,
        components: int,
        *,
        stall: float = 30.0,
        max_query_rows: int = MAX_QUERY_ROWS,
    ) -> None:
        self.party, self.listener, self.tls, self.model = party, listener, tls, model
        self.header, self.clients = header, frozenset(clients)
        self.features, self.components, self.stall = int(features), int(components), float(stall)
        if not 0 < max_query_rows <= MAX_ROWS:
            raise ValueError(
                f"front door of {party!r}: max_query_rows must be 1 to {MAX_ROWS}, got {max_query_rows}"
            )
        self.max_query_rows = int(max_query_rows)
        self.max_frame = self.components * self.max_query_rows * self.features * 8 + FRAME_SLACK
        # the welcome: the model's public header and this door's cap on a query's rows, which the
        # client checks before it sends (a larger frame would only be cut off as too large)
        self.welcome = json.dumps({**json.loads(header), "max_query_rows": self.max_query_rows}).encode()
        self._cond = threading.Condition()
        self._store: dict[Key, Pending] = {}
        self._refused: dict[Key, None] = {}  # insertion-ordered: the oldest forgotten first
        self._waiting: dict[str, int] = {}  # source address -> connections not yet admitted
        self._shaking: dict[str, int] = {}  # source address -> TLS handshakes in progress
        self._quiet_until = 0.0  # no "closed a connection" line before this (monotonic) time
        self._links: dict[tuple[str, int], _Client] = {}
        self.byes: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"covault-door-{party}", daemon=True)

    def start(self) -> FrontDoor:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closed = True
            links = list(self._links.values())
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept (close alone does not)
        with contextlib.suppress(OSError):
            self.listener.close()
        for c in links:
            c.stop()

    # -- links ------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, addr = self.listener.accept()
            except OSError:
                return
            if self._closed:  # accepted while closing: no batch loop will answer it
                sock.close()
                return
            source = _source(addr)
            with self._cond:
                mine = self._waiting.get(source, 0)
                full = mine >= MAX_WAITING_PER_SOURCE or sum(self._waiting.values()) >= MAX_WAITING
                if not full:
                    self._waiting[source] = mine + 1
            if full:
                sock.close()
                now = time.monotonic()
                if now >= self._quiet_until:  # at most one line per REFUSAL_LOG_INTERVAL
                    self._quiet_until = now + REFUSAL_LOG_INTERVAL
                    log.warning(
                        "front door of %r: closed a connection from %s (%d connections per source, %d in "
                        "all are in their handshake already; such lines are logged once per %g s)",
                        self.party, source, MAX_WAITING_PER_SOURCE, MAX_WAITING, REFUSAL_LOG_INTERVAL,
                    )  # fmt: skip
                continue
            threading.Thread(target=self._serve_link, args=(sock, addr, source), daemon=True).start()

    def _release(self, counts: dict[str, int], source: str) -> None:
        with self._cond:
            counts[source] -= 1
            if not counts[source]:
                del counts[source]
            self._cond.notify_all()

    def _handshake(self, sock: socket.socket, source: str) -> Link:
        """The TLS handshake in one of the handshake slots (within :data:`HELLO_TIMEOUT` of the
        connection's arrival, the wait for a slot included)."""
        end = time.monotonic() + HELLO_TIMEOUT
        with self._cond:
            while (
                sum(self._shaking.values()) >= MAX_HANDSHAKES
                or self._shaking.get(source, 0) >= MAX_HANDSHAKES_PER_SOURCE
            ):
                left = end - time.monotonic()
                if left <= 0 or self._closed:
                    raise TimeoutError(f"no handshake slot within {HELLO_TIMEOUT:g} s")
                self._cond.wait(left)
            self._shaking[source] = self._shaking.get(source, 0) + 1
        try:
            sock.settimeout(max(0.001, end - time.monotonic()))
            return Link(prepare_socket(sock, self.tls, server_side=True))
        finally:
            self._release(self._shaking, source)

    def _serve_link(self, sock: socket.socket, addr: Any, source: str) -> None:
        where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else "a local socket"
        try:
            try:
                link = self._handshake(sock, source)
            except (OSError, EOFError, ValueError) as exc:  # ssl.SSLError is an OSError
                log.warning("front door of %r: refused a connection from %s (%s)", self.party, where, exc)
                sock.close()
                return
            try:
                client = self._hello(link)
            except (OSError, EOFError, FrameError, CovaultError) as exc:
                log.warning("front door of %r: refused a client at %s: %s", self.party, where, exc)
                link.refuse(str(exc))
                link.close()
                return
        finally:
            self._release(self._waiting, source)
        log.info("front door of %r: client %r connected from %s", self.party, client.party, where)
        try:
            self._read(client)
        finally:
            with self._cond:  # the shares go before the link reads as gone (see connected)
                if self._links.get((client.party, client.token)) is client:
                    for k in [k for k in self._store if k[:2] == (client.party, client.token)]:
                        del self._store[k]  # no one to answer: its batch fails it everywhere
                    del self._links[(client.party, client.token)]
                client.stop()
                self._cond.notify_all()

    def _hello(self, link: Link) -> _Client:
        arrays = link.recv(HELLO_MAX)
        if len(arrays) != 4 or arrays[0].dtype != np.uint8 or arrays[0].tobytes() != MAGIC:
            raise Refused("not a covault serve client (expected its hello)")
        name, model = untext(arrays[1], 255), untext(arrays[2], 255)
        token = arrays[3]
        if token.dtype != np.uint8 or token.size != 8:
            raise Refused("the hello's token must be 8 bytes")
        names = link.channel.peer_names
        if names is not None and names != frozenset({name}):
            raise Refused(f"the client's certificate names {sorted(names)}, its hello {name!r}")
        if name not in self.clients:
            raise Refused(
                f"party {name!r} may not query this service (clients: data parties {sorted(self.clients)})"
            )
        if model != self.model:
            raise Refused(f"this service serves model {self.model!r}, not {model!r}")
        client = _Client(link, name, int(token.view(np.int64)[0]))
        with self._cond:
            old = self._links.pop((name, client.token), None)
            self._links[(name, client.token)] = client
        if old is not None:
            old.stop()
        link.channel.settimeout(self.stall)
        client.send([text(MAGIC), text(self.welcome)])
        return client

    def _read(self, c: _Client) -> None:
        link = c.link
        while c.alive and not self._closed:
            try:
                arrays = link.recv(self.max_frame)
            except TimeoutError:
                if link.received == 0:
                    continue  # an idle client is welcome
                log.warning(
                    "front door of %r: client %r stalled in the middle of a frame for %g s: dropped",
                    self.party, c.party, self.stall,
                )  # fmt: skip
                return
            except EOFError:
                if not c.done:
                    log.info("front door of %r: client %r disconnected", self.party, c.party)
                return
            except (OSError, FrameError, CovaultError) as exc:
                log.warning(
                    "front door of %r: client %r sent a malformed frame (%s): dropped",
                    self.party,
                    c.party,
                    exc,
                )
                return
            try:
                op = op_of(arrays)
            except CovaultError as exc:
                log.warning("front door of %r: client %r: %s: dropped", self.party, c.party, exc)
                return
            if op[0] == BYE:
                c.done = True
                with self._cond:
                    self.byes.add(c.party)
                    self._cond.notify_all()
                continue
            if op[0] != QUERY:
                log.warning(
                    "front door of %r: client %r sent op %d: dropped", self.party, c.party, int(op[0])
                )
                return
            revoked = self._revoked(c)
            if revoked is not None:
                log.warning("front door of %r: %s: dropped", self.party, revoked)
                c.send([np.array([ERROR, int(op[1]), REFUSED], np.int64), text(self.party), text(revoked)])
                c.stop(flush=True)
                return
            self._query(c, int(op[1]), arrays[1:])

    def _revoked(self, c: _Client) -> str | None:
        """Why ``c``'s certificate may no longer query (revoked, or the list is unusable); None
        if it may (or without TLS)."""
        cert = getattr(c.link.channel, "peer_cert", None)
        watch = self.tls.revocation if self.tls is not None else None
        if cert is None or watch is None:
            return None
        try:
            entry = watch.lookup(cert)
        except CovaultError as exc:
            return f"client {c.party!r} refused: this party cannot check certificates ({exc})"
        return None if entry is None else f"client {c.party!r} refused: {describe(c.party, entry)}"

    def _query(self, c: _Client, qid: int, arrays: list[np.ndarray]) -> None:
        key = (c.party, c.token, qid)
        problem = None
        shape = arrays[0].shape if len(arrays) == 1 else None
        if shape is None or arrays[0].dtype != np.int64:
            problem = "the query's shares must be one int64 array"
        elif len(shape) != 3 or shape[0] != self.components or shape[2] != self.features:
            problem = (
                f"the query's shares must have shape ({self.components}, n, {self.features}), got {shape}"
            )
        elif not 0 < shape[1] <= self.max_query_rows:
            problem = (
                f"a query has 1 to {self.max_query_rows} rows at this service (--max-query-rows), "
                f"got {shape[1]}"
            )
        elif qid <= 0:
            problem = f"query ids are positive, got {qid}"
        with self._cond:
            if problem is None and (key in self._store or key in self._refused):
                problem = f"query id {qid} is already taken"
            if problem is None and sum(k[0] == c.party for k in self._store) >= HELD_QUERIES:
                problem = f"client {c.party!r} has {HELD_QUERIES} queries waiting here already"
            if problem is None:
                self._store[key] = Pending(c.party, c.token, qid, int(shape[1]), arrays[0])
            else:
                self._refused[key] = None
                while len(self._refused) > MAX_REFUSED:
                    del self._refused[next(iter(self._refused))]
            self._purge()
            self._cond.notify_all()
        if problem is not None:
            log.warning(
                "front door of %r: client %r, query %d refused: %s", self.party, c.party, qid, problem
            )
            c.send([np.array([ERROR, qid, REFUSED], np.int64), text(self.party), text(problem)])

    # -- the service's side -----------------------------------------------------------------------
    def connected(self, client: str, token: int) -> bool:
        with self._cond:
            return self._live(client, token)

    def _live(self, client: str, token: int) -> bool:
        c = self._links.get((client, token))  # under self._cond
        return c is not None and c.alive

    def take(self, max_rows: int, wait: float) -> list[Pending]:
        """At the leader: the oldest pending queries, up to ``max_rows`` rows (at least one
        query), as soon as one is there (at most ``wait`` seconds): no wait for a fuller batch;
        taken out of the store. Queries of clients already gone are dropped (a log line)."""
        end = time.monotonic() + wait
        out: list[Pending] = []
        rows = 0
        with self._cond:
            while not self._store and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    return out
                self._cond.wait(left)
            for key in list(self._store):  # arrival order (a dict keeps insertion order)
                p = self._store[key]
                link = self._links.get((p.client, p.token))
                if link is None or not link.alive:
                    del self._store[key]
                    log.warning(
                        "front door of %r: client %r left before its query %d", self.party, p.client, p.qid
                    )
                    continue
                if out and rows + p.rows > max_rows:
                    break
                del self._store[key]  # taken: no longer held here (HELD_QUERIES counts the held)
                out.append(p)
                rows += p.rows
        return out

    def collect(
        self, keys: list[Key], wait: float, fresh: set[Key] | None = None, gone: set[Key] | None = None
    ) -> list[Pending | None]:
        """Elsewhere: the announced queries' shares, waiting up to ``wait`` seconds for those
        not yet here (None: never came, refused, or their client's link here is closed: no wait
        for those); taken out of the store. Shares of the same link that came BEFORE an
        announced query and are not announced with it are dropped: a link delivers in order, so
        the leader had them first and refused them (its client was told), or failed them.
        ``fresh``: the keys to wait for (default all); ``gone`` receives the keys whose shares
        can never come here (refused, or their link closed)."""
        end = time.monotonic() + wait
        with self._cond:
            while not self._closed:
                missing = [  # a closed link's shares never come: no wait for them
                    k
                    for k in keys
                    if k not in self._store
                    and k not in self._refused
                    and self._live(k[0], k[1])
                    and (fresh is None or k in fresh)
                ]
                left = end - time.monotonic()
                if not missing or left <= 0:
                    break
                self._cond.wait(left)
            self._drop_passed(keys)
            if gone is not None:
                gone.update(
                    k
                    for k in keys
                    if k not in self._store and (k in self._refused or not self._live(k[0], k[1]))
                )
            out = [self._store.pop(k, None) for k in keys]
            for k in keys:
                self._refused.pop(k, None)
            self._purge()
        return out

    def _drop_passed(self, keys: list[Key]) -> None:
        """Drop the held queries that an announcement of ``keys`` has passed (under the lock)."""
        announced = set(keys)
        order = list(self._store)  # arrival order
        last = {k[:2]: i for i, k in enumerate(order) if k in announced}
        for i, k in enumerate(order):
            if k not in announced and i < last.get(k[:2], -1):
                del self._store[k]
                log.info(
                    "front door of %r: client %r, query %d dropped: the leader announced a later query "
                    "of the same link (it refused this one)", self.party, k[0], k[2],
                )  # fmt: skip

    def _purge(self) -> None:
        """Drop shares that no batch took within :data:`STALE` seconds (their query failed
        elsewhere), with an error to their client."""
        old = [p for p in self._store.values() if time.monotonic() - p.at > STALE]
        for p in old:
            del self._store[p.key]
            self._error(p, self.party, f"query {p.qid} was never batched within {STALE:g} s")

    def answer(self, p: Pending, frac: int, shares: np.ndarray) -> None:
        """This party's share of ``p``'s answer, to its client alone."""
        with self._cond:
            c = self._links.get((p.client, p.token))
        if c is not None:
            c.send([np.array([ANSWER, p.qid, frac], np.int64), np.ascontiguousarray(shares)])

    def fail(self, p: Pending | Key, party: str, why: str) -> None:
        """Query ``p`` failed because of serving party ``party``: an error to its client."""
        client, token, qid = p.key if isinstance(p, Pending) else p
        with self._cond:
            self._store.pop((client, token, qid), None)
            self._refused.pop((client, token, qid), None)
        self._error(Pending(client, token, qid, 0, np.empty(0, np.int64)), party, why)

    def _error(self, p: Pending, party: str, why: str) -> None:
        c = self._links.get((p.client, p.token))
        if c is not None:
            c.send([np.array([ERROR, p.qid, PEER], np.int64), text(party), text(why)])

    def fail_all(self, party: str, why: str) -> int:
        """Every query held here fails naming ``party`` (the service lost it); their number."""
        with self._cond:
            held = list(self._store.values())
            self._store.clear()
            self._refused.clear()
        for p in held:
            self._error(p, party, why)
        return len(held)

    def said_bye(self, client: str) -> bool:
        with self._cond:
            return client in self.byes
