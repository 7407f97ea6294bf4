"""A compute party's front door: clients connect, send their shares of queries, get answers.

:class:`FrontDoor` listens at :func:`~covault.serving.wire.door_address` and accepts any number
of clients at once, each on its own mutually authenticated link (one thread per link; the TLS
handshake and hello within :data:`HELLO_TIMEOUT` seconds). A link is admitted when its
certificate names a data party of the config allowed to query (:func:`~covault.transport.
handshake.prepare_socket` also checks the revocation list) and its hello names the served
model; the welcome carries the model's public header. Each query's shares are checked (int64,
``(components, n, features)``, ``1 <= n <= MAX_ROWS``, a fresh query id) and kept until the
service's batch takes them (:meth:`take` at the leader, :meth:`collect` elsewhere); a malformed
one is refused to its client alone. A client that sends a malformed frame or stalls in the
middle of one for ``stall`` seconds is dropped, with a log line naming it; nothing else is
disturbed. Answers and errors go out through one writer thread per link, so that a client that
stops reading delays nobody.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
from covault.transport.framing import FrameError
from covault.transport.handshake import prepare_socket
from covault.transport.tls import TlsIdentity

log = logging.getLogger("covault.serving")
HELLO_TIMEOUT = 10.0  # seconds for a new link's TLS handshake and hello
STALE = 600.0  # seconds a query's shares wait for their batch before they are dropped

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
                return
            try:
                self.link.send(arrays)
            except (OSError, ValueError) as exc:
                log.warning("front door: client %r gone while answering (%s)", self.party, exc)
                self.stop()
                return

    def stop(self) -> None:
        if self.alive:
            self.alive = False
            self.outbox.put(None)
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
    ) -> None:
        self.party, self.listener, self.tls, self.model = party, listener, tls, model
        self.header, self.clients = header, frozenset(clients)
        self.features, self.components, self.stall = int(features), int(components), float(stall)
        self._cond = threading.Condition()
        self._store: dict[Key, Pending] = {}
        self._order: deque[Key] = deque()  # arrival order (the leader batches in it)
        self._refused: set[Key] = set()
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
            threading.Thread(target=self._serve_link, args=(sock, addr), daemon=True).start()

    def _serve_link(self, sock: socket.socket, addr: Any) -> None:
        where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else "a local socket"
        try:
            sock.settimeout(HELLO_TIMEOUT)
            link = Link(prepare_socket(sock, self.tls, server_side=True))
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
        log.info("front door of %r: client %r connected from %s", self.party, client.party, where)
        try:
            self._read(client)
        finally:
            client.stop()
            with self._cond:
                if self._links.get((client.party, client.token)) is client:
                    del self._links[(client.party, client.token)]
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
        client.send([text(MAGIC), text(self.header)])
        return client

    def _read(self, c: _Client) -> None:
        link = c.link
        while c.alive and not self._closed:
            try:
                arrays = link.recv()
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
            self._query(c, int(op[1]), arrays[1:])

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
        elif not 0 < shape[1] <= MAX_ROWS:
            problem = f"a query has 1 to {MAX_ROWS} rows, got {shape[1]}"
        elif qid <= 0:
            problem = f"query ids are positive, got {qid}"
        with self._cond:
            if problem is None and (key in self._store or key in self._refused):
                problem = f"query id {qid} is already taken"
            if problem is None:
                self._store[key] = Pending(c.party, c.token, qid, int(shape[1]), arrays[0])
                self._order.append(key)
            else:
                self._refused.add(key)
            self._cond.notify_all()
        if problem is not None:
            log.warning(
                "front door of %r: client %r, query %d refused: %s", self.party, c.party, qid, problem
            )
            c.send([np.array([ERROR, qid, REFUSED], np.int64), text(self.party), text(problem)])

    # -- the service's side -----------------------------------------------------------------------
    def connected(self, client: str, token: int) -> bool:
        with self._cond:
            c = self._links.get((client, token))
            return c is not None and c.alive

    def take(self, max_rows: int, wait: float) -> list[Pending]:
        """At the leader: the oldest pending queries, up to ``max_rows`` rows (at least one
        query), as soon as one is there (at most ``wait`` seconds): no wait for a fuller batch.
        Queries of clients already gone are dropped (a log line)."""
        end = time.monotonic() + wait
        out: list[Pending] = []
        rows = 0
        with self._cond:
            while not self._order and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    return out
                self._cond.wait(left)
            while self._order:
                p = self._store.get(self._order[0])
                if p is None:
                    self._order.popleft()
                    continue
                link = self._links.get((p.client, p.token))
                if link is None or not link.alive:
                    self._order.popleft()
                    del self._store[p.key]
                    log.warning(
                        "front door of %r: client %r left before its query %d", self.party, p.client, p.qid
                    )
                    continue
                if out and rows + p.rows > max_rows:
                    break
                self._order.popleft()
                out.append(p)
                rows += p.rows
        return out

    def collect(self, keys: list[Key], wait: float) -> list[Pending | None]:
        """Elsewhere: the announced queries' shares, waiting up to ``wait`` seconds for those
        not yet here (None: never came, or refused); taken out of the store."""
        end = time.monotonic() + wait
        with self._cond:
            while not self._closed:
                missing = [k for k in keys if k not in self._store and k not in self._refused]
                left = end - time.monotonic()
                if not missing or left <= 0:
                    break
                self._cond.wait(left)
            out = [self._store.pop(k, None) for k in keys]
            for k in keys:
                self._refused.discard(k)
            self._purge()
        return out

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
            self._refused.discard((client, token, qid))
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
            self._order.clear()
            self._refused.clear()
        for p in held:
            self._error(p, party, why)
        return len(held)

    def said_bye(self, client: str) -> bool:
        with self._cond:
            return client in self.byes
