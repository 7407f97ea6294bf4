"""A connected byte stream to one peer: plain TCP here, TLS in :mod:`covault.transport.tls`.

The transport talks to a peer only through its channel: one receiver thread calls
:meth:`SocketChannel.recv_into`; senders call :meth:`SocketChannel.send_buffers` one at a time
(the transport holds a lock per peer); ``close_write``, ``shutdown`` and ``close`` may come from
any thread.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Sequence

from covault.transport.framing import NO_TAG

_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def send_buffers(sock: socket.socket, buffers: Sequence[memoryview | bytes]) -> int:
    """Write ``buffers`` in order with as few system calls as possible; return the byte count."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    total = sum(v.nbytes for v in views)
    i = 0
    while i < len(views):
        try:
            sent = sock.sendmsg(views[i : i + _IOV_MAX])
        except NotImplementedError:  # sockets without scatter-gather
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


class SocketChannel:
    """A plain TCP connection (no encryption, no authentication).

    ``tag`` is the connection tag every frame carries (set by the handshake); ``peer_names``
    holds the party names the peer's certificate asserts (TLS only, else None).
    """

    tls = False

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.tag = NO_TAG
        self.peer_names: frozenset[str] | None = None

    def recv_into(self, view: memoryview) -> int:
        """Read at least one byte into ``view`` (0 at the end of the stream)."""
        return self.sock.recv_into(view)

    def send_buffers(self, buffers: Sequence[memoryview | bytes]) -> int:
        """Write every buffer, in order; return the number of payload bytes."""
        return send_buffers(self.sock, buffers)

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def set_send_timeout(self, seconds: int) -> None:
        """Make blocked writes fail after ``seconds`` (for last-gasp notices to a stuck peer)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, 0))

    def eof_note(self) -> str:
        """How the stream ended, for error messages ('' when nothing more is known)."""
        return ""

    def close_write(self) -> None:
        """Finish sending: the peer sees the end of the stream after the last frame."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def shutdown(self) -> None:
        """Stop both directions now (wakes a reader blocked in ``recv_into``)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()
