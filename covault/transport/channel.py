"""A connected byte stream to one peer: plain TCP here, TLS in :mod:`covault.transport.tls`.

Two ways to use a channel. Blocking (the connection handshake): :meth:`SocketChannel.recv_into`
and :meth:`SocketChannel.send_buffers`. Non-blocking (the transport, after :meth:`SocketChannel.
set_nonblocking`): :meth:`SocketChannel.read_nb` returns None instead of waiting,
:meth:`SocketChannel.queue` takes the buffers of a message and :meth:`SocketChannel.flush`
writes as much of them as the kernel accepts. One thread uses a channel at a time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections import deque
from collections.abc import Sequence
from itertools import islice

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
        self._pending: deque[memoryview] = deque()  # queued bytes not yet written
        self.written = 0  # bytes written by flush (counts progress)
        self.more = False  # the last read_nb may have left data behind: read again
        self._shut_after_flush = False

    # -- non-blocking use (the transport) ---------------------------------------------------------
    def set_nonblocking(self) -> None:
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_nb(self, view: memoryview) -> int | None:
        """Receive into ``view``: the byte count, 0 at the end of the stream, None if nothing
        has arrived."""
        try:
            n = self.sock.recv_into(view)
        except BlockingIOError:
            self.more = False
            return None
        self.more = n == len(view)
        return n

    def queue(self, buffers: Sequence[memoryview | bytes]) -> None:
        """Append a message's buffers to the output (referenced, not copied: keep them intact
        until :meth:`flush` returns True). Byte-format memoryviews or bytes."""
        for b in buffers:
            if len(b):
                self._pending.append(b if type(b) is memoryview else memoryview(b).cast("B"))

    @property
    def has_output(self) -> bool:
        """Whether queued bytes (or a queued end of stream) are still to be written."""
        return bool(self._pending) or self._shut_after_flush

    def flush(self) -> bool:
        """Write queued bytes until done (True) or the kernel's buffer is full (False)."""
        if not self._write_pending():
            return False
        self._finish_close_write()
        return True

    def _finish_close_write(self) -> None:
        if self._shut_after_flush:
            self._shut_after_flush = False
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def _write_pending(self) -> bool:
        q = self._pending
        while q:
            try:
                sent = self.sock.sendmsg(list(islice(q, _IOV_MAX)))
            except BlockingIOError:
                return False
            self.written += sent
            while sent:
                n = q[0].nbytes
                if sent >= n:
                    sent -= n
                    q.popleft()
                else:
                    q[0] = q[0][sent:]
                    sent = 0
        return True

    def queue_close_write(self) -> None:
        """End the stream after the queued bytes (written by :meth:`flush`)."""
        self._shut_after_flush = True

    def discard_output(self) -> None:
        """Drop everything queued (the connection can take no more)."""
        self._pending.clear()
        self._shut_after_flush = False

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


class RecordChannel(SocketChannel):
    """A channel that reads records (TLS's, covault's) ahead into its own buffer: what its
    ``read_nb`` shares, such as the end-of-stream state and failures held back until the
    plaintext received before them is delivered."""

    def __init__(self, sock: socket.socket):
        super().__init__(sock)
        self._eof: str | None = None  # "clean" (the peer closed properly) or "abrupt"
        self._error: BaseException | None = None  # met after plaintext: raised at the next read

    def _defer(self, exc: BaseException, got: int) -> int:
        """Return the ``got`` bytes of plaintext received before ``exc``; raise it next call."""
        self._error = exc
        self.more = True
        return got

    def _raise_deferred(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            self.more = False
            raise exc

    def _read_raw(self, dst: memoryview, got: int) -> tuple[int, int | None]:
        """Read the socket into ``dst`` for a ``read_nb`` holding ``got`` bytes of plaintext:
        ``(bytes read, None)``, or ``(0, what read_nb returns now)``."""
        try:
            n = self.sock.recv_into(dst)
        except BlockingIOError:
            self.more = False
            return 0, got or None
        except OSError as exc:  # a reset connection: deliver what came before it first
            if not got:
                raise
            return 0, self._defer(exc, got)
        if not n:
            if got:
                self.more = True  # the end of the stream, next time
                return 0, got
            self._eof = self._eof or "abrupt"
            self.more = False
            return 0, 0
        return n, None
