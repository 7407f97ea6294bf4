"""What both ends of a new connection say and check: socket preparation (with TLS, the TLS
handshake), hello and refusal frames, and one deadline per handshake.

A hello is ``[session id, party name, incarnation nonce, manifest]``; a refusal is an abort
frame with its reason (and, for a party of the session that runs another one, this party's
manifest). :class:`_Deadlines` gives each handshake one absolute deadline, not one per read:
it shuts the socket down when the deadline passes, however slowly the peer's bytes arrive.

One side without TLS is a verdict too. A party with TLS that receives a hello in plaintext
reads it and refuses it in plaintext (the dialling party fails at once; the claim is
unauthenticated, so this party goes on waiting for the genuine one and names it after the
timeout). A party without TLS that receives a TLS record answers with a plaintext refusal (the
dialling party's TLS library reports a record that is not TLS: it fails at once) and reads on to
the plaintext notice that the dialling party then sends with its name: a party of the session
stops the set-up at once, as any claim can without TLS.
"""

from __future__ import annotations

import contextlib
import heapq
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Mapping

import numpy as np

from covault.transport.channel import SocketChannel, send_buffers
from covault.transport.framing import (
    KIND_ABORT,
    KIND_DATA,
    KIND_HELLO,
    FrameError,
    FrameReader,
    encode_frame,
    read_frame,
)
from covault.transport.sessionid import (
    SESSION_ID_BYTES,
    _decode_manifest,
    _encode_manifest,
    _keyed,
    _manifest_key,
    _printable,
)
from covault.transport.tls import (
    PeerIdentityError,
    PeerRevokedError,
    TlsChannel,
    TlsIdentity,
)

HANDSHAKE_MAX_BYTES = 1 << 12
NONCE_BYTES = 16
MISMATCH_GRACE = 5.0  # after a session mismatch, how long a party goes on telling the others
MAX_REASON_CHARS = 300  # a peer's refusal as quoted in errors and logs (printable ASCII)
HANDSHAKE_TIMEOUT = 5.0  # then its TLS handshake and hello must be done within this (capped)

_SET_UP_OVER = "connection set-up is over"
_ONE_SIDE = "one side runs without TLS: plaintext must be set for every party or none"
_NEEDS_TLS = f"this party requires TLS and the caller runs without it ({_ONE_SIDE})"
_RUNS_WITHOUT_TLS = f"this party runs without TLS ({_ONE_SIDE})"
_TLS_NOTICE = b"covault: this party runs TLS"  # with its name, after a party without TLS answered


def prepare_socket(
    sock: socket.socket, tls: TlsIdentity | None = None, *, server_side: bool = False
) -> SocketChannel:
    """Set up a freshly connected socket and return the channel to use from then on.

    Every connection passes through here before its hello: TCP_NODELAY, then with ``tls`` the
    mutual TLS 1.3 handshake (bounded by the socket's timeout; raises ssl.SSLError on refusal;
    an accepted peer whose certificate names no single party, and a revoked peer on either
    side, gets a refusal frame first, so that it stops at once).
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return SocketChannel(sock)
    channel = TlsChannel(sock, tls.context(server_side), server_side, tls.revocation)
    try:
        channel.handshake()
    except PeerIdentityError as exc:
        if server_side or isinstance(exc, PeerRevokedError):  # TLS is up: tell the peer why
            _send_refusal(channel, exc.refusal)
        raise
    return channel.seal()


# -- hello frames --------------------------------------------------------------------------------
class _Refused(FrameError):
    """The peer answered the hello with a refusal (its reason is the message; ``manifest``: its
    session manifest, sent with a session id mismatch)."""

    def __init__(self, reason: str, manifest: dict[str, bytes] | None = None):
        super().__init__(reason)
        self.manifest = manifest


def _send_hello(ch: SocketChannel, name: str, session_id: bytes, nonce: bytes, manifest: bytes) -> None:
    parts = [np.frombuffer(b, dtype=np.uint8) for b in (session_id, name.encode(), nonce, manifest)]
    header, bufs = encode_frame(parts, KIND_HELLO)
    ch.send_buffers([header, *bufs])


def _send_refusal(ch: SocketChannel, reason: str, manifest: bytes | None = None) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        parts = [np.frombuffer(reason.encode()[:1024], np.uint8)]
        if manifest is not None:
            parts.append(np.frombuffer(manifest, np.uint8))
        header, bufs = encode_frame(parts, KIND_ABORT)
        ch.send_buffers([header, *bufs])


def _send_tls_notice(sock: socket.socket, name: str) -> None:
    """Tell a party without TLS, in plaintext, which party dialled it with TLS (best effort)."""
    with contextlib.suppress(OSError):
        header, bufs = encode_frame(
            [np.frombuffer(_TLS_NOTICE, np.uint8), np.frombuffer(name.encode(), np.uint8)]
        )
        send_buffers(sock, [header, *bufs])


def _read_tls_notice(ch: SocketChannel) -> str | None:
    """The party name of a notice from :func:`_send_tls_notice` (None if the frame is another)."""
    kind, arrays, _ = read_frame(FrameReader(ch.recv_into, 1 << 10, greedy=False), HANDSHAKE_MAX_BYTES)
    if kind != KIND_DATA or len(arrays) != 2 or any(a.dtype != np.uint8 or a.ndim != 1 for a in arrays):
        return None
    if arrays[0].tobytes() != _TLS_NOTICE or not 0 < arrays[1].size <= 255:
        return None
    try:
        return arrays[1].tobytes().decode()
    except UnicodeDecodeError:
        return None


def _read_hello(ch: SocketChannel) -> tuple[bytes, str, bytes, dict[str, bytes]]:
    """(session id, name, nonce, manifest) from a hello frame; _Refused, FrameError, EOFError or
    OSError otherwise."""
    kind, arrays, _ = read_frame(FrameReader(ch.recv_into, 1 << 13, greedy=False), HANDSHAKE_MAX_BYTES)
    if kind == KIND_ABORT and len(arrays) in (1, 2) and all(a.dtype == np.uint8 for a in arrays):
        manifest = _decode_manifest(arrays[1].tobytes()) if len(arrays) == 2 else None
        text = arrays[0].tobytes().decode(errors="replace")
        raise _Refused(_printable(text, MAX_REASON_CHARS), manifest)
    if isinstance(ch, TlsChannel):  # only a refusal may come without covault's records
        raise FrameError("the peer sent no key message for covault's records after the TLS handshake")
    if kind != KIND_HELLO or len(arrays) != 4 or any(a.dtype != np.uint8 or a.ndim != 1 for a in arrays):
        raise FrameError("expected a hello frame")
    sid, raw_name, nonce, manifest = (a.tobytes() for a in arrays)
    if len(sid) != SESSION_ID_BYTES or len(nonce) != NONCE_BYTES or not 0 < len(raw_name) <= 255:
        raise FrameError("hello frame with a session id, party name or nonce of the wrong length")
    try:
        name = raw_name.decode()
    except UnicodeDecodeError:
        raise FrameError("party name in hello frame is not UTF-8") from None
    return sid, name, nonce, _decode_manifest(manifest)


class _Handshake:
    """What this party says and expects in every handshake of one session."""

    def __init__(
        self,
        me: str,
        session_id: bytes,
        tls: TlsIdentity | None,
        nonce: bytes | None = None,
        manifest: Mapping[str, bytes] | None = None,
    ):
        self.me = me
        self.session_id = bytes(session_id)
        self.tls = tls
        self.nonce = nonce or secrets.token_bytes(NONCE_BYTES)
        if manifest is None:
            manifest = getattr(session_id, "manifest", None) or {}
        self.blob = _encode_manifest(_keyed(manifest, _manifest_key(tls)))  # as sent (to parties only)
        self.manifest = _decode_manifest(self.blob)  # as the peers see it
        self.failed = threading.Event()  # set when set-up is abandoned: stops retry loops
        self.grace_end: float | None = None  # a party runs another session: tell the rest until then

    def mismatch(self) -> None:
        """A party runs another session: keep dialling and answering the others (so that they
        learn it too) for :data:`MISMATCH_GRACE` seconds at most, then stop."""
        if self.grace_end is None:
            self.grace_end = time.monotonic() + MISMATCH_GRACE

    def stopping(self) -> bool:
        """Whether retry loops must end (set-up abandoned, or the mismatch grace is over)."""
        return self.failed.is_set() or (self.grace_end is not None and time.monotonic() >= self.grace_end)


def _fmt_addr(addr) -> str:
    try:
        return f"{addr[0]}:{addr[1]}"
    except (TypeError, IndexError):
        return str(addr) or "a local socket"


class _Watch:
    """One socket watched by :class:`_Deadlines`; ``cut``: its deadline passed and it was shut
    down; ``done``: no longer watched (released or cut)."""

    __slots__ = ("cut", "deadline", "done", "sock")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline, self.cut, self.done = sock, deadline, False, False

    def expired(self) -> bool:
        """Whether its deadline has passed (cut or about to be)."""
        return self.cut or time.monotonic() >= self.deadline

    def __lt__(self, other: _Watch) -> bool:
        return self.deadline < other.deadline


class _Deadlines:
    """Gives each handshake one absolute deadline: a socket still watched when its deadline
    passes is shut down, which ends any read or write blocked on it. Socket timeouts apply per
    call, so alone they would let a peer that trickles its bytes hold a handshake indefinitely.
    One thread, running while sockets are watched."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[_Watch] = []
        self._running = False

    def watch(self, sock: socket.socket, deadline: float) -> _Watch:
        """Shut ``sock`` down at monotonic time ``deadline`` unless released before."""
        w = _Watch(sock, deadline)
        with self._cond:
            heapq.heappush(self._heap, w)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="covault-handshake-deadlines", daemon=True).start()
            self._cond.notify()
        return w

    def release(self, w: _Watch) -> bool:
        """Stop watching ``w``'s socket; False if it was already cut."""
        with self._cond:
            w.done = True
            return not w.cut

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._running = False
                    return
                w = self._heap[0]
                wait = w.deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                w.cut = w.done = True
                with contextlib.suppress(OSError):
                    w.sock.shutdown(socket.SHUT_RDWR)


_DEADLINES = _Deadlines()
