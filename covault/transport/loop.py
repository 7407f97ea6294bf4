"""The message loop of established connections: framed messages, one event loop per party.

:class:`TcpTransport`: the party's own thread does all I/O, on non-blocking sockets, with no
thread hand-off per message. ``exchange`` (one round) queues one frame per destination
(referencing the arrays' memory; over TLS, encrypted chunk by chunk), writes what the kernel takes,
and then polls every connection, writing the rest and reading whatever arrives from ANY peer into
that peer's inbox (:class:`~covault.transport.framing.FrameParser` receives large arrays straight
into their buffers), until everything is written and one message from each awaited peer is there;
before sleeping in ``poll`` it looks for up to :data:`SPIN_SECONDS` (poll without waiting),
yielding the core (waking from ``poll`` costs more than a short wait: on loopback a round trip of
small messages over TLS took 105-114 us after ten looks and 37-38 us after 60 us of them). It
returns only when every queued byte is written, so callers may reuse their arrays at once. Since a
party inside the transport always drains every connection, two parties sending large messages to
each other at the same time never deadlock. A closed connection, an abort notice or a malformed frame ends the peer's stream:
its queued messages are still delivered, then the next receive from it raises PeerError naming it
(preferring a peer whose connection was lost over one that merely reported stopping because of it).
The timeout is one of silence: an exchange fails when no byte from an awaited peer, or to a
destination, moved for that long.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from covault.errors import PartyError, PeerError
from covault.transport.base import Message, Transport
from covault.transport.channel import SocketChannel
from covault.transport.framing import (
    KIND_ABORT,
    KIND_DATA,
    MAX_FRAME_BYTES,
    FrameError,
    FrameParser,
    encode_frame,
    encode_frame_sized,
)
from covault.transport.tls import describe_tls_error

SPIN_SECONDS = 60e-6  # how long an exchange looks (poll without waiting, yielding the core) before it sleeps

log = logging.getLogger("covault.transport")


# -- transport -----------------------------------------------------------------------------------
class _Failure:
    """End of a peer's stream: the connection is gone, for ``reason``; ``lost``: it broke (not an
    abort notice, and not a clean close by a peer that finished)."""

    def __init__(self, reason: str, lost: bool):
        self.reason = reason
        self.lost = lost


class _Peer:
    """One connection's state inside :class:`TcpTransport`."""

    __slots__ = ("activity", "ch", "events", "failure", "fd", "inbox", "name", "parser", "received", "sent")

    def __init__(self, name: str, ch: SocketChannel, max_frame_bytes: int):
        self.name, self.ch, self.fd = name, ch, ch.fileno()
        self.parser = FrameParser(max_frame_bytes, ch.tag)
        self.inbox: deque[Message] = deque()
        self.failure: _Failure | None = None
        self.sent = self.received = 0  # framed bytes
        self.activity = 0  # bytes read so far (progress, for the stall timeout)
        self.events = 0  # what the poller watches for (0: unregistered)


_IN = select.POLLIN
_OUT = select.POLLOUT


class TcpTransport(Transport):
    """Framed messages over one connected channel (or socket) per peer (see the module docstring).

    ``wire_bytes_sent`` / ``wire_bytes_received`` count framed bytes (headers included, TLS
    record overhead not); :class:`~covault.transport.base.Network` counts payload bytes.
    ``send_timeout``: how long :meth:`send` may wait for a peer that reads nothing.
    ``on_close`` runs once when the transport closes (e.g. :meth:`LateJoinGuard.stop`).
    """

    def __init__(
        self,
        party: str,
        channels: Mapping[str, SocketChannel | socket.socket],
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        send_timeout: float = 60.0,
        on_close: Callable[[], None] | None = None,
    ):
        self.party = party
        self.peers = tuple(channels)
        self.max_frame_bytes = int(max_frame_bytes)
        self.send_timeout = float(send_timeout)
        self._on_close = on_close
        self._closed = False
        self._poller = select.poll()
        self._peers: dict[str, _Peer] = {}
        self._by_fd: dict[int, _Peer] = {}
        for name, c in channels.items():
            ch = c if isinstance(c, SocketChannel) else SocketChannel(c)
            ch.set_nonblocking()
            p = _Peer(name, ch, self.max_frame_bytes)
            self._peers[name] = self._by_fd[p.fd] = p
            self._watch(p)
        for p in self._peers.values():
            # TLS may have read a peer's first records together with its hello: poll would never
            # report those bytes (they left the socket), so take them now
            self._read(p)

    @property
    def tls(self) -> bool:
        """Whether every connection runs TLS."""
        return bool(self._peers) and all(p.ch.tls for p in self._peers.values())

    @property
    def wire_bytes_sent(self) -> int:
        return sum(p.sent for p in self._peers.values())

    @property
    def wire_bytes_received(self) -> int:
        return sum(p.received for p in self._peers.values())

    def _peer(self, name: str) -> _Peer:
        p = self._peers.get(name)
        if p is None:
            raise PartyError(f"party {self.party!r} has no peer {name!r} (peers: {list(self.peers)})")
        return p

    # -- messages ---------------------------------------------------------------------------------
    def send(self, to: str, message: Message) -> None:
        self.exchange({to: message}, (), self.send_timeout)

    def recv(self, frm: str, timeout: float) -> Message:
        return self.exchange(None, (frm,), timeout)[frm]

    def exchange(
        self, sends: Mapping[str, Message] | None, recv_from: Sequence[str], timeout: float
    ) -> dict[str, Message]:
        """Queue every message of ``sends``, then write and read until all of them are written and
        one message from each of ``recv_from`` has arrived. Raises PeerError naming the peer when a
        connection fails or nothing moves for ``timeout`` seconds."""
        got: dict[str, Message] = {}
        targets: list[_Peer] = []
        if self._closed:
            names = [*(sends or ()), *recv_from]
            if names:
                raise PeerError(self._peer(names[0]).name, "the transport is closed")
        peers = self._peers
        if sends:
            for to, msg in sends.items():
                p = peers.get(to) or self._peer(to)
                if p.failure is not None:
                    self._raise_failure(p)
                header, bufs, size = encode_frame_sized(msg, KIND_DATA, p.ch.tag)
                bufs.insert(0, header)
                p.ch.queue(bufs)
                p.sent += size
                targets.append(p)
                self._flush(p)
        waiting = []
        for frm in recv_from:
            p = peers.get(frm) or self._peer(frm)
            if p.inbox:
                got[frm] = p.inbox.popleft()
            else:
                if p.failure is not None:
                    self._raise_failure(p)
                waiting.append(p)
        spin_until, deadline, mark = time.perf_counter() + SPIN_SECONDS, 0.0, None
        while True:
            if waiting:
                waiting = [p for p in waiting if not self._take(p, got)]
            if not waiting and not any(p.events & _OUT for p in targets):
                return got
            # the answer is often (nearly) there: look, yielding the core
            if time.perf_counter() < spin_until:
                if not self._wait(None):
                    os.sched_yield()
                continue
            if mark is None:
                deadline, mark = time.monotonic() + timeout, self._progress(waiting, targets)
            self._wait(deadline)
            waiting = [p for p in waiting if not self._take(p, got)]
            now = self._progress(waiting, targets)
            if now != mark:
                mark, deadline = now, time.monotonic() + timeout
            elif time.monotonic() >= deadline:
                self._stalled(waiting, targets, timeout)

    @staticmethod
    def _progress(waiting: list[_Peer], targets: list[_Peer]) -> tuple[int, int, int]:
        """Changes whenever this exchange moves: bytes from the awaited peers or to the targets."""
        return len(waiting), sum(p.activity for p in waiting), sum(p.ch.written for p in targets)

    def _take(self, p: _Peer, got: dict[str, Message]) -> bool:
        """Move ``p``'s next message into ``got`` (True), raise if its stream ended, else False."""
        if p.inbox:
            got[p.name] = p.inbox.popleft()
            return True
        if p.failure is not None:
            self._raise_failure(p)
        return False

    def _raise_failure(self, p: _Peer) -> None:
        f = p.failure
        if not f.lost:  # it stopped; if another connection was lost, that party is the cause
            self._wait(None)
            for other in self._peers.values():
                g = other.failure
                if other is not p and g is not None and g.lost:
                    why = "because of it" if f"party {other.name!r}" in f.reason else f.reason
                    raise PeerError(other.name, f"{g.reason} ({p.name!r} stopped too: {why})")
        raise PeerError(p.name, f.reason)

    def _stalled(self, waiting: list[_Peer], targets: list[_Peer], timeout: float) -> None:
        if waiting:
            raise PeerError(waiting[0].name, f"no message within {timeout:g} s (peer stalled)")
        p = next(p for p in targets if p.events & _OUT)
        raise PeerError(p.name, f"could not send for {timeout:g} s: the peer reads nothing (stalled)")

    # -- the event loop ---------------------------------------------------------------------------
    def _watch(self, p: _Peer) -> None:
        """Register what to wait for on ``p``: input unless its stream ended, output if queued."""
        want = (0 if p.failure is not None else _IN) | (_OUT if p.ch.has_output else 0)
        if want == p.events:
            return
        if p.events and want:
            self._poller.modify(p.fd, want)
        elif want:
            self._poller.register(p.fd, want)
        else:
            self._poller.unregister(p.fd)
        p.events = want

    def _wait(self, deadline: float | None) -> bool:
        """Wait for readable or writable connections until ``deadline`` (None: just look), and
        serve them; True if any was served."""
        ms = 0 if deadline is None else max(0, math.ceil((deadline - time.monotonic()) * 1000))
        events = self._poller.poll(ms)
        for fd, ev in events:
            p = self._by_fd.get(fd)
            if p is None:
                continue
            if ev & _OUT:
                self._flush(p)
            if ev & ~_OUT:
                self._read(p)
        return bool(events)

    def _flush(self, p: _Peer) -> None:
        """Write what ``p``'s channel holds; watch for writability while some is left."""
        try:
            done = p.ch.flush()
        except OSError as exc:  # includes ssl.SSLError
            self._read(p)  # the peer may have said why (an abort frame) before closing
            f = p.failure
            if f is None and isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                why = "connection lost while sending: the peer closed or reset it (crashed or killed?)"
            else:
                why = f.reason if f else f"connection lost while sending ({exc})"
            self._end(p, why, True)
            p.failure.lost = True  # even after a clean end: nothing more can be written
            p.ch.discard_output()
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._watch(p)
            raise PeerError(p.name, why) from None
        if not done or p.events & _OUT:
            self._watch(p)

    def _read(self, p: _Peer) -> None:
        """Receive everything ``p`` has sent so far (until the socket would block)."""
        if p.failure is not None:
            return
        ch, parser = p.ch, p.parser
        try:
            while True:
                n = ch.read_nb(parser.target())
                if not n:
                    if n is None:
                        return
                    if parser.mid_frame:
                        raise FrameError("truncated frame: the connection closed in the middle of a frame")
                    note = ch.eof_note()
                    self._end(p, "connection closed by the peer" + note, bool(note))  # clean: it finished
                    return
                p.activity += n
                for kind, arrays, nbytes in parser.advance(n):
                    p.received += nbytes
                    if kind == KIND_DATA:
                        p.inbox.append(arrays)
                    elif kind == KIND_ABORT and len(arrays) == 1:
                        text = arrays[0].tobytes().decode(errors="replace")
                        self._end(p, f"peer stopped: {text}", False)
                        return
                    else:
                        ch.shutdown()
                        self._end(
                            p, f"malformed frame: unexpected frame kind {kind} after the handshake", True
                        )
                        return
                if not ch.more:
                    return
        except FrameError as exc:
            ch.shutdown()
            self._end(p, f"malformed frame: {exc}", True)
        except ssl.SSLError as exc:
            ch.shutdown()
            self._end(p, f"TLS failure: {describe_tls_error(exc)[0]}", True)
        except ConnectionResetError:
            self._end(p, "connection reset by the peer (it crashed, was killed or lost its network)", True)
        except OSError as exc:
            self._end(p, "transport closed" if self._closed else f"connection lost: {exc}", True)

    def _end(self, p: _Peer, reason: str, lost: bool) -> None:
        """Record the end of ``p``'s stream (the first reason wins) and stop watching its input."""
        if p.failure is None:
            p.failure = _Failure(reason, lost)
            if lost and not self._closed:
                log.info("party %r: connection with %r ended: %s", self.party, p.name, reason)
        with contextlib.suppress(OSError, ValueError, KeyError):
            self._watch(p)

    def _drain(self, seconds: float, until_eof: bool) -> None:
        """Serve connections for up to ``seconds``: until every output is written and, with
        ``until_eof``, every peer's stream has ended. Failures are recorded, not raised."""
        deadline = time.monotonic() + seconds
        while True:
            pending = [
                p for p in self._peers.values() if p.ch.has_output and not (p.failure and p.failure.lost)
            ]
            for p in pending:
                with contextlib.suppress(PeerError):
                    self._flush(p)
            busy = any(p.ch.has_output and not (p.failure and p.failure.lost) for p in self._peers.values())
            if until_eof:
                busy = busy or any(p.failure is None for p in self._peers.values())
            if not busy or time.monotonic() >= deadline:
                return
            try:
                self._wait(deadline)
            except PeerError:
                continue

    # -- ending -----------------------------------------------------------------------------------
    def abort(self, reason: str) -> None:
        """Tell every peer that this party stops (best effort, ~1 s at most), then close."""
        if self._closed:
            return
        text = np.frombuffer(reason.encode()[:4096], np.uint8)
        for p in self._peers.values():
            if p.failure is not None and p.failure.lost:
                continue
            header, bufs = encode_frame([text], KIND_ABORT, p.ch.tag)
            p.ch.queue([header, *bufs])
        self._drain(1.0, until_eof=False)
        self.close(linger=0.0)

    def close(self, linger: float = 0.0) -> None:
        """Finish sending, wait up to ``linger`` s for peers to finish too, release the sockets."""
        if self._closed:
            return
        try:
            for p in self._peers.values():
                if not (p.failure and p.failure.lost):
                    p.ch.queue_close_write()
            self._drain(max(linger, 0.0), until_eof=True)
        finally:
            self._closed = True
            for p in self._peers.values():
                p.ch.shutdown()
                p.ch.close()
            if self._on_close is not None:
                self._on_close()
