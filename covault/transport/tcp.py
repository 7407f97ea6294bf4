"""TCP transport: one socket per pair of parties, framed messages, a receiver thread per peer.

Connection set-up (:func:`connect_mesh`): every party listens on its own socket; for each pair
the party earlier in the party order connects to the later one and sends a hello frame with
its name and the run's random session id; the later party checks both and answers with its own
hello, which the connecting party checks in turn. Every socket passes through
:func:`prepare_socket` before the handshake, the one place where socket options are set.

Messages (:class:`TcpTransport`): ``send`` writes one frame (see :mod:`covault.transport.framing`)
with ``sendmsg`` straight from the arrays' memory. A background thread per peer reads frames
into a queue as they arrive, so a party blocked in a large send always makes progress even if
its peer is sending too; ``recv`` takes from that queue. A closed connection, an abort notice or
a malformed frame ends the peer's queue with a failure, and ``recv`` raises PeerError naming
the peer.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from covault.errors import PartyError, PeerError
from covault.transport.base import Message, Transport
from covault.transport.framing import (
    KIND_ABORT,
    KIND_DATA,
    KIND_HELLO,
    MAX_FRAME_BYTES,
    FrameError,
    FrameReader,
    encode_frame,
    read_frame,
)

HOST = "127.0.0.1"
HANDSHAKE_MAX_BYTES = 1 << 12
SESSION_ID_BYTES = 16
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def prepare_socket(sock: socket.socket) -> socket.socket:
    """Apply the transport's socket options to a freshly connected socket and return the socket
    to use from then on (every connection passes through here before its handshake)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def open_listener(host: str = HOST, backlog: int = 16) -> socket.socket:
    """A listening socket on ``host`` and a free port chosen by the kernel."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def send_buffers(sock: socket.socket, buffers: Sequence[memoryview | bytes]) -> int:
    """Write ``buffers`` in order with as few system calls as possible; return the byte count."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    total = sum(v.nbytes for v in views)
    i = 0
    while i < len(views):
        try:
            sent = sock.sendmsg(views[i : i + _IOV_MAX])
        except NotImplementedError:  # sockets without scatter-gather (e.g. TLS)
            for v in views[i:]:
                sock.sendall(v)
            return total
        while sent:
            n = views[i].nbytes
            if sent >= n:
                sent -= n
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0
    return total


# -- handshake -----------------------------------------------------------------------------------
def _send_hello(sock: socket.socket, name: str, session_id: bytes) -> None:
    sid = np.frombuffer(session_id, dtype=np.uint8)
    nm = np.frombuffer(name.encode(), dtype=np.uint8)
    header, bufs = encode_frame([sid, nm], KIND_HELLO)
    send_buffers(sock, [header, *bufs])


def _send_refusal(sock: socket.socket, reason: str) -> None:
    with contextlib.suppress(OSError):
        header, bufs = encode_frame([np.frombuffer(reason.encode()[:1024], np.uint8)], KIND_ABORT)
        send_buffers(sock, [header, *bufs])


def _read_hello(sock: socket.socket) -> tuple[bytes, str]:
    """(session id, name) from a hello frame; FrameError/EOFError/OSError on anything else."""
    kind, arrays, _ = read_frame(FrameReader(sock.recv_into, 1 << 13, greedy=False), HANDSHAKE_MAX_BYTES)
    if kind == KIND_ABORT and len(arrays) == 1:
        raise FrameError(f"refused: {arrays[0].tobytes().decode(errors='replace')}")
    if kind != KIND_HELLO or len(arrays) != 2 or any(a.dtype != np.uint8 or a.ndim != 1 for a in arrays):
        raise FrameError("expected a hello frame")
    try:
        name = arrays[1].tobytes().decode()
    except UnicodeDecodeError:
        raise FrameError("party name in hello frame is not UTF-8") from None
    return arrays[0].tobytes(), name


def _connect(me: str, peer: str, address: tuple[str, int], session_id: bytes, deadline: float):
    """Connect to ``peer`` (retrying with short backoff), say hello and check its answer."""
    delay = 0.005
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerError(peer, f"could not connect to {address[0]}:{address[1]} before the timeout")
        try:
            sock = socket.create_connection(address, timeout=left)
            break
        except OSError:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.2)
    try:
        sock = prepare_socket(sock)
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        _send_hello(sock, me, session_id)
        sid, name = _read_hello(sock)
        if not hmac.compare_digest(sid, session_id):
            raise FrameError("its hello carries a different session id (another run?)")
        if name != peer:
            raise FrameError(f"it introduced itself as {name!r}")
        sock.settimeout(None)
        return sock
    except BaseException as exc:
        sock.close()
        if isinstance(exc, (FrameError, EOFError, OSError)):
            raise PeerError(peer, f"handshake failed: {exc or 'connection closed'}") from None
        raise


def _accept(
    listener: socket.socket, expected: Sequence[str], session_id: bytes, me: str, deadline: float
) -> dict[str, socket.socket]:
    """Accept one connection from each party in ``expected``; refuse everything else."""
    got: dict[str, socket.socket] = {}
    refused: list[str] = []
    try:
        while len(got) < len(expected):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [p for p in expected if p not in got]
                extra = f"; refused {len(refused)} connection(s): {'; '.join(refused)}" if refused else ""
                raise PeerError(missing[0], f"did not connect before the timeout{extra}")
            listener.settimeout(left)
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                sock = prepare_socket(sock)
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sid, name = _read_hello(sock)
            except (FrameError, EOFError, OSError) as exc:
                refused.append(f"bad hello ({exc or 'connection closed'})")
                sock.close()
                continue
            reason = None
            if not hmac.compare_digest(sid, session_id):
                reason = f"session id mismatch (connection claiming to be {name!r})"
            elif name not in expected:
                reason = f"{name!r} is not a party expected to connect to {me!r}"
            elif name in got:
                reason = f"{name!r} is already connected"
            if reason:
                refused.append(reason)
                _send_refusal(sock, reason)
                sock.close()
                continue
            try:
                _send_hello(sock, me, session_id)
                sock.settimeout(None)
            except OSError as exc:
                sock.close()
                raise PeerError(name, f"handshake failed: {exc}") from None
            got[name] = sock
    except BaseException:
        for s in got.values():
            s.close()
        raise
    return got


def connect_mesh(
    me: str,
    order: Sequence[str],
    listener: socket.socket,
    addresses: Mapping[str, tuple[str, int]],
    session_id: bytes,
    timeout: float,
) -> dict[str, socket.socket]:
    """Connected, authenticated sockets to every other party in ``order`` (by peer name).

    ``me`` connects to the parties after it and accepts the parties before it; each pair
    checks names and ``session_id`` in a hello exchange. Raises PeerError naming the peer on
    failure; closes ``listener`` when done.
    """
    if me not in order:
        raise PartyError(f"party {me!r} is not in the party order {list(order)}")
    if len(session_id) != SESSION_ID_BYTES:
        raise PartyError(f"session id must have {SESSION_ID_BYTES} bytes, got {len(session_id)}")
    deadline = time.monotonic() + timeout
    mine = order.index(me)
    socks: dict[str, socket.socket] = {}
    try:
        for peer in order[mine + 1 :]:
            socks[peer] = _connect(me, peer, tuple(addresses[peer]), session_id, deadline)
        socks.update(_accept(listener, order[:mine], session_id, me, deadline))
    except BaseException:
        for s in socks.values():
            s.close()
        raise
    finally:
        listener.close()
    return {p: socks[p] for p in order if p != me}


# -- transport -----------------------------------------------------------------------------------
class _Failure:
    """End-of-queue marker: the connection is gone, for ``reason``."""

    def __init__(self, reason: str):
        self.reason = reason


class TcpTransport(Transport):
    """Framed messages over one connected socket per peer (see the module docstring).

    ``wire_bytes_sent`` / ``wire_bytes_received`` count everything on the wire (headers
    included); :class:`~covault.transport.base.Network` counts payload bytes.
    """

    def __init__(
        self, party: str, sockets: Mapping[str, socket.socket], *, max_frame_bytes: int = MAX_FRAME_BYTES
    ):
        self.party = party
        self.peers = tuple(sockets)
        self.max_frame_bytes = int(max_frame_bytes)
        self._socks = dict(sockets)
        self._queues: dict[str, queue.SimpleQueue] = {p: queue.SimpleQueue() for p in self.peers}
        self._send_locks = {p: threading.Lock() for p in self.peers}
        self._sent = dict.fromkeys(self.peers, 0)
        self._received = dict.fromkeys(self.peers, 0)
        self._failed: dict[str, str] = {}
        self._closed = False
        self._threads = {
            p: threading.Thread(target=self._receive_loop, args=(p,), name=f"covault-recv-{party}<-{p}")
            for p in self.peers
        }
        for t in self._threads.values():
            t.daemon = True
            t.start()

    @property
    def wire_bytes_sent(self) -> int:
        return sum(self._sent.values())

    @property
    def wire_bytes_received(self) -> int:
        return sum(self._received.values())

    def _peer(self, name: str) -> socket.socket:
        sock = self._socks.get(name)
        if sock is None:
            raise PartyError(f"party {self.party!r} has no peer {name!r} (peers: {list(self.peers)})")
        return sock

    def _receive_loop(self, peer: str) -> None:
        sock = self._socks[peer]
        reader = FrameReader(sock.recv_into)
        q = self._queues[peer]
        reason = "receiver stopped"
        try:
            while True:
                kind, arrays, nbytes = read_frame(reader, self.max_frame_bytes)
                self._received[peer] += nbytes
                if kind == KIND_DATA:
                    q.put(arrays)
                    continue
                if kind == KIND_ABORT and len(arrays) == 1:
                    text = arrays[0].tobytes().decode(errors="replace")
                    reason = f"peer stopped: {text}"
                else:
                    reason = f"malformed frame: unexpected frame kind {kind} after the handshake"
                    self._shutdown(sock)
                break
        except EOFError:
            reason = "connection closed by the peer"
        except FrameError as exc:
            reason = f"malformed frame: {exc}"
            self._shutdown(sock)
        except OSError as exc:
            reason = "transport closed" if self._closed else f"connection lost: {exc}"
        except BaseException as exc:  # never die silently: the waiting party must hear of it
            reason = f"receiver failed: {type(exc).__name__}: {exc}"
            self._shutdown(sock)
        finally:
            self._failed.setdefault(peer, reason)
            q.put(_Failure(reason))

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def send(self, to: str, message: Message) -> None:
        sock = self._peer(to)
        if self._closed:
            raise PeerError(to, "cannot send: the transport is closed")
        header, bufs = encode_frame(message, KIND_DATA)
        with self._send_locks[to]:
            try:
                self._sent[to] += send_buffers(sock, [header, *bufs])
            except OSError as exc:
                why = self._failed.get(to) or f"connection lost while sending ({exc})"
                raise PeerError(to, why) from None

    def recv(self, frm: str, timeout: float) -> Message:
        self._peer(frm)
        q = self._queues[frm]
        try:
            item = q.get(timeout=timeout)
        except queue.Empty:
            raise PeerError(frm, f"no message within {timeout:g} s (peer stalled)") from None
        if isinstance(item, _Failure):
            q.put(item)
            raise PeerError(frm, item.reason)
        return item

    def abort(self, reason: str) -> None:
        """Tell every peer that this party stops (best effort, ~1 s at most), then close."""
        header, bufs = encode_frame([np.frombuffer(reason.encode()[:4096], np.uint8)], KIND_ABORT)
        for peer, sock in self._socks.items():
            if peer in self._failed:
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 1, 0))
                if self._send_locks[peer].acquire(timeout=1.0):
                    try:
                        send_buffers(sock, [header, *bufs])
                    finally:
                        self._send_locks[peer].release()
        self.close(linger=0.0)

    def close(self, linger: float = 0.0) -> None:
        """Finish sending, wait up to ``linger`` s for peers to finish too, release the sockets."""
        if self._closed:
            return
        for sock in self._socks.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + linger
        for t in self._threads.values():
            t.join(max(0.0, deadline - time.monotonic()))
        self._closed = True
        for sock in self._socks.values():
            self._shutdown(sock)
        for t in self._threads.values():
            t.join(1.0)
        for sock in self._socks.values():
            sock.close()
