"""TCP transport: one connection per pair of parties, framed messages, one event loop per party.

Connection set-up (:func:`connect_mesh`): every party listens on its own socket; for each pair
the party earlier in the party order connects to the later one. All of a party's connections
are set up at once (one thread per outgoing connection, one per incoming handshake), so a party
that never comes up delays only the pairs it belongs to, and every error names it. Each
connection:

1. :func:`prepare_socket` (the one place where sockets are set up): socket options, then, with
   TLS, the mutual TLS 1.3 handshake (:mod:`covault.transport.tls`); the connecting side
   requires the peer's certificate to name the party it dialled;
2. hello frames both ways: ``[session id, party name, incarnation nonce, manifest]``. The
   accepting side checks (TLS) that the peer's certificate names the party it claims to be, the
   session id, and that it is a party expected to connect; then answers, and the connecting
   side checks the answer the same way;
3. both derive the connection tag ``SHA-256(session id, both names, both nonces)[:8]``, which
   every later frame carries and the reader checks (:mod:`covault.transport.framing`).

The connecting side retries until the set-up timeout while an attempt is cut short before the
hello completes (connection refused, reset, closed, or a handshake timing out: the peer is not
up yet, restarting, or busy), pausing 5 ms, then twice as long each time, up to
:data:`RETRY_DELAY`. A verdict fails at once: a refusal frame with its reason (another session,
a certificate for another name, an unexpected party), a TLS refusal, a malformed hello.

One side without TLS is a verdict too. A party with TLS that receives a hello in plaintext
reads it and refuses it in plaintext (the dialling party fails at once; the claim is
unauthenticated, so this party goes on waiting for the genuine one and names it after the
timeout). A party without TLS that receives a TLS record answers with a plaintext refusal (the
dialling party's TLS library reports a record that is not TLS: it fails at once) and reads on to
the plaintext notice that the dialling party then sends with its name: a party of the session
stops the set-up at once, as any claim can without TLS.

Denial of service: anyone who can reach a party's port can open connections to it. Accepted
connections wait, without a thread each, for their first bytes; one that sends nothing within
:data:`FIRST_BYTE_TIMEOUT` (3 s, or the session timeout if shorter) is closed, and so is the
oldest silent one when more than :data:`MAX_WAITING_PER_SOURCE` (32) connections from one
source address (IPv6: one /64), or more than :data:`MAX_WAITING` (256) in all, are waiting. A
connection whose bytes arrived gets one of :data:`MAX_HANDSHAKES` (32) handshake slots, at most
:data:`MAX_HANDSHAKES_PER_SOURCE` (4) per source address (more wait their turn), and must finish
its TLS handshake and hello within :data:`HANDSHAKE_TIMEOUT` (5 s, or the session timeout if
shorter) of getting its slot, however slowly its bytes arrive: one deadline per handshake, not per
read (:class:`_Deadlines` shuts the socket down when it passes); a dialling party gives each
attempt twice that (a wait for a slot, then the handshake). A party speaks as soon as it is connected, so idle connections, however many and
from however many addresses, cannot keep it out (an attempt dropped all the same is retried);
strangers that start a handshake and stall hold their address's slots for 5 s at most. Dropped
connections are counted in the set-up error and logged once; refusals are counted and logged at
most once per source address per :data:`REFUSAL_LOG_INTERVAL` (5 s; the next line counts those
left out), on logger ``covault.transport``.

Session ids: ``covault.run`` draws a random 16-byte id per run; ``covault party`` derives it
from the consortium config and the job (see :func:`covault.runtime.config_session_id`). The
incarnation nonce is random per party process. The id is checked once per connection and then
carried by every frame as the connection tag (8 bytes per frame, one comparison): TLS already
binds a connection to two authenticated parties, and the tag also binds each frame to this
session and to both parties' current incarnations, with or without TLS. A derived id is a
:class:`SessionId` with a manifest, ``{key: 8-byte digest}`` of what it was derived from (the
config's agreed fields, the job's keys), at most :data:`MANIFEST_MAX_BYTES` in the hello (one
entry per top-level key beyond that). On the wire each digest is keyed, HMAC-SHA256 with a key
from the consortium CA certificates (:func:`_manifest_key`; a constant without TLS); CA
certificates are not secret, so this only ties the digests to one consortium: what keeps a
manifest from strangers is that it goes only to an authenticated party of the session. The dialling party sends it in its hello (under TLS once the
accepting party's certificate names the party it dialled). When the ids differ, the accepting
party refuses a party of the session (under TLS: whose certificate names it) with its own
manifest and the keys that differ, anyone else with a plain "session id mismatch"; peer-supplied
keys are quoted as printable ASCII, at most :data:`MAX_KEY_CHARS` each and
:data:`MAX_LISTED_KEYS` in a message. During set-up both parties raise
:class:`SessionMismatchError` at once naming the other party and the keys that differ; each goes on dialling and answering its other parties for up to
:data:`MISMATCH_GRACE` seconds, so that they learn it too (without TLS anyone can claim to be a
party and stop the set-up this way, as in many others). An unexpected or already connected
party, or a certificate for another name, is refused with an abort frame giving the reason,
logged on logger ``covault.transport``, and does not disturb the session. After set-up the
listener stays open (:class:`LateJoinGuard`) only to refuse late or restarted parties (and
those of another session) with a clear reason; a restarted party
cannot rejoin a running session.

Messages (:class:`TcpTransport`): the party's own thread does all I/O, on non-blocking sockets, with
no thread hand-off per message. ``exchange`` (one round) queues one frame per destination
(referencing the arrays' memory; over TLS, encrypted chunk by chunk), writes what the kernel takes,
and then polls every connection, writing the rest and reading whatever arrives from ANY peer into
that peer's inbox (:class:`~covault.transport.framing.FrameParser` receives large arrays straight
into their buffers), until everything is written and one message from each awaited peer is there;
before sleeping in ``poll`` it looks a few times (poll without waiting), yielding the core (on
loopback this cut a 2-party round from about 23 to 20 us and a 3-party round on 2 cores from about
105 to 77 us: waking from ``poll`` costs more than a short wait). It returns only when every queued
byte is written, so callers may reuse their arrays at once. Since a party inside the transport
always drains every connection, two parties sending large messages to each other at the same time
never deadlock. A closed connection, an abort notice or a malformed frame ends the peer's stream:
its queued messages are still delivered, then the next receive from it raises PeerError naming it
(preferring a peer whose connection was lost over one that merely reported stopping because of it).
The timeout is one of silence: an exchange fails when no byte from an awaited peer, or to a
destination, moved for that long.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import hmac
import ipaddress
import logging
import math
import os
import secrets
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from covault.errors import PartyError, PeerError
from covault.transport.base import Message, Transport
from covault.transport.channel import SocketChannel, send_buffers
from covault.transport.framing import (
    KIND_ABORT,
    KIND_DATA,
    KIND_HELLO,
    MAGIC,
    MAX_FRAME_BYTES,
    FrameError,
    FrameParser,
    FrameReader,
    encode_frame,
    encode_frame_sized,
    read_frame,
)
from covault.transport.tls import (
    _NOT_TLS,
    PeerCertificateError,
    PeerIdentityError,
    TlsChannel,
    TlsIdentity,
    describe_tls_error,
    tls_peer_error,
)

__all__ = [
    "HOST",
    "SESSION_ID_BYTES",
    "LateJoinGuard",
    "SessionId",
    "SessionMismatchError",
    "TcpTransport",
    "connect_mesh",
    "open_listener",
    "prepare_socket",
    "send_buffers",
]

HOST = "127.0.0.1"
SPIN = 10  # looks (poll without waiting, yielding the core in between) before an exchange sleeps
HANDSHAKE_MAX_BYTES = 1 << 12
SESSION_ID_BYTES = 16
NONCE_BYTES = 16
DIGEST_BYTES = 8  # per key of a session manifest
MANIFEST_MAX_BYTES = 2048  # a larger manifest is sent per top-level key (see _encode_manifest)
MISMATCH_GRACE = 5.0  # after a session mismatch, how long a party goes on telling the others
MAX_KEY_CHARS = 64  # a peer's manifest key as quoted in errors and logs (printable ASCII)
MAX_LISTED_KEYS = 16  # keys that differ, as listed in an error
MAX_REASON_CHARS = 300  # a peer's refusal as quoted in errors and logs (printable ASCII)

# Limits on incoming connections (module docstring, "Denial of service").
BACKLOG = 128  # listen queue of a party's socket
FIRST_BYTE_TIMEOUT = 3.0  # an accepted connection must start its handshake within this (capped)
HANDSHAKE_TIMEOUT = 5.0  # then its TLS handshake and hello must be done within this (capped)
MAX_WAITING = 256  # accepted connections that sent nothing yet; the oldest is dropped for a new one
MAX_WAITING_PER_SOURCE = 32  # the same, per source address (IPv6: per /64)
MAX_HANDSHAKES = 32  # handshakes in progress at once; more wait for a slot
MAX_HANDSHAKES_PER_SOURCE = 4  # the same, per source address
ACCEPT_BATCH = 8  # connections accepted per turn of the acceptor's loop
RETRY_DELAY = 0.25  # longest pause between two attempts of a dialling party
MAX_LISTED_REFUSALS = 20  # refusals quoted in a set-up error
REFUSAL_LOG_INTERVAL = 5.0  # at most one refusal logged per source address in this many seconds
MAX_TLS_SKIP = 1 << 16  # TLS bytes a party without TLS reads past, looking for a caller's notice

log = logging.getLogger("covault.transport")


def prepare_socket(
    sock: socket.socket, tls: TlsIdentity | None = None, *, server_side: bool = False
) -> SocketChannel:
    """Set up a freshly connected socket and return the channel to use from then on.

    Every connection passes through here before its hello: TCP_NODELAY, then with ``tls`` the
    mutual TLS 1.3 handshake (bounded by the socket's timeout; raises ssl.SSLError on refusal;
    an accepted peer whose certificate names no single party gets a refusal frame first).
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return SocketChannel(sock)
    channel = TlsChannel(sock, tls.context(server_side), server_side)
    try:
        channel.handshake()
    except PeerIdentityError as exc:
        if server_side:  # TLS is up: tell the dialling party why, so that it stops at once
            _send_refusal(channel, f"TLS handshake: {describe_tls_error(exc)[0]}")
        raise
    return channel


def open_listener(host: str = HOST, port: int = 0, backlog: int = BACKLOG) -> socket.socket:
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


# -- session ids and their manifests -------------------------------------------------------------
class SessionId(bytes):
    """A session id with its manifest: ``{key: digest}`` of what the id was derived from (each
    digest :data:`DIGEST_BYTES` long), so that parties whose ids differ can name the keys that
    differ (:func:`covault.runtime.config_session_id`)."""

    manifest: dict[str, bytes]

    def __new__(cls, value: bytes, manifest: Mapping[str, bytes] | None = None) -> SessionId:
        self = super().__new__(cls, value)
        self.manifest = {str(k): bytes(v)[:DIGEST_BYTES] for k, v in (manifest or {}).items()}
        return self

    def __reduce__(self):
        return (SessionId, (bytes(self), self.manifest))


class SessionMismatchError(PeerError):
    """A peer runs another session: another job or consortium config; ``keys`` names the keys
    whose digests differ (empty when unknown)."""

    def __init__(self, party: str, keys: Sequence[str] = ()):
        self.keys = tuple(_printable(k) for k in keys)
        if self.keys:
            text = f"{_SESSION_MISMATCH_HEAD}: it runs another job or consortium config; keys that differ: "
            super().__init__(party, text + _list_keys(self.keys))
        else:
            super().__init__(party, _SESSION_MISMATCH)


def _printable(text: str, limit: int = MAX_KEY_CHARS) -> str:
    """``text`` with every character outside printable ASCII shown as ``?``, cut to ``limit``."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _list_keys(keys: Sequence[str]) -> str:
    """``keys`` joined by commas, the first :data:`MAX_LISTED_KEYS` of them and a count of the rest."""
    more = len(keys) - MAX_LISTED_KEYS
    return ", ".join(keys[:MAX_LISTED_KEYS]) + (f" and {more} more" if more > 0 else "")


def _manifest_key(tls: TlsIdentity | None) -> bytes:
    """The HMAC key of the digests a party sends: with TLS, SHA-256 of the consortium CA
    certificates (every party holds them, none is sent on the wire); without, a constant."""
    h = hashlib.sha256(b"covault manifest key v1\0")
    if tls is not None:
        with contextlib.suppress(OSError, ValueError):  # unreadable: the TLS handshake says why
            ders = [
                c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(tls.ca.read_bytes())
            ]
            for der in sorted(ders):
                h.update(hashlib.sha256(der).digest())
    return h.digest()


def _keyed(manifest: Mapping[str, bytes], key: bytes) -> dict[str, bytes]:
    """Each digest of ``manifest`` replaced by ``HMAC-SHA256(key, name | digest)``, cut short."""
    return {
        k: hmac.digest(key, k.encode() + b"\0" + bytes(d), "sha256")[:DIGEST_BYTES]
        for k, d in manifest.items()
    }


def _encode_manifest(manifest: Mapping[str, bytes]) -> bytes:
    """Entries ``key length u8 | key | digest``, sorted by key; when that exceeds
    :data:`MANIFEST_MAX_BYTES`, one entry per top-level key (the part before the first dot)."""

    def entries(items) -> bytes:
        out = bytearray()
        for key, digest in sorted(items):
            raw = key.encode()[:255]
            out += bytes([len(raw)]) + raw + digest[:DIGEST_BYTES].ljust(DIGEST_BYTES, b"\0")
        return bytes(out)

    blob = entries(manifest.items())
    if len(blob) <= MANIFEST_MAX_BYTES:
        return blob
    groups: dict[str, list[bytes]] = {}
    for key, digest in sorted(manifest.items()):
        raw = key.encode()
        groups.setdefault(key.split(".", 1)[0], []).append(len(raw).to_bytes(2, "little") + raw + digest)
    blob = entries(
        (k, hashlib.sha256(b"covault manifest group v1\0" + b"".join(v)).digest()) for k, v in groups.items()
    )
    return blob if len(blob) <= MANIFEST_MAX_BYTES else b""


def _decode_manifest(blob: bytes) -> dict[str, bytes]:
    """The manifest of a hello or refusal (at most :data:`MANIFEST_MAX_BYTES`, else FrameError)."""
    if len(blob) > MANIFEST_MAX_BYTES:
        raise FrameError(f"session manifest of {len(blob)} bytes (at most {MANIFEST_MAX_BYTES})")
    out: dict[str, bytes] = {}
    i = 0
    while i < len(blob):
        n = blob[i]
        if i + 1 + n + DIGEST_BYTES > len(blob):
            raise FrameError("malformed session manifest in hello frame")
        out[blob[i + 1 : i + 1 + n].decode(errors="replace")] = blob[i + 1 + n : i + 1 + n + DIGEST_BYTES]
        i += 1 + n + DIGEST_BYTES
    return out


def _differing(mine: Mapping[str, bytes], theirs: Mapping[str, bytes] | None) -> list[str]:
    """Keys whose digests differ, or that only one side has (none if either manifest is empty)."""
    if not mine or not theirs:
        return []
    return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))


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


def _read_hello(ch: SocketChannel) -> tuple[bytes, str, bytes, dict[str, bytes]]:
    """(session id, name, nonce, manifest) from a hello frame; _Refused, FrameError, EOFError or
    OSError otherwise."""
    kind, arrays, _ = read_frame(FrameReader(ch.recv_into, 1 << 13, greedy=False), HANDSHAKE_MAX_BYTES)
    if kind == KIND_ABORT and len(arrays) in (1, 2) and all(a.dtype == np.uint8 for a in arrays):
        manifest = _decode_manifest(arrays[1].tobytes()) if len(arrays) == 2 else None
        text = arrays[0].tobytes().decode(errors="replace")
        raise _Refused(_printable(text, MAX_REASON_CHARS), manifest)
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


def _down(peer: str, message: str) -> PeerError:
    """A PeerError for a party that did not connect in time (ranked after other set-up errors)."""
    err = PeerError(peer, message)
    err.down = True
    return err


class _Retry(Exception):
    """An attempt to connect failed in a way that another attempt may not (refused, reset, closed
    or timed out before the hello completed)."""

    def __init__(self, reason: str, connected: bool):
        super().__init__(reason)
        self.connected = connected  # the TCP connection itself was made


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


def _cut_short(exc: ssl.SSLError) -> bool:
    """Whether a TLS failure is a connection closed or reset mid-handshake (no TLS verdict)."""
    return isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)) or exc.errno in (
        errno.ECONNRESET,
        errno.EPIPE,
    )


def _connect(hs: _Handshake, peer: str, address: tuple[str, int], deadline: float, timeout: float):
    """Connect to ``peer`` and handshake, retrying until ``deadline`` while attempts are cut short
    (refused, reset, closed or timed out before the hello completes); a refusal with a reason, a
    TLS verdict or a wrong identity fails at once."""
    delay, last = 0.005, None
    where = f"{address[0]}:{address[1]}"
    while True:
        if hs.stopping():
            err = PeerError(peer, "connection set-up abandoned (another peer failed)")
            err.abandoned = True
            raise err
        if time.monotonic() >= deadline:
            if last is None or not last.connected:
                text = f"could not connect to {where} within {timeout:g} s (is it running, and is its port reachable?)"
            else:
                text = f"connected to {where} but no handshake completed within {timeout:g} s"
            raise _down(peer, f"did not come up: {text}" + (f"; last attempt: {last}" if last else ""))
        try:
            return _attempt(hs, peer, address, deadline)
        except _Retry as exc:
            last = exc
            log.debug("party %r: connection to %r at %s cut short (retrying): %s", hs.me, peer, where, exc)
        time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 2, RETRY_DELAY)


def _attempt(hs: _Handshake, peer: str, address: tuple[str, int], deadline: float) -> SocketChannel:
    """One attempt of :func:`_connect`: raises _Retry, or PeerError for a verdict."""
    where = f"{address[0]}:{address[1]}"
    # the whole attempt, however the peer trickles its bytes: a wait for a slot, then the handshake
    limit = max(0.001, min(deadline - time.monotonic(), 2 * HANDSHAKE_TIMEOUT))
    end = time.monotonic() + limit
    try:
        sock = socket.create_connection(address, timeout=limit)
    except OSError as exc:
        raise _Retry(f"could not connect ({exc})", False) from None
    ch: SocketChannel | None = None
    watch = _DEADLINES.watch(sock, end)
    try:
        sock.settimeout(max(0.001, end - time.monotonic()))
        try:
            ch = prepare_socket(sock, hs.tls, server_side=False)
        except ssl.SSLError as exc:
            if _cut_short(exc):
                raise _Retry("the TLS handshake was cut short", True) from None
            if getattr(exc, "reason", None) in _NOT_TLS:  # it answered without TLS: say who called
                _send_tls_notice(sock, hs.me)
                raise PeerError(peer, f"TLS handshake failed: it does not speak TLS ({_ONE_SIDE})") from None
            raise tls_peer_error(peer, exc) from None
        except (EOFError, OSError) as exc:
            raise _Retry(f"the TLS handshake was cut short ({exc or 'connection closed'})", True) from None
        if ch.peer_names is not None and peer not in ch.peer_names:
            names = sorted(ch.peer_names)
            _send_refusal(ch, f"{hs.me!r} dialled {peer!r} but your certificate names {names}")
            raise PeerCertificateError(
                peer, f"refused: the server at {where} presented a certificate for {names}, not for {peer!r}"
            )
        try:
            _send_hello(ch, hs.me, hs.session_id, hs.nonce, hs.blob)
            sid, name, nonce, theirs = _read_hello(ch)
        except _Refused as exc:
            if exc.manifest is not None:  # another session: the keys that differ, at once
                raise SessionMismatchError(peer, _differing(hs.manifest, exc.manifest)) from None
            if str(exc) == _NEEDS_TLS:
                raise PeerError(
                    peer, f"handshake failed: it requires TLS and this party runs without it ({_ONE_SIDE})"
                ) from None
            err = PeerError(peer, f"handshake failed: it refused the connection: {exc}")
            err.collateral = str(exc) == _SET_UP_OVER  # it stopped: usually because of another peer
            raise err from None
        except FrameError as exc:
            raise PeerError(peer, f"handshake failed: malformed hello from {where}: {exc}") from None
        except ssl.SSLError as exc:  # TLS 1.3: a refusal of our certificate arrives here
            if _cut_short(exc):
                raise _Retry("the connection was cut short during the hello", True) from None
            raise tls_peer_error(peer, exc) from None
        except EOFError:
            hint = (
                " (does it expect TLS? plaintext must be set for every party or none)" if not hs.tls else ""
            )
            raise _Retry(f"it closed the connection during the hello{hint}", True) from None
        except OSError as exc:
            raise _Retry(f"the connection was cut short during the hello ({exc})", True) from None
        if not _DEADLINES.release(watch):
            raise _Retry(f"no handshake within {limit:g} s", True)
        if not hmac.compare_digest(sid, hs.session_id):
            raise SessionMismatchError(peer, _differing(hs.manifest, theirs))
        if name != peer:
            raise PeerError(peer, f"the server at {where} introduced itself as {name!r}")
        ch.tag = connection_tag(hs.session_id, (hs.me, hs.nonce), (peer, nonce))
        ch.settimeout(None)
        return ch
    except BaseException as exc:
        cut = not _DEADLINES.release(watch)
        (ch or sock).close()
        if cut and isinstance(exc, Exception):  # the deadline cut it: no verdict of the peer's
            raise _Retry(f"no handshake within {limit:g} s", True) from None
        if isinstance(exc, PeerError):
            log.warning("party %r: connection to %r failed: %s", hs.me, peer, exc)
        raise


_SET_UP_OVER = "connection set-up is over"
_ONE_SIDE = "one side runs without TLS: plaintext must be set for every party or none"
_NEEDS_TLS = f"this party requires TLS and the caller runs without it ({_ONE_SIDE})"
_RUNS_WITHOUT_TLS = f"this party runs without TLS ({_ONE_SIDE})"
_TLS_NOTICE = b"covault: this party runs TLS"  # with its name, after a party without TLS answered
_SESSION_MISMATCH_HEAD = "session id mismatch"
_SESSION_MISMATCH = (
    f"{_SESSION_MISMATCH_HEAD}: it runs another session (another job, a different consortium config, "
    "or a different job name)"
)


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
        timeout: float = HANDSHAKE_TIMEOUT,
        parties: Sequence[str] = (),
    ):
        super().__init__(name=f"covault-accept-{hs.me}", daemon=True)
        self.listener = listener
        self.expected = tuple(expected)
        self.parties = frozenset(parties)  # the session's other parties
        self.hs = hs
        self.deadline = deadline
        self.first_byte_timeout = min(FIRST_BYTE_TIMEOUT, timeout)
        self.handshake_timeout = min(HANDSHAKE_TIMEOUT, timeout)
        self.got: dict[str, SocketChannel] = {}
        self.nonces: dict[str, bytes] = {}
        self.refused: list[str] = []
        self.refusals = 0
        self.dropped = 0  # connections closed for sending nothing in time, or to make room
        self.error: BaseException | None = None
        self.fatal: list[PeerError] = []  # a party of the session runs another one
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
                self._refuse(None, sock, addr, reason)
                return
            sid, name, nonce, theirs = _read_hello(ch)
        except (FrameError, EOFError, OSError) as exc:
            self._refuse(
                ch, sock, addr, slow if watch.expired() else f"bad hello ({exc or 'connection closed'})"
            )
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
    manifest: Mapping[str, bytes] | None = None,
) -> dict[str, SocketChannel]:
    """Connected, authenticated channels to every other party in ``order`` (by peer name).

    ``me`` connects to the parties after it and accepts the parties before it, all at once;
    see the module docstring for the checks. Raises PeerError naming the peer on failure
    (PeerCertificateError for certificate problems, SessionMismatchError when a party runs
    another session), after at most ``timeout`` seconds. ``manifest`` (default: that of a
    :class:`SessionId`) is sent in the hello. The listener is closed when done, or handed to
    ``guard``.
    """
    if me not in order:
        raise PartyError(f"party {me!r} is not in the party order {list(order)}")
    long = [p for p in order if not 0 < len(p.encode()) <= 255]
    if long:
        raise PartyError(f"party names must have 1 to 255 bytes (UTF-8), got {long[0]!r}")
    if len(session_id) != SESSION_ID_BYTES:
        raise PartyError(f"session id must have {SESSION_ID_BYTES} bytes, got {len(session_id)}")
    missing = [p for p in order if p != me and p not in addresses]
    if missing:
        raise PartyError(f"no address for {missing}")
    hs = _Handshake(me, session_id, tls, nonce, manifest)
    deadline = time.monotonic() + timeout
    mine = order.index(me)
    acceptor = _Acceptor(listener, order[:mine], hs, deadline, timeout, [p for p in order if p != me])
    acceptor.guard = guard is not None
    outcomes: dict[str, SocketChannel | BaseException] = {}

    def dial(peer: str) -> None:
        try:
            outcomes[peer] = _connect(hs, peer, tuple(addresses[peer]), deadline, timeout)
        except BaseException as exc:
            outcomes[peer] = exc
            if isinstance(exc, SessionMismatchError):
                hs.mismatch()  # the other dials go on, to tell their parties too
            elif not getattr(exc, "down", False):
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
            if hs.failed.is_set() or any(
                isinstance(o, BaseException) and not isinstance(o, SessionMismatchError)
                for o in outcomes.values()
            ):
                break
            if hs.grace_end is not None and (set(acceptor.expected) <= acceptor.heard or hs.stopping()):
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
    errors = [*acceptor.fatal, *(o for o in outcomes.values() if isinstance(o, BaseException))]
    if not errors and len(channels) == len(order) - 1:
        return
    named = {e.party for e in errors if isinstance(e, PeerError)}
    absent = [p for p in order if p != me and p not in channels and p not in outcomes and p not in named]
    if absent:
        if acceptor.refused:
            more = acceptor.refusals - len(acceptor.refused)
            text = (
                f"no acceptable connection from it within {timeout:g} s; refused "
                f"{acceptor.refusals} connection(s): {'; '.join(acceptor.refused)}"
                + (f"; and {more} more" if more else "")
            )
        else:
            text = (
                f"did not come up: no connection from it within {timeout:g} s (is it running, and can "
                "it reach this party's address?)"
            )
        if acceptor.dropped:
            text += f" ({acceptor.dropped} connection(s) that sent nothing in time were dropped)"
        errors.append(_down(absent[0], text))

    def rank(e: BaseException) -> int:
        """Root causes first; then peers that hung up mid-handshake (usually because of another
        failure), parties that never came, and 'abandoned' last."""
        if getattr(e, "abandoned", False):
            return 4
        if getattr(e, "down", False):
            return 3
        if getattr(e, "collateral", False):
            return 2
        return 1 if isinstance(e, PeerError) else 0

    errors.sort(key=rank)
    first = errors[0]
    down = sorted({e.party for e in errors if getattr(e, "down", False)})
    if len(down) > 1 and isinstance(first, PeerError):
        first.add_note(f"parties that did not come up: {down}")
    raise first


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
        spins, deadline, mark = 0, 0.0, None
        while True:
            if waiting:
                waiting = [p for p in waiting if not self._take(p, got)]
            if not waiting and not any(p.events & _OUT for p in targets):
                return got
            if spins < SPIN:  # the answer is often (nearly) there: look, yielding the core
                spins += 1
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
