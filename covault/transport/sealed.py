"""covault's record layer inside a mutual TLS 1.3 session: AES-256-GCM records for the traffic.

Python's ``ssl`` moves about 1 GB/s on the machines covault is measured on (every byte copied
through OpenSSL's BIOs, in 16 KiB records), while AES-256-GCM from ``cryptography`` runs at
about 10 GB/s and can decrypt straight into the array a frame is received into. So the TLS 1.3
handshake authenticates both ends and keys the session, and the traffic after it goes in these
records (docs/deployment.md, "Transport performance").

Steps (:meth:`covault.transport.tls.TlsChannel.seal`, after the handshake and the certificate
checks at both ends):

1. Each end sends :data:`MAGIC` and 32 bytes from ``os.urandom`` as one TLS 1.3 record. The two
   messages cross: no end waits for the other before sending.
2. Both ends derive two 256-bit traffic secrets with HKDF-SHA256 (RFC 5869) from the dialler's
   32 bytes followed by the acceptor's: the first for dialler -> acceptor, the second for the way
   back. From a direction's secret, HKDF-Expand makes its AES-256 key and a 96-bit IV, as TLS 1.3
   does (RFC 8446 7.3).
3. Every later byte goes in records: a 4-byte big-endian header (the plaintext length; its top
   bit marks the closing record), then the AES-256-GCM ciphertext and 16-byte tag of the
   plaintext (NIST SP 800-38D) with the header as associated data, under the direction's key
   and the nonce ``IV xor (0^32 || s)`` for the record's 64-bit sequence number ``s`` (from 0).
   A record that fails authentication or announces more than :data:`MAX_RECORD` bytes ends the
   stream (:class:`RecordError`); a stream that stops without the closing record ended abruptly.
4. Key update: after :data:`REKEY_BYTES` of plaintext under one key, both ends of that
   direction replace its secret with HKDF-Expand(secret, "covault traffic update"), derive the
   key and IV again and restart ``s`` at 0 (TLS 1.3 updates AES-GCM keys within about 2^38 bytes
   of 16 KiB records, RFC 8446 5.5).

Security: what the TLS 1.3 record layer gives. The keys are known to the two ends only (their
32-byte contributions travel inside the authenticated, forward-secret TLS session); every record
is authenticated together with its position in the stream (no reordering, replay, deletion or
insertion goes unnoticed); the closing record exposes a truncated stream. Not kept: the TLS
record format itself (a middlebox parsing TLS records sees the handshake, then an opaque stream).

Sending is serialised by a lock (two threads sending at once cannot reuse a nonce; their
records would still interleave: one sending thread at a time); receiving is one thread's.

Cost: 20 bytes per record (TLS: 22 per record of up to 16 KiB); records of up to 1 MiB; one
AES-GCM call per record; set-up: one 57-byte message each way after the handshake.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from covault.transport.channel import RecordChannel, send_buffers

MAGIC = b"covault sealed records 1\n"  # leads each end's key message (step 1)
SEED_BYTES = 32
KEY_MESSAGE_BYTES = len(MAGIC) + SEED_BYTES
HEADER = struct.Struct(">I")
CLOSING = 1 << 31  # header bit of the closing record
LENGTH = CLOSING - 1
TAG_BYTES = 16
OVERHEAD = HEADER.size + TAG_BYTES
MAX_RECORD = 1 << 20  # plaintext bytes per record
COALESCE = 1 << 14  # messages up to this size go out as one record at once
REKEY_BYTES = 1 << 36  # plaintext bytes under one key (step 4)
RAW_BUFFER = 1 << 22  # ciphertext bytes read from the socket per system call (at most)
FIRST_RAW_BUFFER = 1 << 16  # the receive buffer until a record or a read needs more
_SALT = b"covault sealed records v1"


class RecordError(ssl.SSLError):
    """A record failed authentication or is malformed (reported like any TLS failure)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def derive_keys(dialler_seed: bytes, acceptor_seed: bytes) -> tuple[bytes, bytes]:
    """Step 2: the traffic secrets ``(dialler -> acceptor, acceptor -> dialler)``."""
    if len(dialler_seed) != SEED_BYTES or len(acceptor_seed) != SEED_BYTES:
        raise ValueError(f"key seeds must be {SEED_BYTES} bytes each")
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=_SALT, info=b"covault traffic secrets").derive(
        dialler_seed + acceptor_seed
    )
    return okm[:32], okm[32:]


def _expand(secret: bytes, label: bytes, length: int) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=label).derive(secret)


def next_key(secret: bytes) -> bytes:
    """Step 4: the traffic secret that follows ``secret``."""
    return _expand(secret, b"covault traffic update", 32)


class _Direction:
    """One direction's traffic secret, AES-GCM key and IV, record sequence number and bytes
    under the key."""

    __slots__ = ("aead", "iv", "key", "limit", "seq", "used")

    def __init__(self, secret: bytes, limit: int):
        self.limit = limit
        self._use(secret)

    def _use(self, secret: bytes) -> None:
        self.key = secret
        self.aead = AESGCM(_expand(secret, b"covault key", 32))
        self.iv = int.from_bytes(_expand(secret, b"covault iv", 12), "big")
        self.seq = self.used = 0

    def nonce(self) -> bytes:
        return (self.iv ^ self.seq).to_bytes(12, "big")

    def advance(self, n: int) -> None:
        self.seq += 1
        self.used += n
        if self.used >= self.limit:
            self._use(next_key(self.key))


class SealedChannel(RecordChannel):
    """The records of the module docstring over a connected socket (made by
    :meth:`~covault.transport.tls.TlsChannel.seal`; ``leftover``: ciphertext that came with the
    peer's key message). Blocking use until :meth:`set_nonblocking`, as every channel."""

    tls = True

    def __init__(
        self,
        sock: socket.socket,
        send_key: bytes,
        recv_key: bytes,
        *,
        version: str | None,
        peer_names: frozenset[str] | None,
        peer_cert: object = None,
        leftover: bytes = b"",
        rekey_bytes: int = REKEY_BYTES,
    ):
        super().__init__(sock)
        self.version = version  # of the TLS session that keyed the records
        self.peer_names, self.peer_cert = peer_names, peer_cert
        self._tx, self._rx = _Direction(send_key, rekey_bytes), _Direction(recv_key, rekey_bytes)
        self._raw = bytearray(max(FIRST_RAW_BUFFER, len(leftover)))  # grows to RAW_BUFFER for bulk
        self._rawv = memoryview(self._raw)
        self._raw[: len(leftover)] = leftover
        self._lo, self._hi = 0, len(leftover)  # unread ciphertext: _raw[_lo:_hi]
        self._left = memoryview(b"")  # its plaintext not yet delivered
        self._blocking = True
        self._plain: deque[memoryview] = deque()  # queued plaintext not yet sealed
        self._close_after_flush = False
        self._send_lock = threading.Lock()

    # Buffers of a record's size, made at first use (a link of small messages never needs them).
    @functools.cached_property
    def _out(self) -> memoryview:  # the record being written
        return memoryview(bytearray(MAX_RECORD + OVERHEAD))

    @functools.cached_property
    def _join(self) -> memoryview:  # small buffers gathered into one record
        return memoryview(bytearray(MAX_RECORD))

    @functools.cached_property
    def _stage(self) -> memoryview:  # a record larger than the reader's view
        return memoryview(bytearray(MAX_RECORD))

    # -- sealing ----------------------------------------------------------------------------------
    def _seal(
        self, plain: bytes | memoryview, into: memoryview | None = None, closing: bool = False
    ) -> memoryview:
        n = len(plain)
        rec = memoryview(bytearray(n + OVERHEAD)) if into is None else into[: n + OVERHEAD]
        header = HEADER.pack(n | CLOSING if closing else n)
        rec[: HEADER.size] = header
        d = self._tx
        with self._send_lock:
            d.aead.encrypt_into(d.nonce(), plain, header, rec[HEADER.size :])
            d.advance(n)
        return rec

    def send_buffers(self, buffers: Sequence[memoryview | bytes]) -> int:
        """Blocking: seal and write the buffers, a record at a time above COALESCE bytes."""
        views = [memoryview(b).cast("B") for b in buffers if len(b)]
        total = sum(v.nbytes for v in views)
        if total <= COALESCE:
            send_buffers(self.sock, [self._seal(b"".join(views))])
            return total
        for v in views:
            for i in range(0, v.nbytes, MAX_RECORD):
                send_buffers(self.sock, [self._seal(v[i : i + MAX_RECORD], self._out)])
        return total

    def queue(self, buffers: Sequence[memoryview | bytes]) -> None:
        """Small messages are sealed at once into one record; larger ones record by record as
        :meth:`flush` writes them (the buffers are referenced until then)."""
        views = [memoryview(b).cast("B") for b in buffers if len(b)]
        if not self._plain and sum(v.nbytes for v in views) <= COALESCE:
            self._pending.append(self._seal(b"".join(views)))
        else:
            self._plain.extend(views)

    @property
    def has_output(self) -> bool:
        return bool(self._pending or self._plain) or self._close_after_flush or self._shut_after_flush

    def flush(self) -> bool:
        while True:
            if not self._write_pending():
                return False
            if self._plain:  # _pending is empty: the record buffer is free
                self._pending.append(self._seal_next())
            elif self._close_after_flush:
                self._close_after_flush = False
                self._pending.append(self._seal(b"", closing=True))
            else:
                break
        self._finish_close_write()
        return True

    def _seal_next(self) -> memoryview:
        """Seal up to MAX_RECORD bytes of queued plaintext (small buffers gathered) into _out."""
        q = self._plain
        first = q[0]
        if first.nbytes >= MAX_RECORD:
            chunk = first[:MAX_RECORD]
            if first.nbytes > MAX_RECORD:
                q[0] = first[MAX_RECORD:]
            else:
                q.popleft()
        elif len(q) == 1 or first.nbytes + q[1].nbytes > MAX_RECORD:
            chunk = q.popleft()
        else:
            size = 0
            while q and size + q[0].nbytes <= MAX_RECORD:
                v = q.popleft()
                self._join[size : size + v.nbytes] = v
                size += v.nbytes
            chunk = self._join[:size]
        return self._seal(chunk, self._out)

    def queue_close_write(self) -> None:
        self._close_after_flush = True
        self._shut_after_flush = True

    def discard_output(self) -> None:
        super().discard_output()
        self._plain.clear()
        self._close_after_flush = False

    def close_write(self) -> None:
        """Blocking: the closing record, then the end of the stream (nothing may be queued)."""
        with contextlib.suppress(OSError):
            send_buffers(self.sock, [self._seal(b"", closing=True)])
        super().close_write()

    # -- opening ----------------------------------------------------------------------------------
    def set_nonblocking(self) -> None:
        super().set_nonblocking()
        self._blocking = False

    def recv_into(self, view: memoryview) -> int:
        while True:  # on a blocking socket read_nb waits in the socket read
            n = self.read_nb(view)
            if n is not None:
                return n

    def eof_note(self) -> str:
        if self._eof == "abrupt":
            return " abruptly (no closing record: the peer crashed, was killed or lost its network)"
        return ""

    def read_nb(self, view: memoryview) -> int | None:
        """Receive plaintext into ``view``, every whole record that has arrived (up to its size):
        the count, 0 at the end of the stream, None if no whole record has arrived; ``more``
        tells whether plaintext or ciphertext may be left behind."""
        self._raise_deferred()
        want, got = len(view), 0
        left = self._left
        if left.nbytes:
            got = min(want, left.nbytes)
            view[:got] = left[:got]
            self._left = left[got:]
            if got == want:
                self.more = True
                return got
        if self._eof == "clean":
            self.more = False
            return got
        drained = False
        while True:
            raw, rawv, lo, hi, need = self._raw, self._rawv, self._lo, self._hi, 0
            while hi - lo >= HEADER.size:
                (h,) = HEADER.unpack_from(raw, lo)
                n = h & LENGTH
                if n > MAX_RECORD or (h & CLOSING and n):
                    exc = RecordError(
                        f"a record announces {n} bytes (at most {MAX_RECORD}; the closing record 0)"
                    )
                    return self._defer(exc, got) if got else self._raise(exc)
                end = lo + OVERHEAD + n
                if end > hi:
                    need = OVERHEAD + n
                    break
                room = want - got
                dst = view[got : got + n] if n <= room else self._stage[:n]
                d = self._rx
                try:
                    d.aead.decrypt_into(
                        d.nonce(), rawv[lo + HEADER.size : end], rawv[lo : lo + HEADER.size], dst
                    )
                except InvalidTag:
                    dst[:] = bytes(n)  # no unauthenticated plaintext is left behind
                    exc = RecordError("a record failed authentication (corrupted or tampered stream)")
                    return self._defer(exc, got) if got else self._raise(exc)
                d.advance(n)
                self._lo = lo = end
                if h & CLOSING:
                    self._eof = "clean"
                    self.more = got > 0  # the end of the stream, next time
                    return got
                if n <= room:
                    got += n
                else:
                    view[got:] = dst[:room]
                    self._left = dst[room:]
                    got = want
                if got == want:
                    self.more = True
                    return got
            # No whole record is left: read the socket, unless its last read left nothing behind
            # (or, blocking, plaintext has come: another read could wait for the peer).
            if drained or (got and self._blocking):
                self.more = False
                return got or None
            self._make_room(need)
            hi = self._hi
            n, now = self._read_raw(self._rawv[hi:], got)
            if not n:
                return now
            self._hi = hi + n
            drained = self._hi < len(self._raw)
            if not drained and len(self._raw) < RAW_BUFFER:  # bulk traffic: read more per call
                self._make_room(RAW_BUFFER)

    def _make_room(self, need: int) -> None:
        """Move the unread ciphertext to the front of the buffer where space runs short, and grow
        the buffer (to at most RAW_BUFFER) where ``need`` bytes would not fit."""
        raw, lo, hi = self._raw, self._lo, self._hi
        if lo == hi:
            self._lo = self._hi = 0
        elif len(raw) - hi < max(need, MAX_RECORD + OVERHEAD):
            raw[: hi - lo] = self._rawv[lo:hi]
            self._lo, self._hi = 0, hi - lo
        if need > len(raw):
            grown = bytearray(max(need, RAW_BUFFER))
            grown[: self._hi] = self._rawv[: self._hi]
            self._raw, self._rawv = grown, memoryview(grown)

    def _raise(self, exc: BaseException) -> int:
        self.more = False
        raise exc
