"""Wire format of the TCP transport: one frame per message, arrays sent without copies.

A frame is a fixed header, one descriptor per array, then the raw array buffers back to back::

    header      magic b"CVLT" | version u8 | kind u8 | narrays u32 | meta_len u32 | body_len u64
                | tag 8 bytes
    descriptor  dtype code u8 | ndim u8 | shape u64 * ndim          (meta_len bytes in all)
    body        the arrays' bytes, C order, little-endian             (body_len bytes in all)

All integers are little-endian. The tag binds every frame to its session and connection: the
connection set-up derives it (:func:`covault.transport.sessionid.connection_tag`) from the
run's session id and both parties' incarnation nonces, and the reader rejects a frame whose tag differs (hello frames,
sent before the tag exists, carry :data:`NO_TAG`).

:func:`encode_frame` returns the header and memoryviews of the arrays, which the sender writes
as they are (``socket.sendmsg``, or record by record over TLS). :class:`FrameParser` (the
transport's non-blocking receive path) and :func:`read_frame` (blocking, for handshakes) check
every field before allocating; large arrays are received straight into fresh numpy buffers.
Checked: magic, version, kind, tag; at most :data:`MAX_ARRAYS` arrays; descriptor block and body
within the reader's byte limit; known dtype codes; at most :data:`MAX_NDIM` dimensions (fewer if
numpy supports fewer); every dimension at most :data:`MAX_DIM` and the product of the non-zero
ones within numpy's limits (so even an empty array cannot claim an absurd shape); array sizes
adding up to the body exactly; bool arrays holding only 0 and 1. Anything wrong (or a stream
ending inside a frame) raises :class:`FrameError` and nothing else; the transport turns it into
a PeerError naming the peer. A parser that raised must not be used again.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence

import numpy as np

from covault.errors import CovaultError, ProtocolError

MAGIC = b"CVLT"
VERSION = 2
HEADER = struct.Struct("<4sBBIIQ8s")
TAG_BYTES = 8
NO_TAG = bytes(TAG_BYTES)
_DESC = struct.Struct("<BB")
_Specs = list[tuple[np.dtype, tuple[int, ...]]]  # (dtype, shape) of each array of a frame

KIND_DATA = 0  # a message of the program
KIND_ABORT = 1  # the sender stops; one uint8 array holds the reason (UTF-8)
KIND_HELLO = 2  # handshake: [session id, party name, incarnation nonce] as uint8 arrays
KINDS = (KIND_DATA, KIND_ABORT, KIND_HELLO)

MAX_FRAME_BYTES = 4 << 30  # body cap: 4 GiB
MAX_ARRAYS = 1 << 16
MAX_NDIM = 64
MAX_DIM = 1 << 40
MAX_SPAN = 1 << 62  # bytes spanned by an array's non-zero dimensions (numpy's limit is 2^63 - 1)
_RECV_NDIM = min(MAX_NDIM, 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32)

_WIRE_DTYPES = (
    np.bool_,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
)
DTYPE_OF_CODE: dict[int, np.dtype] = {
    i + 1: np.dtype(t).newbyteorder("<") for i, t in enumerate(_WIRE_DTYPES)
}
CODE_OF_DTYPE: dict[np.dtype, int] = {dt: code for code, dt in DTYPE_OF_CODE.items()}


_TLS_RECORDS = (b"\x15\x03", b"\x16\x03", b"\x17\x03")  # TLS alert, handshake, data records


class FrameError(CovaultError):
    """A received frame is malformed, oversized or truncated."""


def byte_view(a: np.ndarray) -> memoryview:
    """Flat uint8 memoryview of a C-contiguous array (no copy)."""
    return memoryview(a.reshape(-1).view(np.uint8))


def _desc_struct(ndim: int) -> struct.Struct:
    st = _DESC_BY_NDIM.get(ndim)
    if st is None:
        st = _DESC_BY_NDIM[ndim] = struct.Struct(f"<BB{ndim}Q")
    return st


_DESC_BY_NDIM: dict[int, struct.Struct] = {}
_NATIVE_CODES = CODE_OF_DTYPE if sys.byteorder == "little" else {}  # dtypes sent as they are


def encode_frame(
    arrays: Sequence[np.ndarray], kind: int = KIND_DATA, tag: bytes = NO_TAG
) -> tuple[bytes, list[memoryview]]:
    """Header bytes (fixed header + descriptors) and the non-empty array buffers of one frame."""
    header, bufs, _ = encode_frame_sized(arrays, kind, tag)
    return header, bufs


def encode_frame_sized(
    arrays: Sequence[np.ndarray], kind: int = KIND_DATA, tag: bytes = NO_TAG
) -> tuple[bytes, list[memoryview], int]:
    """:func:`encode_frame` plus the frame's size on the wire."""
    if len(arrays) > MAX_ARRAYS:
        raise ProtocolError(f"a message holds at most {MAX_ARRAYS} arrays, got {len(arrays)}")
    descs = []
    bufs: list[memoryview] = []
    body = 0
    for a in arrays:
        if type(a) is not np.ndarray:
            a = np.asarray(a)
        code = _NATIVE_CODES.get(a.dtype)
        if code is None:
            wire = a.dtype.newbyteorder("<")
            code = CODE_OF_DTYPE.get(wire)
            if code is None:
                raise ProtocolError(
                    f"cannot send arrays of dtype {a.dtype} over tcp; supported: "
                    + ", ".join(str(np.dtype(t)) for t in _WIRE_DTYPES)
                )
            a = a.astype(wire)
        ndim = a.ndim
        if ndim > MAX_NDIM:
            raise ProtocolError(f"cannot send a {ndim}-dimensional array (at most {MAX_NDIM})")
        descs.append(_desc_struct(ndim).pack(code, ndim, *a.shape))
        if a.nbytes:
            if not a.flags.c_contiguous:
                a = np.ascontiguousarray(a)
            bufs.append(memoryview(a).cast("B"))
            body += a.nbytes
    if body > MAX_FRAME_BYTES:
        raise ProtocolError(f"message of {body} bytes exceeds the frame limit of {MAX_FRAME_BYTES} bytes")
    meta = b"".join(descs)
    header = HEADER.pack(MAGIC, VERSION, kind, len(arrays), len(meta), body, tag) + meta
    return header, bufs, len(header) + body


class _Eof(Exception):
    """The stream ended."""


class FrameReader:
    """Buffered reader over ``recv_into``: small reads are batched, large ones go straight
    into the destination buffer. With ``greedy=False`` it never reads past what it is asked
    for (for a handshake, after which the stream changes hands)."""

    def __init__(self, recv_into: Callable[[memoryview], int], bufsize: int = 1 << 18, greedy: bool = True):
        self._recv_into = recv_into
        self._greedy = greedy
        self._buf = bytearray(bufsize)
        self._view = memoryview(self._buf)
        self._lo = 0
        self._hi = 0

    @property
    def buffered(self) -> int:
        return self._hi - self._lo

    def _fill(self, need: int) -> None:
        """Make at least ``need`` (<= buffer size) bytes available in the buffer."""
        if len(self._buf) - self._lo < need:
            n = self._hi - self._lo
            self._view[:n] = self._view[self._lo : self._hi]
            self._lo, self._hi = 0, n
        while self._hi - self._lo < need:
            end = len(self._buf) if self._greedy else self._lo + need
            got = self._recv_into(self._view[self._hi : end])
            if not got:
                raise _Eof
            self._hi += got

    def read_exact(self, n: int) -> bytes:
        if n > len(self._buf):
            out = bytearray(n)
            self.read_into(memoryview(out))
            return bytes(out)
        self._fill(n)
        out = bytes(self._view[self._lo : self._lo + n])
        self._lo += n
        return out

    def read_into(self, dst: memoryview) -> None:
        total = len(dst)
        pos = min(self.buffered, total)
        dst[:pos] = self._view[self._lo : self._lo + pos]
        self._lo += pos
        while pos < total:
            rem = total - pos
            if rem < len(self._buf) // 2:
                self._fill(rem)
                dst[pos:] = self._view[self._lo : self._lo + rem]
                self._lo += rem
                return
            got = self._recv_into(dst[pos:])
            if not got:
                raise _Eof
            pos += got


def read_frame(
    reader: FrameReader, max_bytes: int = MAX_FRAME_BYTES, tag: bytes = NO_TAG
) -> tuple[int, list[np.ndarray], int]:
    """Read one frame: ``(kind, arrays, wire bytes)``; its tag must be ``tag``.

    Raises EOFError if the stream ends cleanly before a frame starts, FrameError if it ends
    inside a frame or any field is invalid.
    """
    started = reader.buffered > 0
    try:
        if not started:
            reader._fill(1)
        started = True
        kind, narrays, meta_len, body_len = check_header(reader.read_exact(HEADER.size), max_bytes, tag)
        specs = _parse_descriptors(reader.read_exact(meta_len), narrays, body_len)
        arrays = _allocate(specs)
        for a in arrays:
            if a.nbytes:
                reader.read_into(byte_view(a))
        _check_bools(arrays, _bool_indices(specs))
    except _Eof:
        if not started:
            raise EOFError("stream closed") from None
        raise FrameError("truncated frame: the connection closed in the middle of a frame") from None
    return kind, arrays, HEADER.size + meta_len + body_len


def check_header(raw: bytes | memoryview, max_bytes: int, tag: bytes) -> tuple[int, int, int, int]:
    """Validate a fixed header: ``(kind, narrays, meta_len, body_len)``, or FrameError."""
    magic, version, kind, narrays, meta_len, body_len, got_tag = HEADER.unpack(raw)
    if magic != MAGIC:
        hint = " (the peer speaks TLS: is TLS off on this side only?)" if magic[:2] in _TLS_RECORDS else ""
        raise FrameError(f"bad magic {magic!r} (expected {MAGIC!r}){hint}")
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version} (this side speaks {VERSION})")
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind}")
    if got_tag != tag:
        raise FrameError(
            f"frame tagged {got_tag.hex()} but this connection's tag is {tag.hex()}: it belongs to "
            "another session or to an earlier incarnation of the peer"
        )
    if narrays > MAX_ARRAYS:
        raise FrameError(f"frame claims {narrays} arrays (at most {MAX_ARRAYS})")
    if meta_len > narrays * (_DESC.size + 8 * MAX_NDIM):
        raise FrameError(f"descriptor length {meta_len} is impossible for {narrays} arrays")
    if meta_len > max_bytes:
        raise FrameError(f"descriptor block of {meta_len} bytes exceeds the limit of {max_bytes} bytes")
    if body_len > max_bytes:
        raise FrameError(f"frame body of {body_len} bytes exceeds the limit of {max_bytes} bytes")
    return kind, narrays, meta_len, body_len


def _allocate(specs: _Specs) -> list[np.ndarray]:
    try:
        return [np.empty(shape, dtype) for dtype, shape in specs]
    except (ValueError, MemoryError) as exc:
        raise FrameError(f"cannot allocate the frame's arrays: {exc}") from None


DIRECT_MIN = 1 << 16  # the rest of an array at least this large is received straight into it


class FrameParser:
    """Push parser of frames for a non-blocking stream (the transport's receive path).

    The owner receives into :meth:`target` and reports the byte count to :meth:`advance`, which
    returns every frame completed by those bytes as ``(kind, arrays, wire bytes)``. Headers and
    small arrays are received into an internal buffer and copied out; the rest of a large array
    is received straight into the array. Fields are checked as in :func:`read_frame`, before
    anything is allocated; a bad frame raises FrameError.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES, tag: bytes = NO_TAG, bufsize: int = 1 << 18):
        self._max, self._tag = max_bytes, tag
        self._buf = bytearray(max(bufsize, 2 * HEADER.size))
        self._view = memoryview(self._buf)
        self._lo = self._hi = 0
        self._head: tuple[int, int, int, int] | None = None  # header of the frame in progress
        self._meta: bytearray | None = None  # its descriptors, until parsed
        self._arrays: list[np.ndarray] = []
        self._bools: tuple[int, ...] = ()  # indices of its bool arrays (checked once filled)
        self._dests: list[memoryview] = []  # buffers still to fill, in order
        self._ai = self._pos = 0  # current destination and bytes already in it
        self._direct = False

    @property
    def mid_frame(self) -> bool:
        """Whether bytes of an unfinished frame have arrived (the stream must not end here)."""
        return self._head is not None or self._hi > self._lo

    def target(self) -> memoryview:
        """Where the next received bytes must go (never empty)."""
        if self._ai < len(self._dests) and self._lo == self._hi:
            rest = len(self._dests[self._ai]) - self._pos
            if rest >= DIRECT_MIN:
                self._direct = True
                return self._dests[self._ai][self._pos :]
        self._direct = False
        if self._lo == self._hi:
            self._lo = self._hi = 0
        elif len(self._buf) - self._hi < HEADER.size:  # only a header's head can be left over
            n = self._hi - self._lo
            self._view[:n] = self._view[self._lo : self._hi]
            self._lo, self._hi = 0, n
        return self._view[self._hi :]

    def advance(self, n: int) -> list[tuple[int, list[np.ndarray], int]]:
        """Account for ``n`` bytes received into the last :meth:`target`; the completed frames."""
        if self._direct:
            self._pos += n
            if self._pos == len(self._dests[self._ai]):
                self._ai, self._pos = self._ai + 1, 0
        else:
            self._hi += n
        done = []
        while True:
            if self._head is None:
                avail = self._hi - self._lo
                if avail < HEADER.size:
                    return done
                self._head = check_header(self._view[self._lo : self._lo + HEADER.size], self._max, self._tag)
                kind, narrays, meta_len, body_len = self._head
                total = HEADER.size + meta_len + body_len
                if avail >= total and body_len <= DIRECT_MIN:  # a whole small frame: one copy
                    lo = self._lo + HEADER.size
                    specs, bools = _cached_specs(bytes(self._view[lo : lo + meta_len]), narrays, body_len)
                    arrays = _from_body(self._buf[lo + meta_len : lo + meta_len + body_len], specs)
                    if bools:
                        _check_bools(arrays, bools)
                    done.append((kind, arrays, total))
                    self._lo += total
                    self._head = None
                    continue
                self._lo += HEADER.size
                self._meta = bytearray(self._head[2])
                self._dests = [memoryview(self._meta)] if self._meta else []
                self._ai = self._pos = 0
            while self._ai < len(self._dests) and self._lo < self._hi:
                dst = self._dests[self._ai]
                take = min(len(dst) - self._pos, self._hi - self._lo)
                dst[self._pos : self._pos + take] = self._view[self._lo : self._lo + take]
                self._lo += take
                self._pos += take
                if self._pos == len(dst):
                    self._ai, self._pos = self._ai + 1, 0
            if self._ai < len(self._dests):
                return done
            kind, narrays, meta_len, body_len = self._head
            if self._meta is not None:  # descriptors complete: allocate the arrays
                specs = _parse_descriptors(bytes(self._meta), narrays, body_len)
                self._bools = _bool_indices(specs)
                self._arrays = _allocate(specs)
                self._meta = None
                self._dests = [byte_view(a) for a in self._arrays if a.nbytes]
                self._ai = self._pos = 0
                continue
            if self._bools:
                _check_bools(self._arrays, self._bools)
            done.append((kind, self._arrays, HEADER.size + meta_len + body_len))
            self._head, self._arrays, self._dests = None, [], []
            self._ai = self._pos = 0


_SPECS: dict[tuple[bytes, int, int], tuple[_Specs, tuple[int, ...]]] = {}
_BOOL = np.dtype(np.bool_)


def _cached_specs(meta: bytes, narrays: int, body_len: int) -> tuple[_Specs, tuple[int, ...]]:
    """:func:`_parse_descriptors` and the indices of its bool arrays, remembered (protocols send
    the same shapes over and over)."""
    key = (meta, narrays, body_len)
    got = _SPECS.get(key)
    if got is None:
        specs = _parse_descriptors(meta, narrays, body_len)
        got = specs, _bool_indices(specs)
        if len(_SPECS) >= 1024:
            _SPECS.clear()
        _SPECS[key] = got
    return got


def _bool_indices(specs: _Specs) -> tuple[int, ...]:
    return tuple(i for i, (dtype, _) in enumerate(specs) if dtype == _BOOL)


def _check_bools(arrays: list[np.ndarray], bools: tuple[int, ...]) -> None:
    """Bool arrays must hold 0 or 1 in every byte (numpy misbehaves on other values)."""
    for i in bools:
        a = arrays[i]
        if a.size and int(a.view(np.uint8).max()) > 1:
            raise FrameError(f"bool array {i} holds bytes other than 0 and 1")


def _from_body(body: bytearray, specs: _Specs) -> list[np.ndarray]:
    """The arrays of a frame whose body was copied out in one piece (views of that copy)."""
    out, off = [], 0
    try:
        for dtype, shape in specs:
            count = 1
            for d in shape:
                count *= d
            if count:
                out.append(np.frombuffer(body, dtype, count, off).reshape(shape))
                off += count * dtype.itemsize
            else:
                out.append(np.empty(shape, dtype))
    except (ValueError, MemoryError) as exc:  # not expected after _parse_descriptors
        raise FrameError(f"cannot build the frame's arrays: {exc}") from None
    return out


def _parse_descriptors(meta: bytes, narrays: int, body_len: int) -> _Specs:
    specs = []
    off = 0
    total = 0
    for i in range(narrays):
        if off + _DESC.size > len(meta):
            raise FrameError(f"descriptor of array {i} runs past the descriptor block")
        code, ndim = _DESC.unpack_from(meta, off)
        off += _DESC.size
        dtype = DTYPE_OF_CODE.get(code)
        if dtype is None:
            raise FrameError(f"array {i} has unknown dtype code {code}")
        if ndim > _RECV_NDIM:
            raise FrameError(f"array {i} claims {ndim} dimensions (at most {_RECV_NDIM})")
        if off + 8 * ndim > len(meta):
            raise FrameError(f"shape of array {i} runs past the descriptor block")
        shape = struct.unpack_from(f"<{ndim}Q", meta, off)
        off += 8 * ndim
        count = span = 1
        for d in shape:
            if d > MAX_DIM:
                raise FrameError(f"array {i} has an absurd shape {shape} (a dimension above {MAX_DIM})")
            count *= d
            span *= d or 1
        if span * dtype.itemsize > MAX_SPAN:
            raise FrameError(f"array {i} has an absurd shape {shape} (beyond what an array can index)")
        total += count * dtype.itemsize
        if total > body_len:
            raise FrameError(f"arrays need more than the {body_len} body bytes the header announces")
        specs.append((dtype, shape))
    if off != len(meta):
        raise FrameError(f"descriptor block has {len(meta) - off} trailing bytes")
    if total != body_len:
        raise FrameError(f"arrays need {total} bytes but the header announces {body_len}")
    return specs
