"""TCP transport: one connection per pair of parties, framed messages, a receiver thread per peer.

Connection set-up (:func:`connect_mesh`): every party listens on its own socket; for each pair
the party earlier in the party order connects to the later one. All of a party's connections
are set up at once (one thread per outgoing connection, one per incoming handshake), so a party
that never comes up delays only the pairs it belongs to, and every error names it. Each
connection:

1. :func:`prepare_socket` (the one place where sockets are set up): socket options, then, with
   TLS, the mutual TLS 1.3 handshake (:mod:`covault.transport.tls`); the connecting side
   requires the peer's certificate to name the party it dialled;
2. hello frames both ways: ``[session id, party name, incarnation nonce]``. The accepting side
   checks the session id, that the name is a party expected to connect, and (TLS) that the
   peer's certificate names it; then answers, and the connecting side checks the answer the
   same way;
3. both derive the connection tag ``SHA-256(session id, both names, both nonces)[:8]``, which
   every later frame carries and the reader checks (:mod:`covault.transport.framing`).

Session ids: ``covault.run`` draws a random 16-byte id per run; ``covault party`` derives it
from the consortium config and the job name (see :func:`covault.runtime.config_session_id`).
The incarnation nonce is random per party process. The id is checked once per connection and
then carried by every frame as the connection tag (8 bytes per frame, one comparison): TLS
already binds a connection to two authenticated parties, and the tag also binds each frame to
this session and to both parties' current incarnations, with or without TLS. A connection from another job (other id),
an unexpected or already connected party, or a certificate for another name is refused with an
abort frame giving the reason, logged on logger ``covault.transport``, and does not disturb the
session. After set-up the listener stays open (:class:`LateJoinGuard`) only to refuse late or
restarted parties with a clear reason; a restarted party cannot rejoin a running session.

Messages (:class:`TcpTransport`): ``send`` writes one frame straight from the arrays' memory. A
background thread per peer reads frames into a queue as they arrive, so a party blocked in a
large send always makes progress even if its peer is sending too; ``recv`` takes from that
queue. A closed connection, an abort notice or a malformed frame ends the peer's queue with a
failure, and ``recv`` raises PeerError naming the peer (preferring a peer whose connection was
lost over one that merely reported stopping because of it).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import queue
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from covault.errors import PartyError, PeerError
from covault.transport.base import Message, Transport
from covault.transport.channel import SocketChannel, send_buffers
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
from covault.transport.tls import (
    PeerCertificateError,
    TlsChannel,
    TlsIdentity,
    describe_tls_error,
    tls_peer_error,
)

__all__ = [
    "HOST",
    "SESSION_ID_BYTES",
    "LateJoinGuard",
    "TcpTransport",
    "connect_mesh",
    "open_listener",
    "prepare_socket",
    "send_buffers",
]

HOST = "127.0.0.1"
HANDSHAKE_MAX_BYTES = 1 << 12
HANDSHAKE_TIMEOUT = 10.0  # at most this long for one incoming connection's TLS handshake and hello
MAX_PENDING = 16  # incoming connections handshaken at once; more are refused
SESSION_ID_BYTES = 16
NONCE_BYTES = 16

log = logging.getLogger("covault.transport")


def prepare_socket(
    sock: socket.socket, tls: TlsIdentity | None = None, *, server_side: bool = False
) -> SocketChannel:
    """Set up a freshly connected socket and return the channel to use from then on.

    Every connection passes through here before its hello: TCP_NODELAY, then with ``tls`` the
    mutual TLS 1.3 handshake (bounded by the socket's timeout; raises ssl.SSLError on refusal).
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return SocketChannel(sock)
    channel = TlsChannel(sock, tls.context(server_side), server_side)
    channel.handshake()
    return channel


def open_listener(host: str = HOST, port: int = 0, backlog: int = 16) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port chosen by the kernel)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def connection_tag(session_id: bytes, connector: tuple[str, bytes], acceptor: tuple[str, bytes]) -> bytes:
    """The 8-byte tag of one connection: binds its frames to the session and both incarnations."""
    h = hashlib.sha256(b"covault connection tag v1\0" + session_id)
    for name, nonce in (connector, acceptor):
        raw = name.encode()
        h.update(len(raw).to_bytes(2, "little") + raw + nonce)
    return h.digest()[:8]


# -- hello frames --------------------------------------------------------------------------------
def _send_hello(ch: SocketChannel, name: str, session_id: bytes, nonce: bytes) -> None:
    parts = [np.frombuffer(b, dtype=np.uint8) for b in (session_id, name.encode(), nonce)]
    header, bufs = encode_frame(parts, KIND_HELLO)
    ch.send_buffers([header, *bufs])


def _send_refusal(ch: SocketChannel, reason: str) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        header, bufs = encode_frame([np.frombuffer(reason.encode()[:1024], np.uint8)], KIND_ABORT)
        ch.send_buffers([header, *bufs])


def _read_hello(ch: SocketChannel) -> tuple[bytes, str, bytes]:
    """(session id, name, nonce) from a hello frame; FrameError/EOFError/OSError otherwise."""
    kind, arrays, _ = read_frame(FrameReader(ch.recv_into, 1 << 13, greedy=False), HANDSHAKE_MAX_BYTES)
    if kind == KIND_ABORT and len(arrays) == 1:
        raise FrameError(f"it refused the connection: {arrays[0].tobytes().decode(errors='replace')}")
    if kind != KIND_HELLO or len(arrays) != 3 or any(a.dtype != np.uint8 or a.ndim != 1 for a in arrays):
        raise FrameError("expected a hello frame")
    try:
        name = arrays[1].tobytes().decode()
    except UnicodeDecodeError:
        raise FrameError("party name in hello frame is not UTF-8") from None
    return arrays[0].tobytes(), name, arrays[2].tobytes()


class _Handshake:
    """What this party says and expects in every handshake of one session."""

    def __init__(self, me: str, session_id: bytes, tls: TlsIdentity | None, nonce: bytes | None = None):
        self.me = me
        self.session_id = session_id
        self.tls = tls
        self.nonce = nonce or secrets.token_bytes(NONCE_BYTES)
        self.failed = threading.Event()  # set when set-up is abandoned: stops retry loops


def _refuse(hs: _Handshake, ch: SocketChannel | None, sock: socket.socket, addr, reason: str, claim=None):
    who = f" claiming to be {claim!r}" if claim else ""
    log.warning("party %r refused a connection from %s%s: %s", hs.me, _fmt_addr(addr), who, reason)
    if ch is not None:
        _send_refusal(ch, reason)
        ch.close()
    else:
        sock.close()
    return f"{_fmt_addr(addr)}{who}: {reason}"


def _fmt_addr(addr) -> str:
    try:
        return f"{addr[0]}:{addr[1]}"
    except (TypeError, IndexError):
        return str(addr) or "a local socket"


def _down(peer: str, message: str) -> PeerError:
    """A PeerError for a party that did not connect in time (ranked after other set-up errors)."""
    err = PeerError(peer, message)
    err.down = True
    return err


def _connect(hs: _Handshake, peer: str, address: tuple[str, int], deadline: float, timeout: float):
    """Connect to ``peer`` (retrying until ``deadline``), handshake, and check its identity."""
    delay = 0.005
    while True:
        left = deadline - time.monotonic()
        if hs.failed.is_set():
            err = PeerError(peer, "connection set-up abandoned (another peer failed)")
            err.abandoned = True
            raise err
        if left <= 0:
            raise _down(
                peer,
                f"did not come up: could not connect to {address[0]}:{address[1]} within {timeout:g} s "
                "(is it running, and is its port reachable?)",
            )
        try:
            sock = socket.create_connection(address, timeout=max(0.001, min(left, HANDSHAKE_TIMEOUT)))
            break
        except OSError:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.2)
    ch: SocketChannel | None = None
    try:
        sock.settimeout(max(0.001, min(deadline - time.monotonic(), HANDSHAKE_TIMEOUT)))
        try:
            ch = prepare_socket(sock, hs.tls, server_side=False)
        except ssl.SSLError as exc:
            raise tls_peer_error(peer, exc) from None
        if ch.peer_names is not None and peer not in ch.peer_names:
            names = sorted(ch.peer_names)
            _send_refusal(ch, f"{hs.me!r} dialled {peer!r} but your certificate names {names}")
            raise PeerCertificateError(
                peer,
                f"refused: the server at {address[0]}:{address[1]} presented a certificate for "
                f"{names}, not for {peer!r}",
            )
        _send_hello(ch, hs.me, hs.session_id, hs.nonce)
        try:
            sid, name, nonce = _read_hello(ch)
        except ssl.SSLError as exc:  # TLS 1.3: a refusal of our certificate arrives here
            raise tls_peer_error(peer, exc) from None
        except EOFError:
            hint = (
                " (does it expect TLS? plaintext must be set for every party or none)" if not hs.tls else ""
            )
            raise PeerError(
                peer, f"handshake failed: it closed the connection during the hello{hint}"
            ) from None
        if not hmac.compare_digest(sid, hs.session_id):
            raise PeerError(peer, _SESSION_MISMATCH)
        if name != peer:
            raise PeerError(peer, f"the server at {address[0]}:{address[1]} introduced itself as {name!r}")
        ch.tag = connection_tag(hs.session_id, (hs.me, hs.nonce), (peer, nonce))
        ch.settimeout(None)
        return ch
    except BaseException as exc:
        (ch or sock).close()
        if isinstance(exc, PeerError):
            log.warning("party %r: connection to %r failed: %s", hs.me, peer, exc)
            raise
        if isinstance(exc, (FrameError, EOFError, OSError)):
            err = PeerError(peer, f"handshake failed: {exc or 'connection closed'}")
            log.warning("party %r: connection to %r failed: %s", hs.me, peer, err)
            raise err from None
        raise


_SESSION_MISMATCH = (
    "session id mismatch: it runs another session (another job, a different consortium config, "
    "or a different job name)"
)


class _Acceptor(threading.Thread):
    """Accepts one connection from each expected party; refuses (and logs) everything else.

    Each incoming connection is handshaken in its own thread (at most :data:`MAX_PENDING` at
    once), so a stalling stranger cannot hold up the parties. With ``guard`` it keeps listening
    after set-up, refusing late or restarted parties, until :meth:`stop`.
    """

    def __init__(self, listener: socket.socket, expected: Sequence[str], hs: _Handshake, deadline: float):
        super().__init__(name=f"covault-accept-{hs.me}", daemon=True)
        self.listener = listener
        self.expected = tuple(expected)
        self.hs = hs
        self.deadline = deadline
        self.got: dict[str, SocketChannel] = {}
        self.nonces: dict[str, bytes] = {}
        self.refused: list[str] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.guard = False
        self._stopped = False
        self._lock = threading.Lock()  # guards got, nonces, refused, _stopped, _pending
        self._pending: set[socket.socket] = set()
        if not self.expected:
            self.done.set()

    def run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopped or (self.done.is_set() and not self.guard):
                        return
                    setting_up = len(self.got) < len(self.expected)
                timeout = self.deadline - time.monotonic() if setting_up else None
                if timeout is not None and timeout <= 0:
                    return
                self.listener.settimeout(None if timeout is None else min(timeout, 0.25))
                try:
                    sock, addr = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return  # listener closed by stop()
                with self._lock:
                    busy = len(self._pending) >= MAX_PENDING or self._stopped
                    if not busy:
                        self._pending.add(sock)
                if busy:
                    self._refuse(None, sock, addr, "too many connections in progress")
                    continue
                threading.Thread(
                    target=self._serve, args=(sock, addr), name=f"covault-hello-{self.hs.me}", daemon=True
                ).start()
        except BaseException as exc:  # reported by connect_mesh
            self.error = exc
        finally:
            self.done.set()

    def _refuse(self, ch, sock, addr, reason: str, claim: str | None = None) -> None:
        entry = _refuse(self.hs, ch, sock, addr, reason, claim)
        with self._lock:
            self.refused.append(entry)

    def _serve(self, sock: socket.socket, addr) -> None:
        try:
            self._handle(sock, addr)
        except BaseException as exc:  # never die silently
            self._refuse(None, sock, addr, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._pending.discard(sock)

    def _handle(self, sock: socket.socket, addr) -> None:
        hs = self.hs
        ch = None
        left = self.deadline - time.monotonic() if not self.done.is_set() else HANDSHAKE_TIMEOUT
        try:
            sock.settimeout(max(0.001, min(left, HANDSHAKE_TIMEOUT)))
            try:
                ch = prepare_socket(sock, hs.tls, server_side=True)
            except ssl.SSLError as exc:
                self._refuse(None, sock, addr, f"TLS handshake: {describe_tls_error(exc)[0]}")
                return
            sid, name, nonce = _read_hello(ch)
        except (FrameError, EOFError, OSError) as exc:
            self._refuse(ch, sock, addr, f"bad hello ({exc or 'connection closed'})")
            return
        with self._lock:
            reason = None
            if not hmac.compare_digest(sid, hs.session_id):
                reason = "session id mismatch (another job, a different consortium config, or a different job name)"
            elif ch.peer_names is not None and name not in ch.peer_names:
                reason = f"its certificate names {sorted(ch.peer_names)}, not {name!r}"
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
                reason = "connection set-up is over"
            if not reason:
                try:
                    _send_hello(ch, hs.me, hs.session_id, hs.nonce)
                    ch.settimeout(None)
                except (OSError, ssl.SSLError) as exc:
                    ch.close()
                    self.refused.append(f"{_fmt_addr(addr)} ({name!r}): handshake failed: {exc}")
                    return
                ch.tag = connection_tag(hs.session_id, (name, nonce), (hs.me, hs.nonce))
                self.nonces[name] = nonce
                self.got[name] = ch
                if len(self.got) == len(self.expected):
                    self.done.set()
                return
        self._refuse(ch, sock, addr, reason, claim=name)

    def stop(self) -> None:
        """Stop accepting; connections still in their handshake are cut."""
        with self._lock:
            self._stopped = True
            pending = list(self._pending)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in pending:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self is not threading.current_thread() and self.is_alive():
            self.join(2.0)


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


def connect_mesh(
    me: str,
    order: Sequence[str],
    listener: socket.socket,
    addresses: Mapping[str, tuple[str, int]],
    session_id: bytes,
    timeout: float,
    *,
    tls: TlsIdentity | None = None,
    nonce: bytes | None = None,
    guard: LateJoinGuard | None = None,
) -> dict[str, SocketChannel]:
    """Connected, authenticated channels to every other party in ``order`` (by peer name).

    ``me`` connects to the parties after it and accepts the parties before it, all at once;
    see the module docstring for the checks. Raises PeerError naming the peer on failure
    (PeerCertificateError for certificate problems), after at most ``timeout`` seconds. The
    listener is closed when done, or handed to ``guard``.
    """
    if me not in order:
        raise PartyError(f"party {me!r} is not in the party order {list(order)}")
    if len(session_id) != SESSION_ID_BYTES:
        raise PartyError(f"session id must have {SESSION_ID_BYTES} bytes, got {len(session_id)}")
    missing = [p for p in order if p != me and p not in addresses]
    if missing:
        raise PartyError(f"no address for {missing}")
    hs = _Handshake(me, session_id, tls, nonce)
    deadline = time.monotonic() + timeout
    mine = order.index(me)
    acceptor = _Acceptor(listener, order[:mine], hs, deadline)
    acceptor.guard = guard is not None
    outcomes: dict[str, SocketChannel | BaseException] = {}

    def dial(peer: str) -> None:
        try:
            outcomes[peer] = _connect(hs, peer, tuple(addresses[peer]), deadline, timeout)
        except BaseException as exc:
            outcomes[peer] = exc
            if not getattr(exc, "down", False):
                hs.failed.set()

    dialers = [
        threading.Thread(target=dial, args=(p,), name=f"covault-dial-{me}->{p}", daemon=True)
        for p in order[mine + 1 :]
    ]
    acceptor.start()
    ok = False
    try:
        for t in dialers:
            t.start()
        for t in dialers:
            t.join()
        while not acceptor.done.wait(0.05):
            if hs.failed.is_set() or any(isinstance(o, BaseException) for o in outcomes.values()):
                break
        channels = {p: o for p, o in outcomes.items() if isinstance(o, SocketChannel)}
        channels.update(acceptor.got)
        _raise_setup_error(me, order, outcomes, acceptor, channels, timeout)
        ok = True
    finally:
        if ok and guard is not None:
            guard._acceptor = acceptor
        else:
            acceptor.stop()
            if not ok:
                for o in list(outcomes.values()) + list(acceptor.got.values()):
                    if isinstance(o, SocketChannel):
                        o.close()
    return {p: channels[p] for p in order if p != me}


def _raise_setup_error(me, order, outcomes, acceptor, channels, timeout) -> None:
    if acceptor.error is not None:
        raise acceptor.error
    errors = [o for o in outcomes.values() if isinstance(o, BaseException)]
    if not errors and len(channels) == len(order) - 1:
        return
    absent = [p for p in order if p != me and p not in channels and p not in outcomes]
    if absent:
        if acceptor.refused:
            text = (
                f"no acceptable connection from it within {timeout:g} s; refused "
                f"{len(acceptor.refused)} connection(s): {'; '.join(acceptor.refused)}"
            )
        else:
            text = (
                f"did not come up: no connection from it within {timeout:g} s (is it running, and can "
                "it reach this party's address?)"
            )
        errors.append(_down(absent[0], text))

    def rank(e: BaseException) -> int:  # root causes first, then parties that never came, 'abandoned' last
        if getattr(e, "abandoned", False):
            return 3
        return 2 if getattr(e, "down", False) else (0 if not isinstance(e, PeerError) else 1)

    errors.sort(key=rank)
    first = errors[0]
    down = sorted({e.party for e in errors if getattr(e, "down", False)})
    if len(down) > 1 and isinstance(first, PeerError):
        first.add_note(f"parties that did not come up: {down}")
    raise first


# -- transport -----------------------------------------------------------------------------------
class _Failure:
    """End-of-queue marker: the connection is gone, for ``reason``; ``lost``: it broke (not an
    abort notice, and not a clean close by a peer that finished)."""

    def __init__(self, reason: str, lost: bool):
        self.reason = reason
        self.lost = lost


class TcpTransport(Transport):
    """Framed messages over one connected channel (or socket) per peer (see the module docstring).

    ``wire_bytes_sent`` / ``wire_bytes_received`` count framed bytes (headers included, TLS
    record overhead not); :class:`~covault.transport.base.Network` counts payload bytes.
    ``on_close`` runs once when the transport closes (e.g. :meth:`LateJoinGuard.stop`).
    """

    def __init__(
        self,
        party: str,
        channels: Mapping[str, SocketChannel | socket.socket],
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        on_close: Callable[[], None] | None = None,
    ):
        self.party = party
        self.peers = tuple(channels)
        self.max_frame_bytes = int(max_frame_bytes)
        self._chans = {
            p: c if isinstance(c, SocketChannel) else SocketChannel(c) for p, c in channels.items()
        }
        self._on_close = on_close
        self._queues: dict[str, queue.SimpleQueue] = {p: queue.SimpleQueue() for p in self.peers}
        self._send_locks = {p: threading.Lock() for p in self.peers}
        self._sent = dict.fromkeys(self.peers, 0)
        self._received = dict.fromkeys(self.peers, 0)
        self._failed: dict[str, _Failure] = {}
        self._closed = False
        self._threads = {
            p: threading.Thread(target=self._receive_loop, args=(p,), name=f"covault-recv-{party}<-{p}")
            for p in self.peers
        }
        for t in self._threads.values():
            t.daemon = True
            t.start()

    @property
    def tls(self) -> bool:
        """Whether every connection runs TLS."""
        return bool(self._chans) and all(c.tls for c in self._chans.values())

    @property
    def wire_bytes_sent(self) -> int:
        return sum(self._sent.values())

    @property
    def wire_bytes_received(self) -> int:
        return sum(self._received.values())

    def _peer(self, name: str) -> SocketChannel:
        ch = self._chans.get(name)
        if ch is None:
            raise PartyError(f"party {self.party!r} has no peer {name!r} (peers: {list(self.peers)})")
        return ch

    def _receive_loop(self, peer: str) -> None:
        ch = self._chans[peer]
        reader = FrameReader(ch.recv_into)
        q = self._queues[peer]
        reason, lost = "receiver stopped", True
        try:
            while True:
                kind, arrays, nbytes = read_frame(reader, self.max_frame_bytes, ch.tag)
                self._received[peer] += nbytes
                if kind == KIND_DATA:
                    q.put(arrays)
                    continue
                if kind == KIND_ABORT and len(arrays) == 1:
                    text = arrays[0].tobytes().decode(errors="replace")
                    reason, lost = f"peer stopped: {text}", False
                else:
                    reason = f"malformed frame: unexpected frame kind {kind} after the handshake"
                    ch.shutdown()
                break
        except EOFError:
            note = ch.eof_note()
            reason, lost = "connection closed by the peer" + note, bool(note)  # a clean close: it finished
        except FrameError as exc:
            reason = f"malformed frame: {exc}"
            ch.shutdown()
        except ssl.SSLError as exc:
            reason = f"TLS failure: {describe_tls_error(exc)[0]}"
            ch.shutdown()
        except ConnectionResetError:
            reason = "connection reset by the peer (it crashed, was killed or lost its network)"
        except OSError as exc:
            reason = "transport closed" if self._closed else f"connection lost: {exc}"
        except BaseException as exc:  # never die silently: the waiting party must hear of it
            reason = f"receiver failed: {type(exc).__name__}: {exc}"
            ch.shutdown()
        finally:
            failure = _Failure(reason, lost)
            self._failed.setdefault(peer, failure)
            if lost and not self._closed:
                log.info("party %r: connection with %r ended: %s", self.party, peer, reason)
            q.put(failure)

    def send(self, to: str, message: Message) -> None:
        ch = self._peer(to)
        if self._closed:
            raise PeerError(to, "cannot send: the transport is closed")
        header, bufs = encode_frame(message, KIND_DATA, ch.tag)
        with self._send_locks[to]:
            try:
                self._sent[to] += ch.send_buffers([header, *bufs])
            except OSError as exc:  # includes ssl.SSLError
                self._threads[to].join(0.5)  # the receiver usually knows why (closed, reset, aborted)
                failure = self._failed.get(to)
                if failure is None and isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                    why = "connection lost while sending: the peer closed or reset it (crashed or killed?)"
                else:
                    why = failure.reason if failure else f"connection lost while sending ({exc})"
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
            if not item.lost:  # it stopped; if another connection was lost, that party is the cause
                for other, f in list(self._failed.items()):
                    if other != frm and f.lost:
                        why = "because of it" if f"party {other!r}" in item.reason else item.reason
                        raise PeerError(other, f"{f.reason} ({frm!r} stopped too: {why})")
            raise PeerError(frm, item.reason)
        return item

    def abort(self, reason: str) -> None:
        """Tell every peer that this party stops (best effort, ~1 s at most), then close."""
        for peer, ch in self._chans.items():
            if peer in self._failed and self._failed[peer].lost:
                continue
            header, bufs = encode_frame([np.frombuffer(reason.encode()[:4096], np.uint8)], KIND_ABORT, ch.tag)
            with contextlib.suppress(OSError):
                ch.set_send_timeout(1)
                if self._send_locks[peer].acquire(timeout=1.0):
                    try:
                        ch.send_buffers([header, *bufs])
                    finally:
                        self._send_locks[peer].release()
        self.close(linger=0.0)

    def close(self, linger: float = 0.0) -> None:
        """Finish sending, wait up to ``linger`` s for peers to finish too, release the sockets."""
        if self._closed:
            return
        try:
            for peer, ch in self._chans.items():
                ch.set_send_timeout(1)
                if self._send_locks[peer].acquire(timeout=1.0):
                    try:
                        ch.close_write()
                    finally:
                        self._send_locks[peer].release()
            deadline = time.monotonic() + linger
            for t in self._threads.values():
                t.join(max(0.0, deadline - time.monotonic()))
            self._closed = True
            for ch in self._chans.values():
                ch.shutdown()
            for t in self._threads.values():
                t.join(1.0)
            for ch in self._chans.values():
                ch.close()
        finally:
            self._closed = True
            if self._on_close is not None:
                self._on_close()
