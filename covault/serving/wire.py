"""The front door's wire: what a client and a compute party say on the client's own link.

A client of a service (:class:`~covault.serving.client.Client`) connects to every compute
party's front door (:mod:`covault.serving.frontdoor`) at :func:`door_address`: the party's
configured port plus :data:`DOOR_OFFSET`, on the same host. The link is set up like every
covault connection (:func:`~covault.transport.handshake.prepare_socket`: mutual TLS 1.3, the
revocation list) and carries covault frames (:mod:`covault.transport.framing`):

- hello (client): ``[MAGIC, party name, model name, token]`` (the token, 8 random bytes, tells
  a party's simultaneous clients apart); welcome (party): ``[MAGIC, public model header
  (JSON)]``, or an abort frame with the reason;
- query (client): ``[[QUERY, qid], shares]``, this party's shares ``(k, n, features)`` of the
  encoded rows (int64); bye (client): ``[[BYE, 0]]``;
- answer (party): ``[[ANSWER, qid, frac], shares]``, this party's first share component of the
  answer; error (party): ``[[ERROR, qid, kind], party, text]`` (``kind``: :data:`PEER` for a
  failure of a serving party named by ``party``, :data:`REFUSED` for the client's own data).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from covault.errors import ProtocolError
from covault.transport.channel import SocketChannel
from covault.transport.framing import KIND_ABORT, KIND_DATA, FrameReader, encode_frame, read_frame

MAGIC = b"covault serve 1"
DOOR_OFFSET = 1  # a compute party's front door: its configured port + 1
QUERY, BYE, ANSWER, ERROR = 1, 2, 3, 4
PEER, REFUSED = 0, 1
MAX_FRAME = 1 << 30  # bytes of one front-door frame
HELLO_MAX = 1 << 16  # bytes of a hello or welcome frame


class Refused(ProtocolError):
    """The other end of a front-door link refused it (its reason is the message)."""


class QueryRefused(ProtocolError):
    """Serving party ``party`` refused a query for the client's own data (its rows, its
    certificate); the message says why."""

    def __init__(self, party: str, message: str) -> None:
        self.party = party
        super().__init__(message)


def door_address(config: Any, party: str) -> tuple[str, int]:
    """``(host, port)`` of compute party ``party``'s front door: its configured host and port
    plus :data:`DOOR_OFFSET`; ConfigError naming the party where that is no port."""
    from covault.deploy.config import ConfigError

    p = config.parties[party]
    if p.host is None or p.port is None:
        raise ConfigError(f"party {party!r} has no address (set [parties.{party}] address = 'host:port')")
    port = p.port + DOOR_OFFSET
    if port > 65535:
        raise ConfigError(f"party {party!r}: its front door would listen on port {port} (address port + 1)")
    return p.host, port


def text(s: str | bytes) -> np.ndarray:
    """``s`` as a uint8 array (UTF-8)."""
    return np.frombuffer(s.encode() if isinstance(s, str) else bytes(s), np.uint8).copy()


def untext(a: np.ndarray, limit: int = 4096) -> str:
    """A uint8 array back to text (undecodable bytes replaced), at most ``limit`` characters."""
    if a.dtype != np.uint8 or a.ndim != 1:
        raise ProtocolError("expected a text field (a uint8 vector)")
    return a.tobytes().decode(errors="replace")[:limit]


class Link:
    """One front-door connection: blocking frames in, frames out under a lock (one reader
    thread, any number of senders)."""

    def __init__(self, channel: SocketChannel) -> None:
        self.channel = channel
        self.received = 0  # bytes of the frame being read (0: between frames)
        self._reader = FrameReader(self._recv, 1 << 16)
        self._lock = threading.Lock()

    def _recv(self, view: memoryview) -> int:
        n = self.channel.recv_into(view)
        self.received += n
        return n

    def send(self, arrays: list[np.ndarray], kind: int = KIND_DATA) -> None:
        header, bufs = encode_frame(arrays, kind)
        with self._lock:
            self.channel.send_buffers([header, *bufs])

    def recv(self, max_bytes: int = MAX_FRAME) -> list[np.ndarray]:
        """The next frame's arrays; :class:`Refused` for an abort frame, EOFError at the end of
        the stream, FrameError for a malformed frame, OSError (a timeout too) from the socket."""
        self.received = self._reader.buffered
        kind, arrays, _ = read_frame(self._reader, max_bytes)
        self.received = 0
        if kind == KIND_ABORT:
            raise Refused(untext(arrays[0], 300) if arrays else "refused")
        if kind != KIND_DATA:
            raise ProtocolError(f"unexpected frame kind {kind} on a front-door link")
        return arrays

    def refuse(self, reason: str) -> None:
        """An abort frame with ``reason`` (best effort)."""
        try:
            self.send([text(reason[:1024])], KIND_ABORT)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.channel.shutdown()
        self.channel.close()


def op_of(arrays: list[np.ndarray]) -> np.ndarray:
    """The int64 op word vector a front-door frame starts with, or ProtocolError."""
    if not arrays or arrays[0].dtype != np.int64 or arrays[0].ndim != 1 or not 2 <= arrays[0].size <= 3:
        raise ProtocolError("a front-door frame must start with its op words (int64, 2 or 3)")
    return arrays[0]
