"""Fuzzing the frame parsers (push parser, blocking reader) and a live connection: malformed
input ends in FrameError (PeerError naming the peer over a connection), never another
exception, never a hang."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from covault.errors import PeerError
from covault.transport import accept
from covault.transport.framing import (
    DTYPE_OF_CODE,
    HEADER,
    KIND_DATA,
    KINDS,
    MAGIC,
    NO_TAG,
    VERSION,
    FrameError,
    FrameParser,
    FrameReader,
    encode_frame,
    read_frame,
)
from covault.transport.tcp import LateJoinGuard, TcpTransport, connect_mesh, open_listener
from covault.transport.tls import TlsIdentity, throwaway_certificates

MAX_BYTES = 1 << 20  # the parsers' body limit in these tests
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIVE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DIMS = st.one_of(
    st.integers(0, 5),
    st.sampled_from(
        [0, 0, 1 << 16, 1 << 31, 1 << 32, 1 << 40, 1 << 40, (1 << 40) + 1, 1 << 62, (1 << 64) - 1]
    ),
)
BOOL = 1  # wire dtype code of bool


@st.composite
def descriptor(draw) -> bytes:
    code = draw(st.one_of(st.sampled_from([BOOL, *sorted(DTYPE_OF_CODE)]), st.integers(0, 255)))
    ndim = draw(st.one_of(st.integers(0, 4), st.integers(1, 3), st.sampled_from([32, 33, 63, 64, 65, 255])))
    pattern = draw(st.lists(DIMS, min_size=1, max_size=4))
    dims = (pattern * (ndim // len(pattern) + 1))[:ndim]
    if draw(st.booleans()) and dims:  # a descriptor cut short
        dims = dims[: draw(st.integers(0, len(dims) - 1))]
    return struct.pack("<BB", code, ndim) + struct.pack(f"<{len(dims)}Q", *dims)


def _needed(meta: bytes) -> int:
    """Body bytes the descriptors ask for (0 if they cannot be read)."""
    total, off = 0, 0
    while off + 2 <= len(meta):
        code, ndim = meta[off], meta[off + 1]
        off += 2
        if off + 8 * ndim > len(meta) or code not in DTYPE_OF_CODE:
            return 0
        count = 1
        for d in struct.unpack_from(f"<{ndim}Q", meta, off):
            count *= d
        off += 8 * ndim
        total += count * DTYPE_OF_CODE[code].itemsize
    return total


@st.composite
def crafted_frame(draw) -> bytes:
    """A frame with fields chosen near and past every limit."""
    descs = draw(st.lists(descriptor(), max_size=4))
    meta = b"".join(descs)
    narrays = draw(st.one_of(st.just(len(descs)), st.integers(0, 70_000)))
    meta_len = draw(st.one_of(st.just(len(meta)), st.integers(0, (1 << 32) - 1)))
    need = min(_needed(meta), (1 << 64) - 1)
    body_len = draw(st.one_of(st.just(need), st.integers(0, (1 << 64) - 1), st.integers(0, 64)))
    kind = draw(st.one_of(st.sampled_from(KINDS), st.integers(0, 255)))
    magic = draw(st.sampled_from([MAGIC] * 6 + [b"\x16\x03\x01\x00", b"CVLX"]))
    version = draw(st.sampled_from([VERSION] * 6 + [0, 255]))
    head = HEADER.pack(magic, version, kind, narrays, meta_len, body_len, NO_TAG)
    body = draw(st.one_of(st.just(b"\x00"), st.just(b"\x02"), st.binary(max_size=1)))
    body = body * min(body_len, 8192) if len(body) else b""
    return head + meta + body


_EMPTY_HUGE = struct.pack("<BB3Q", 8, 3, 0, 1 << 40, 1 << 40)  # int64, shape (0, 2^40, 2^40)
_BAD_BOOL = struct.pack("<BBQ", BOOL, 1, 2)  # bool, shape (2,)
KNOWN = {  # what the fuzzers found first: (frame, expected error)
    "empty array with absurd dimensions": (
        HEADER.pack(MAGIC, VERSION, KIND_DATA, 1, len(_EMPTY_HUGE), 0, NO_TAG) + _EMPTY_HUGE,
        "absurd shape",
    ),
    "bool byte 2": (
        HEADER.pack(MAGIC, VERSION, KIND_DATA, 1, len(_BAD_BOOL), 2, NO_TAG) + _BAD_BOOL + b"\x01\x02",
        "other than 0 and 1",
    ),
    "descriptor block over the limit": (
        HEADER.pack(MAGIC, VERSION, KIND_DATA, 1 << 10, 1 << 14, 0, NO_TAG),
        "descriptor block of",
    ),
}


def known_examples(test):
    """Run ``test`` on every KNOWN frame before the generated ones."""
    for frame, _ in KNOWN.values():
        test = example(data=frame)(test)
    return test


def _valid_frames(draw) -> bytes:
    arrays = [
        np.arange(draw(st.integers(0, 40)), dtype=draw(st.sampled_from([np.int64, np.uint8, np.float32]))),
        np.zeros((draw(st.integers(0, 3)), 0, 2), np.int32),
        np.array(draw(st.booleans())),
        np.ones((2, 3), bool),
    ]
    header, bufs = encode_frame(arrays[: draw(st.integers(0, len(arrays)))])
    return header + b"".join(bytes(b) for b in bufs)


@st.composite
def mutated_stream(draw) -> bytes:
    """Valid frames with bytes flipped, inserted, deleted or cut."""
    data = bytearray(b"".join(_valid_frames(draw) for _ in range(draw(st.integers(1, 3)))))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        else:
            del data[i:]
    return bytes(data)


STREAMS = st.one_of(
    crafted_frame(),
    mutated_stream(),
    st.binary(max_size=200),
    st.lists(crafted_frame(), min_size=2, max_size=3).map(b"".join),
)


def _check_frame(kind: int, arrays: list[np.ndarray]) -> None:
    """What a parser hands out is always sane: a known kind, wire dtypes, 0/1 bools."""
    assert kind in KINDS
    for a in arrays:
        assert isinstance(a, np.ndarray)
        assert a.dtype in DTYPE_OF_CODE.values() or a.dtype.newbyteorder("<") in DTYPE_OF_CODE.values()
        if a.dtype == np.bool_ and a.size:
            assert int(a.view(np.uint8).max()) <= 1


def _push(data: bytes, chunks: list[int]) -> None:
    parser = FrameParser(MAX_BYTES)
    pos, i = 0, 0
    try:
        while pos < len(data):
            dst = parser.target()
            assert len(dst) > 0
            n = min(chunks[i % len(chunks)], len(dst), len(data) - pos)
            i += 1
            dst[:n] = data[pos : pos + n]
            pos += n
            for kind, arrays, _ in parser.advance(n):
                _check_frame(kind, arrays)
    except FrameError:
        return


@FAST
@given(STREAMS, st.lists(st.integers(1, 5000), min_size=1, max_size=5))
@example(KNOWN["empty array with absurd dimensions"][0], [1 << 12])
@example(KNOWN["bool byte 2"][0], [7])
def test_push_parser_raises_only_frame_errors(data, chunks):
    _push(data, chunks)


class _Source:
    """``recv_into`` over bytes, 0 at the end (like a socket the peer closed)."""

    def __init__(self, data: bytes, step: int):
        self.data, self.pos, self.step = data, 0, step

    def recv_into(self, view: memoryview) -> int:
        n = min(len(view), self.step, len(self.data) - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@FAST
@given(STREAMS, st.integers(1, 5000), st.sampled_from([64, 1 << 13]))
@example(KNOWN["empty array with absurd dimensions"][0], 1 << 12, 64)
@example(KNOWN["bool byte 2"][0], 7, 1 << 13)
def test_blocking_reader_raises_only_frame_or_eof_errors(data, step, bufsize):
    reader = FrameReader(_Source(data, step).recv_into, bufsize, greedy=step % 2 == 0)
    for _ in range(len(data) + 1):
        try:
            kind, arrays, _ = read_frame(reader, MAX_BYTES)
        except (FrameError, EOFError):
            return
        _check_frame(kind, arrays)
    pytest.fail("the reader never reached the end of the stream")


@pytest.mark.parametrize("case", list(KNOWN))
def test_known_cases(case):
    frame, why = KNOWN[case]
    parser = FrameParser(4096)
    dst = parser.target()
    dst[: len(frame)] = frame
    with pytest.raises(FrameError, match=why):
        parser.advance(len(frame))
    with pytest.raises(FrameError, match=why):
        read_frame(FrameReader(_Source(frame + bytes(1 << 14), 1 << 20).recv_into), 4096)


# -- a live connection -----------------------------------------------------------------------------
def _drain_until_error(t: TcpTransport, peer: str) -> PeerError:
    """Receive from ``peer`` until its stream fails; at most a few messages can be valid."""
    for _ in range(100):
        try:
            for a in t.recv(peer, 5.0):
                _check_frame(KIND_DATA, [a])
        except PeerError as exc:
            return exc
    pytest.fail("the stream never ended")


@LIVE
@given(data=STREAMS)
@known_examples
def test_connected_peer_sending_garbage_fails_with_peer_error(data):
    ours, theirs = socket.socketpair()
    t = TcpTransport("me", {"evil": ours})
    writer = threading.Thread(target=lambda: (theirs.sendall(data), theirs.shutdown(socket.SHUT_WR)))
    writer.start()
    try:
        exc = _drain_until_error(t, "evil")
        assert exc.party == "evil" and "no message within" not in str(exc)  # never a stall
    finally:
        writer.join(10.0)
        t.close()
        theirs.close()


@pytest.fixture(scope="module")
def tls_ids():
    with throwaway_certificates(["x", "y"]) as d:
        yield {n: TlsIdentity.from_dir(d, n) for n in "xy"}


def _tls_pair(ids):
    listeners = {p: open_listener() for p in "xy"}
    addresses = {p: listeners[p].getsockname() for p in "xy"}
    out: dict = {}

    def body(p):
        out[p] = connect_mesh(p, "xy", listeners[p], addresses, b"f" * 16, 10.0, tls=ids[p])

    threads = [threading.Thread(target=body, args=(p,)) for p in "xy"]
    for th in threads:
        th.start()
    for th in threads:
        th.join(15.0)
    return out["x"]["y"], out["y"]["x"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(crafted_frame(), mutated_stream()))
@known_examples
def test_garbage_after_a_tls_handshake_fails_with_peer_error_naming_the_peer(tls_ids, data):
    """Bytes written by an authenticated peer (inside TLS records, with the connection's tag
    where the frame has the tag field) end the stream with a PeerError naming it."""
    to_y, from_x = _tls_pair(tls_ids)
    if len(data) >= HEADER.size:
        data = data[: HEADER.size - 8] + to_y.tag + data[HEADER.size :]
    t = TcpTransport("y", {"x": from_x})
    try:
        writer = threading.Thread(target=lambda: (to_y.send_buffers([data]), to_y.close_write()))
        writer.start()
        exc = _drain_until_error(t, "x")
        assert exc.party == "x" and "no message within" not in str(exc)
        writer.join(10.0)
    finally:
        t.close()
        to_y.close()


# -- hellos ---------------------------------------------------------------------------------------
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def guarded():
    """Parties x and y after set-up; y's listener stays open (late joiners are refused, each
    logged: no interval between refusal lines)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accept, "REFUSAL_LOG_INTERVAL", 0.0)
        yield from _guarded()


def _guarded():
    listeners = {p: open_listener() for p in "xy"}
    addresses = {p: listeners[p].getsockname() for p in "xy"}
    guard = LateJoinGuard()
    out: dict = {}

    def body(p):
        out[p] = connect_mesh(
            p, "xy", listeners[p], addresses, b"h" * 16, 10.0, guard=guard if p == "y" else None
        )

    threads = [threading.Thread(target=body, args=(p,)) for p in "xy"]
    for th in threads:
        th.start()
    for th in threads:
        th.join(15.0)
    yield addresses["y"]
    guard.stop()
    for chans in out.values():
        for ch in chans.values():
            ch.close()
    for sock in listeners.values():
        sock.close()


HELLOS = st.one_of(crafted_frame(), mutated_stream(), st.binary(min_size=1, max_size=200)).filter(len)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=HELLOS)
@known_examples
def test_malformed_hellos_are_refused_naming_the_address(guarded, data):
    """Garbage instead of a hello: the accepting party refuses it (logged with the address, no
    internal error), and a dialling party that gets it back fails with a PeerError naming the
    peer and its address, at once."""
    records = _Records()
    logging.getLogger("covault.transport").addHandler(records)
    try:
        with socket.create_connection(guarded, timeout=5.0) as s:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError, OSError):  # refused early
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):  # the refusal, then the end of the stream (never a hang)
                    pass
        deadline = time.monotonic() + 5.0
        while not records.messages and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        logging.getLogger("covault.transport").removeHandler(records)
    assert len(records.messages) == 1, records.messages
    assert re.match(
        r"party 'y' refused a connection from 127\.0\.0\.1:\d+: (bad hello \(|the caller runs TLS)",
        records.messages[0],
    )

    fake = open_listener()
    where = "{}:{}".format(*fake.getsockname())

    def answer():
        c, _ = fake.accept()
        with c, contextlib.suppress(OSError):  # x may hang up first
            c.settimeout(5.0)
            c.recv(4096)  # x's hello
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            while c.recv(4096):
                pass

    th = threading.Thread(target=answer)
    th.start()
    t0 = time.monotonic()
    try:
        connect_mesh("x", "xy", open_listener(), {"y": fake.getsockname()}, b"h" * 16, 5.0)
        pytest.fail("a malformed hello was accepted")
    except PeerError as exc:
        assert exc.party == "y" and where in str(exc), str(exc)
    assert time.monotonic() - t0 < 2.0
    th.join(5.0)
    fake.close()
