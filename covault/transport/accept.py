"""Connection set-up, the accepting side: one connection from each earlier party, and limits
that keep strangers from holding a party up.

Denial of service: anyone who can reach a party's port can open connections to it. Accepted
connections wait, without a thread each, for their first bytes; one that sends nothing within
:data:`FIRST_BYTE_TIMEOUT` (3 s, or the session timeout if shorter) is closed, and so is the
oldest silent one when more than :data:`MAX_WAITING_PER_SOURCE` (32) connections from one
source address (IPv6: one /64), or more than :data:`MAX_WAITING` (256) in all, are waiting. A
connection whose bytes arrived gets one of :data:`MAX_HANDSHAKES` (32) handshake slots, at most
:data:`MAX_HANDSHAKES_PER_SOURCE` (4) per source address (more wait their turn), and must finish
its TLS handshake and hello within :data:`~covault.transport.handshake.HANDSHAKE_TIMEOUT` (5 s,
or the session timeout if shorter) of getting its slot, however slowly its bytes arrive: one
deadline per handshake, not per read (:class:`~covault.transport.handshake._Deadlines` shuts
the socket down when it passes); a dialling party gives each attempt twice that (a wait for a
slot, then the handshake). A party speaks as soon as it is connected, so idle connections,
however many and from however many addresses, cannot keep it out (an attempt dropped all the
same is retried); strangers that start a handshake and stall hold their address's slots for 5 s
at most. Dropped connections are counted in the set-up error and logged once; refusals are
counted and logged at most once per source address per :data:`REFUSAL_LOG_INTERVAL` (5 s; the
next line counts those left out), on logger ``covault.transport``.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import logging
import math
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence

from covault.errors import PeerError
from covault.transport import handshake
from covault.transport.channel import SocketChannel
from covault.transport.framing import (
    MAGIC,
    FrameError,
)
from covault.transport.handshake import (
    _DEADLINES,
    _NEEDS_TLS,
    _ONE_SIDE,
    _RUNS_WITHOUT_TLS,
    _SET_UP_OVER,
    _fmt_addr,
    _Handshake,
    _read_hello,
    _read_tls_notice,
    _Refused,
    _send_hello,
    _send_refusal,
    _Watch,
    prepare_socket,
)
from covault.transport.sessionid import (
    _SESSION_MISMATCH_HEAD,
    SessionMismatchError,
    _differing,
    _list_keys,
    _printable,
    connection_tag,
)
from covault.transport.tls import REVOKED_REFUSAL, PeerCertificateError, PeerRevokedError, describe_tls_error

FIRST_BYTE_TIMEOUT = 3.0  # an accepted connection must start its handshake within this (capped)
MAX_WAITING = 256  # accepted connections that sent nothing yet; the oldest is dropped for a new one
MAX_WAITING_PER_SOURCE = 32  # the same, per source address (IPv6: per /64)
MAX_HANDSHAKES = 32  # handshakes in progress at once; more wait for a slot
MAX_HANDSHAKES_PER_SOURCE = 4  # the same, per source address
ACCEPT_BATCH = 8  # connections accepted per turn of the acceptor's loop
MAX_LISTED_REFUSALS = 20  # refusals quoted in a set-up error
REFUSAL_LOG_INTERVAL = 5.0  # at most one refusal logged per source address in this many seconds
MAX_TLS_SKIP = 1 << 16  # TLS bytes a party without TLS reads past, looking for a caller's notice

log = logging.getLogger("covault.transport")


def _peek(sock: socket.socket, n: int, end: float) -> bytes:
    """The first ``n`` bytes waiting on a blocking ``sock``, left unread (fewer at end of stream
    or when monotonic time ``end`` passes first; OSError if none came)."""
    hangup = select.poll()  # whether the peer ended its stream after fewer bytes
    hangup.register(sock, getattr(select, "POLLRDHUP", 0))
    while True:
        sock.settimeout(max(0.001, end - time.monotonic()))
        head = sock.recv(n, socket.MSG_PEEK)
        if len(head) >= n or not head or time.monotonic() >= end or hangup.poll(2):
            return head


def _skip(sock: socket.socket, n: int, end: float) -> int:
    """Read and discard ``n`` bytes of ``sock`` by monotonic time ``end`` (EOFError if it ends
    first, TimeoutError if time runs out); returns ``n``."""
    left = n
    while left:
        sock.settimeout(max(0.001, end - time.monotonic()))
        got = len(sock.recv(min(left, 1 << 14)))
        if not got:
            raise EOFError("connection closed")
        left -= got
    return n


def _source(addr) -> str:
    """The source a connection counts against for the per-source limits (IPv6: its /64)."""
    try:
        ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
    except (TypeError, IndexError, ValueError):
        return str(addr)
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class _Waiting:
    """An accepted connection that has not started its handshake yet."""

    __slots__ = ("addr", "ready", "since", "sock", "source")

    def __init__(self, sock: socket.socket, addr, now: float):
        self.sock, self.addr, self.source, self.since = sock, addr, _source(addr), now
        self.ready = False  # bytes arrived: waits only for a handshake slot


class _Acceptor(threading.Thread):
    """Accepts one connection from each expected party; refuses (and logs) everything else.

    One thread accepts and watches connections until they send their first bytes (without a
    thread each, with the limits of the module docstring); then each is handshaken in a thread
    of its own, so a stalling stranger cannot hold up the parties. With ``guard`` it keeps
    listening after set-up, refusing late or restarted parties, until :meth:`stop`.
    """

    def __init__(
        self,
        listener: socket.socket,
        expected: Sequence[str],
        hs: _Handshake,
        deadline: float,
        timeout: float = handshake.HANDSHAKE_TIMEOUT,
        parties: Sequence[str] = (),
    ):
        super().__init__(name=f"covault-accept-{hs.me}", daemon=True)
        self.listener = listener
        self.expected = tuple(expected)
        self.parties = frozenset(parties)  # the session's other parties
        self.hs = hs
        self.deadline = deadline
        self.first_byte_timeout = min(FIRST_BYTE_TIMEOUT, timeout)
        self.handshake_timeout = min(handshake.HANDSHAKE_TIMEOUT, timeout)
        self.got: dict[str, SocketChannel] = {}
        self.nonces: dict[str, bytes] = {}
        self.refused: list[str] = []
        self.refusals = 0
        self.dropped = 0  # connections closed for sending nothing in time, or to make room
        self.error: BaseException | None = None
        self.fatal: list[PeerError] = []  # a party of the session runs another one
        self.revoked: dict[str, str] = {}  # parties of the session refused as revoked: why
        self.heard: set[str] = set()  # parties answered (accepted, or told they run another session)
        self.done = threading.Event()
        self.guard = False
        self._stopped = False
        self._lock = threading.Lock()  # guards got, nonces, refused, _stopped, _pending, _busy
        self._pending: set[socket.socket] = set()  # in their handshake
        self._busy: dict[str, int] = {}  # handshakes in progress per source
        self._logged: dict[str, tuple[float, int]] = {}  # per source: last refusal logged, not logged since
        self._waiting: dict[int, _Waiting] = {}  # by file descriptor, oldest first (acceptor only)
        self._by_source: dict[str, dict[int, None]] = {}
        self._ready = 0
        self._poller = select.poll()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        if not self.expected:
            self.done.set()

    # -- the accepting loop (this thread only) ----------------------------------------------------
    def run(self) -> None:
        lfd = wfd = -1
        try:
            if self.listener.fileno() == -1:
                return  # closed before set-up began
            self.listener.setblocking(False)
            lfd, wfd = self.listener.fileno(), self._wake_r.fileno()
            self._poller.register(lfd, select.POLLIN)
            self._poller.register(wfd, select.POLLIN)
            while True:
                with self._lock:
                    if self._stopped or (self.done.is_set() and not self.guard):
                        return
                    setting_up = len(self.got) < len(self.expected)
                wait = 0.25  # bounds how late idle connections are dropped
                if setting_up:
                    left = self.deadline - time.monotonic()
                    if left <= 0:
                        return
                    wait = min(wait, left)
                accept = False
                for fd, ev in self._poller.poll(math.ceil(wait * 1000)):
                    if fd == lfd:
                        if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                            return  # listener shut down or closed
                        accept = True
                    elif fd == wfd:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif fd in self._waiting:
                        self._look(self._waiting[fd])
                if self._ready:
                    self._start_handshakes()
                if accept and not self._accept():
                    return
                self._expire()
        except BaseException as exc:  # reported by connect_mesh
            self.error = exc
            self.hs.failed.set()
        finally:
            for w in list(self._waiting.values()):
                w.sock.close()
            self._waiting.clear()
            self._by_source.clear()
            self._wake_r.close()
            self.done.set()

    def _accept(self) -> bool:
        """Accept up to ACCEPT_BATCH connections; False once the listener is gone."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if self._waiting:  # out of descriptors: make room
                        self._drop(next(iter(self._waiting.values())))
                        continue
                    time.sleep(0.01)
                    return True
                return False  # listener closed by stop()
            w = _Waiting(sock, addr, time.monotonic())
            sock.setblocking(False)
            fd = sock.fileno()
            self._waiting[fd] = w
            same = self._by_source.setdefault(w.source, {})
            same[fd] = None
            self._poller.register(fd, select.POLLIN)
            if len(same) > MAX_WAITING_PER_SOURCE:
                self._make_room(same)
            if len(self._waiting) > MAX_WAITING:
                self._make_room(self._waiting)
        return True

    def _make_room(self, fds: Mapping[int, object]) -> None:
        """Drop the oldest of ``fds`` that sent nothing (else the oldest waiting for a slot)."""
        oldest_ready = None
        for fd in list(fds):
            w = self._waiting[fd]
            if w.ready or self._look(w):
                oldest_ready = oldest_ready or w
                continue
            if w.sock.fileno() in self._waiting:  # still open, nothing sent: make room with it
                self._drop(w)
            return
        if oldest_ready is not None:
            self._drop(oldest_ready)

    def _look(self, w: _Waiting) -> bool:
        """Whether a waiting connection's first bytes are there (it then waits only for a
        handshake slot); one that closed without sending anything is dropped."""
        try:
            first = w.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            first = b""
        if not first:
            self._drop(w)
            return False
        if not w.ready:
            self._poller.unregister(w.sock.fileno())
            w.ready = True
            self._ready += 1
        return True

    def _drop(self, w: _Waiting) -> None:
        self._forget(w)
        w.sock.close()
        self.dropped += 1
        if self.dropped == 1:
            log.warning(
                "party %r: dropping connections that send nothing (the first from %s); limits: %g s, "
                "%d per source address, %d in all",
                self.hs.me,
                _fmt_addr(w.addr),
                self.first_byte_timeout,
                MAX_WAITING_PER_SOURCE,
                MAX_WAITING,
            )

    def _forget(self, w: _Waiting) -> None:
        fd = w.sock.fileno()
        del self._waiting[fd]
        same = self._by_source[w.source]
        del same[fd]
        if not same:
            del self._by_source[w.source]
        if w.ready:
            self._ready -= 1
        else:
            self._poller.unregister(fd)

    def _expire(self) -> None:
        """Drop connections that sent nothing within the first-byte timeout."""
        limit = time.monotonic() - self.first_byte_timeout
        for w in list(self._waiting.values()):
            if w.since > limit:
                return
            if not w.ready and not self._look(w) and w.sock.fileno() in self._waiting:
                self._drop(w)  # still open, and nothing came in time

    def _start_handshakes(self) -> None:
        """Hand connections whose first bytes arrived to handshake threads, oldest first, as
        slots allow."""
        for w in list(self._waiting.values()):
            if not w.ready:
                continue
            with self._lock:
                if self._stopped:
                    return
                busy = self._busy.get(w.source, 0)
                if len(self._pending) >= MAX_HANDSHAKES:
                    return
                if busy >= MAX_HANDSHAKES_PER_SOURCE:
                    continue
                self._pending.add(w.sock)
                self._busy[w.source] = busy + 1
            self._forget(w)
            threading.Thread(
                target=self._serve, args=(w,), name=f"covault-hello-{self.hs.me}", daemon=True
            ).start()

    # -- one handshake (its own thread) -----------------------------------------------------------
    def _refuse(
        self, ch, sock, addr, reason: str, claim: str | None = None, manifest: bytes | None = None
    ) -> None:
        who = f" claiming to be {_printable(claim, 255)!r}" if claim else ""
        quiet = self._quiet(_source(addr))
        if quiet is not None:
            also = f" ({quiet} more refused from this address since the last line)" if quiet else ""
            log.warning(
                "party %r refused a connection from %s%s: %s%s",
                self.hs.me,
                _fmt_addr(addr),
                who,
                reason,
                also,
            )
        if ch is not None:
            _send_refusal(ch, reason, manifest)
            ch.close()
        else:
            sock.close()
        with self._lock:
            self.refusals += 1
            if len(self.refused) < MAX_LISTED_REFUSALS:
                self.refused.append(f"{_fmt_addr(addr)}{who}: {reason}")

    def _quiet(self, source: str) -> int | None:
        """None if a refusal from ``source`` is not to be logged now (one line per source per
        :data:`REFUSAL_LOG_INTERVAL`), else how many were not logged since its last line."""
        now = time.monotonic()
        with self._lock:
            last = self._logged.pop(source, None)
            if last is not None and now - last[0] < REFUSAL_LOG_INTERVAL:
                self._logged[source] = (last[0], last[1] + 1)
                return None
            self._logged[source] = (now, 0)
            while len(self._logged) > MAX_WAITING:  # forget the sources heard from longest ago
                del self._logged[next(iter(self._logged))]
            return last[1] if last is not None else 0

    def _serve(self, w: _Waiting) -> None:
        try:
            self._handle(w.sock, w.addr)
        except BaseException as exc:  # never die silently
            self._refuse(None, w.sock, w.addr, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._pending.discard(w.sock)
                self._busy[w.source] -= 1
                if not self._busy[w.source]:
                    del self._busy[w.source]
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")  # a slot is free

    def _handle(self, sock: socket.socket, addr) -> None:
        """Handshake one accepted connection, all of it within the handshake timeout (capped by
        what is left of set-up) from now."""
        left = self.deadline - time.monotonic() if not self.done.is_set() else self.handshake_timeout
        limit = max(0.001, min(left, self.handshake_timeout))
        watch = _DEADLINES.watch(sock, time.monotonic() + limit)
        try:
            self._handshake(sock, addr, watch, f"handshake not done within {limit:g} s")
        finally:
            _DEADLINES.release(watch)

    def _handshake(self, sock: socket.socket, addr, watch: _Watch, slow: str) -> None:
        hs = self.hs
        ch = None
        try:
            sock.setblocking(True)
            sock.settimeout(max(0.001, watch.deadline - time.monotonic()))
            head = _peek(sock, len(MAGIC), watch.deadline)
            if hs.tls is not None and head == MAGIC:
                self._plaintext_caller(sock, addr)
                return
            if hs.tls is None and head[:1] == b"\x16" and head[1:2] == b"\x03":
                self._tls_caller(sock, addr, watch, slow)
                return
            try:
                ch = prepare_socket(sock, hs.tls, server_side=True)
            except ssl.SSLError as exc:
                reason = slow if watch.expired() else f"TLS handshake: {describe_tls_error(exc)[0]}"
                if isinstance(exc, PeerRevokedError) and exc.serial is not None and exc.party in self.parties:
                    with self._lock:
                        self.revoked[exc.party] = describe_tls_error(exc)[0]
                self._refuse(None, sock, addr, reason)
                return
            sid, name, nonce, theirs = _read_hello(ch)
        except (FrameError, EOFError, OSError) as exc:
            bad = f"bad hello ({exc or 'connection closed'})"
            if isinstance(exc, _Refused) and self._revoked_by(ch, exc):
                bad = f"it refused this party's certificate ({exc})"
            self._refuse(ch, sock, addr, slow if watch.expired() else bad)
            return
        timely = _DEADLINES.release(watch)  # the rest only writes (bounded by the socket's timeout)
        mismatch = None
        with self._lock:
            reason = None
            if not timely:
                reason = slow
            elif ch.peer_names is not None and name not in ch.peer_names:
                reason = f"its certificate names {sorted(ch.peer_names)}, not {name!r}"
            elif not hmac.compare_digest(sid, hs.session_id):
                # only a party of this session (under TLS: its certificate, checked above) is
                # told the manifest and the keys that differ; anyone else learns nothing more
                party = name in self.parties
                mismatch = SessionMismatchError(name, _differing(hs.manifest, theirs) if party else ())
                if mismatch.keys:
                    reason = f"{_SESSION_MISMATCH_HEAD}: keys that differ: {_list_keys(mismatch.keys)}"
                else:
                    reason = f"{_SESSION_MISMATCH_HEAD} (another job, a different consortium config, or a different job name)"
                if party:
                    if not self.done.is_set():  # a party of ours: stop at once
                        self.fatal.append(mismatch)
                    self.heard.add(name)
                else:
                    mismatch = None
            elif name in self.got:
                if self.nonces[name] != nonce:
                    reason = (
                        f"{name!r} is already connected and this connection comes from a new incarnation "
                        "(restarted party?): a running session cannot be rejoined"
                    )
                else:
                    reason = f"{name!r} is already connected"
            elif name not in self.expected:
                reason = f"{name!r} is not a party expected to connect to {hs.me!r}"
            elif self._stopped:
                reason = _SET_UP_OVER
            if not reason:
                try:
                    _send_hello(ch, hs.me, hs.session_id, hs.nonce, hs.blob)
                    ch.settimeout(None)
                except (OSError, ssl.SSLError) as exc:
                    ch.close()
                    self.refusals += 1
                    if len(self.refused) < MAX_LISTED_REFUSALS:
                        self.refused.append(f"{_fmt_addr(addr)} ({name!r}): handshake failed: {exc}")
                    return
                ch.tag = connection_tag(hs.session_id, (name, nonce), (hs.me, hs.nonce))
                self._pending.discard(sock)  # a party's connection now: stop() must not cut it
                self.nonces[name] = nonce
                self.got[name] = ch
                self.heard.add(name)
                if len(self.got) == len(self.expected):
                    self.done.set()
                return
        self._refuse(ch, sock, addr, reason, claim=name, manifest=None if mismatch is None else hs.blob)
        if mismatch is not None and self.fatal:
            hs.mismatch()

    def _revoked_by(self, ch: SocketChannel, exc: _Refused) -> bool:
        """Whether a party of this session, authenticated by TLS, refused this party's
        certificate as revoked; if so the set-up ends with its reason, as with a session
        mismatch (after the others are told, within the mismatch grace)."""
        names = (ch.peer_names or frozenset()) & self.parties
        if self.hs.tls is None or not names or not str(exc).startswith(REVOKED_REFUSAL):
            return False
        peer = min(names)
        with self._lock:
            if not self.done.is_set() and peer not in self.heard:
                self.fatal.append(PeerCertificateError(peer, f"it refused this party's certificate: {exc}"))
                self.heard.add(peer)
        self.hs.mismatch()  # answer and dial the others for a few seconds more: they learn it too
        return True

    def _plaintext_caller(self, sock: socket.socket, addr) -> None:
        """A caller without TLS at a party with TLS: read its hello (for the log), refuse it in
        plaintext. Its claim is unauthenticated, so this party goes on waiting for the genuine one."""
        ch = SocketChannel(sock)
        try:
            name = _read_hello(ch)[1]
        except (FrameError, EOFError, OSError):
            name = None
        self._refuse(ch, sock, addr, _NEEDS_TLS, claim=name)

    def _tls_caller(self, sock: socket.socket, addr, watch: _Watch, slow: str) -> None:
        """A caller with TLS at a party without: refuse it in plaintext (its TLS library reports a
        record that is not TLS), then read past its TLS records to the notice a covault party
        sends with its name; a party of this session that runs TLS stops the set-up at once (as
        any claim does without TLS)."""
        ch = SocketChannel(sock)
        _send_refusal(ch, _RUNS_WITHOUT_TLS)
        name = None
        with contextlib.suppress(FrameError, EOFError, OSError):
            skipped = 0
            while skipped <= MAX_TLS_SKIP:
                head = _peek(sock, 5, watch.deadline)
                if head[:4] == MAGIC:
                    name = _read_tls_notice(ch)
                    break
                if len(head) < 5 or head[0] not in (0x14, 0x15, 0x16, 0x17) or head[1] != 3:
                    break
                skipped += _skip(sock, 5 + int.from_bytes(head[3:5], "big"), watch.deadline)
        reason = f"the caller runs TLS and this party does not ({_ONE_SIDE})"
        if watch.expired():
            reason += f"; {slow}"
        self._refuse(ch, sock, addr, reason, claim=name)
        with self._lock:
            if name is None or name not in self.parties or self.done.is_set() or name in self.heard:
                return
            self.fatal.append(PeerError(name, f"it runs TLS and this party runs without it ({_ONE_SIDE})"))
            self.heard.add(name)
        self.hs.mismatch()

    def stop(self) -> None:
        """Stop accepting and close the listener; connections still in their handshake are cut."""
        with self._lock:
            self._stopped = True
            pending = list(self._pending)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self is not threading.current_thread() and self.is_alive():
            self.join(2.0)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in pending:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._wake_w.close()


class LateJoinGuard:
    """Keeps a party's listener open after set-up to refuse late or restarted parties clearly.

    Pass one to :func:`connect_mesh`; call :meth:`stop` (or pass it as ``on_close`` of the
    transport) when the session ends.
    """

    def __init__(self) -> None:
        self._acceptor: _Acceptor | None = None

    def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.stop()
            self._acceptor = None
