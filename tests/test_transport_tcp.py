"""TCP transport: framing, malformed input, handshake, and covault.run(..., transport="tcp")."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import socket
import struct
import sys
import threading
import time
import types

import numpy as np
import pytest

import covault
from covault.errors import CovaultError, PeerError
from covault.launch import processes as launch
from covault.transport import sessionid
from covault.transport.framing import (
    HEADER,
    KIND_DATA,
    MAGIC,
    NO_TAG,
    VERSION,
    FrameError,
    FrameParser,
    FrameReader,
    encode_frame,
    read_frame,
)
from covault.transport.tcp import (
    SessionId,
    SessionMismatchError,
    TcpTransport,
    connect_mesh,
    open_listener,
    send_buffers,
)

pytestmark = pytest.mark.processes

ULP = 2.0**-16


# -- framing -------------------------------------------------------------------------------------
def _arrays():
    rng = np.random.default_rng(1)
    return [
        rng.integers(-(2**63), 2**63 - 1, size=(3, 4), dtype=np.int64),
        np.array([0, 2**64 - 1], dtype=np.uint64),
        np.array(7, dtype=np.int64),  # 0-d
        np.zeros((0,), np.int64),  # empty
        np.zeros((2, 0, 3), np.float32),  # empty, 3-d
        rng.random((2, 3)) > 0.5,
        rng.random(5).astype(np.float16),
        rng.random((3, 2)) + 1j,
        np.arange(12, dtype=np.int32).reshape(3, 4).T,  # not contiguous
        np.arange(4, dtype=">i8"),  # big-endian
        np.frombuffer(b"abc", np.uint8),
    ]


def _check_arrays(sent, got):
    assert len(got) == len(sent)
    for x, y in zip(sent, got):
        assert y.shape == x.shape
        assert y.dtype == x.dtype.newbyteorder("=") or y.dtype == x.dtype
        np.testing.assert_array_equal(y, x)
        assert y.flags.c_contiguous and y.flags.writeable


def _wire(msgs) -> bytes:
    out = bytearray()
    for m in msgs:
        header, bufs = encode_frame(m)
        out += header + b"".join(bytes(b) for b in bufs)
    return bytes(out)


@pytest.mark.parametrize("chunk", [1, 7, 100, 4096, 1 << 20])
def test_frame_parser_any_chunking(chunk):
    """The non-blocking parser yields the same frames however the stream is cut, including
    several frames in one read and large arrays received straight into their buffers."""
    big = np.arange(50_000, dtype=np.int64)  # 400 kB: received directly once the buffer is empty
    msgs = [_arrays(), [], [np.array(1.5)], [big, np.ones(3)], _arrays()[::-1], [big[::2].copy()]]
    wire = _wire(msgs)
    parser = FrameParser(bufsize=1024)
    frames, pos = [], 0
    while pos < len(wire):
        dst = parser.target()
        assert len(dst) > 0
        n = min(chunk, len(dst), len(wire) - pos)
        dst[:n] = wire[pos : pos + n]
        pos += n
        frames += parser.advance(n)
    assert not parser.mid_frame
    assert sum(f[2] for f in frames) == len(wire)
    assert [f[0] for f in frames] == [KIND_DATA] * len(msgs)
    for m, (_, arrays, _) in zip(msgs, frames):
        _check_arrays(m, arrays)


def test_frame_parser_checks_the_header_before_allocating():
    parser = FrameParser(max_bytes=4096)
    desc = _desc(INT64, (1000,))
    head = HEADER.pack(MAGIC, VERSION, KIND_DATA, 1, len(desc), 8000, NO_TAG) + desc
    dst = parser.target()
    dst[: len(head)] = head
    with pytest.raises(FrameError, match="limit of 4096"):
        parser.advance(len(head))
    half = FrameParser()
    dst = half.target()
    dst[:10] = _wire([[np.arange(3)]])[:10]
    assert half.advance(10) == [] and half.mid_frame


def test_framing_round_trip_many_frames_in_one_stream():
    a, b = socket.socketpair()
    try:
        msgs = [_arrays(), [], [np.array(1.5)], _arrays()[::-1]]
        wire = 0
        for m in msgs:
            header, bufs = encode_frame(m)
            wire += send_buffers(a, [header, *bufs])
        reader = FrameReader(b.recv_into, bufsize=64)  # tiny buffer: frames span many reads
        got_wire = 0
        for m in msgs:
            kind, arrays, n = read_frame(reader)
            got_wire += n
            assert kind == KIND_DATA
            _check_arrays(m, arrays)
        assert got_wire == wire
        a.close()
        with pytest.raises(EOFError):
            read_frame(reader)
    finally:
        a.close()
        b.close()


def test_unsupported_dtype_is_refused_before_sending():
    with pytest.raises(covault.ProtocolError, match="dtype object"):
        encode_frame([np.array([1, "x"], dtype=object)])


def _desc(code: int, shape: tuple[int, ...]) -> bytes:
    return struct.pack("<BB", code, len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)


def _frame(
    desc: bytes, body: bytes, narrays: int = 1, *, magic=MAGIC, version=VERSION, kind=KIND_DATA, tag=NO_TAG
):
    return HEADER.pack(magic, version, kind, narrays, len(desc), len(body), tag) + desc + body


INT64 = 8  # wire dtype code of int64
BAD_FRAMES = {
    "bad magic": HEADER.pack(b"HTTP", VERSION, 0, 1, 10, 8, NO_TAG) + b"x" * 18,
    "unsupported frame version": _frame(_desc(INT64, (1,)), b"\0" * 8, version=9),
    "unknown frame kind": _frame(_desc(INT64, (1,)), b"\0" * 8, kind=77),
    "unknown dtype code": _frame(_desc(200, (1,)), b"\0" * 8),
    "exceeds the limit": HEADER.pack(MAGIC, VERSION, 0, 1, 10, 5 << 30, NO_TAG),
    "arrays \\(at most": HEADER.pack(MAGIC, VERSION, 0, 1 << 20, 0, 0, NO_TAG),
    "another session": _frame(_desc(INT64, (1,)), b"\0" * 8, tag=b"othertag"),
    "absurd shape": _frame(_desc(INT64, (0, 1 << 50)), b""),
    "header announces": _frame(_desc(INT64, (2,)), b"\0" * 8),
    "trailing bytes": _frame(_desc(INT64, (1,)) + b"\0\0", b"\0" * 8),
    "truncated": _frame(_desc(INT64, (4,)), b"\0" * 32)[:-5],
}


@pytest.mark.parametrize("why", list(BAD_FRAMES))
def test_malformed_frames_fail_the_connection_with_peer_error(why):
    ours, theirs = socket.socketpair()
    t = TcpTransport("me", {"evil": ours})
    try:
        theirs.sendall(_frame(_desc(INT64, (2,)), np.array([5, 6], np.int64).tobytes()))
        np.testing.assert_array_equal(t.recv("evil", 5.0)[0], [5, 6])  # good frames still arrive
        theirs.sendall(BAD_FRAMES[why])
        if why == "truncated":
            theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(PeerError, match=f"party 'evil': .*(malformed frame|truncated).*{why}") as ei:
            t.recv("evil", 5.0)
        assert ei.value.party == "evil"
        with pytest.raises(PeerError, match="malformed"):  # stays failed
            t.recv("evil", 0.1)
    finally:
        t.close()
        theirs.close()


def test_frame_size_cap_is_checked_before_allocating():
    a, b = socket.socketpair()
    try:
        desc = _desc(INT64, (1000,))
        a.sendall(HEADER.pack(MAGIC, VERSION, KIND_DATA, 1, len(desc), 8000, NO_TAG) + desc)
        with pytest.raises(FrameError, match="limit of 4096"):
            read_frame(FrameReader(b.recv_into), max_bytes=4096)
    finally:
        a.close()
        b.close()


# -- transport over a socket pair ------------------------------------------------------------
def _pair():
    a, b = socket.socketpair()
    return TcpTransport("a", {"b": a}), TcpTransport("b", {"a": b})


def test_both_sides_send_large_messages_then_receive():
    ta, tb = _pair()
    big_a = [np.arange(2_000_000, dtype=np.int64), np.ones((3, 3))]
    big_b = [np.arange(1_500_000, dtype=np.uint64)[::-1].copy()]
    out = {}

    def side(t, peer, msg, key):
        t.send(peer, msg)
        out[key] = t.recv(peer, 20.0)

    threads = [
        threading.Thread(target=side, args=(ta, "b", big_a, "a")),
        threading.Thread(target=side, args=(tb, "a", big_b, "b")),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30.0)
    try:
        np.testing.assert_array_equal(out["a"][0], big_b[0])
        np.testing.assert_array_equal(out["b"][0], big_a[0])
        np.testing.assert_array_equal(out["b"][1], big_a[1])
        payload = sum(x.nbytes for x in big_a)
        assert ta.wire_bytes_sent > payload
        assert ta.wire_bytes_sent - payload < 200  # header + descriptors only
        assert tb.wire_bytes_received == ta.wire_bytes_sent
    finally:
        ta.close()
        tb.close()


def test_a_peer_that_reads_nothing_fails_a_send_after_the_timeout():
    a, b = socket.socketpair()
    t = TcpTransport("a", {"b": a}, send_timeout=0.3)
    try:
        start = time.monotonic()
        with pytest.raises(PeerError, match=r"party 'b': could not send for 0\.3 s: the peer reads nothing"):
            t.send("b", [np.zeros(4_000_000)])  # 32 MB: far more than the socket buffers hold
        assert time.monotonic() - start < 10
    finally:
        t.close()
        b.close()


def test_three_parties_exchange_large_messages_in_one_round():
    """Every party sends 8 MB to both others and receives from both, all at once (a rep3-like
    round with large messages): one exchange call each, no deadlock, exact contents."""
    pairs = {
        ("x", "y"): socket.socketpair(),
        ("x", "z"): socket.socketpair(),
        ("y", "z"): socket.socketpair(),
    }
    chans = {p: {} for p in "xyz"}
    for (p, q), (sp, sq) in pairs.items():
        chans[p][q], chans[q][p] = sp, sq
    ts = {p: TcpTransport(p, chans[p]) for p in "xyz"}
    msg = {p: np.full(1_000_000, ord(p), np.int64) for p in "xyz"}
    out, errors = {}, []

    def body(p):
        try:
            others = [q for q in "xyz" if q != p]
            out[p] = ts[p].exchange({q: [msg[p], np.array([i])] for i, q in enumerate(others)}, others, 20.0)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(p,)) for p in "xyz"]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30.0)
    try:
        assert not errors
        for p in "xyz":
            for q, got in out[p].items():
                np.testing.assert_array_equal(got[0], msg[q])
                assert int(got[1][0]) == [r for r in "xyz" if r != q].index(p)
    finally:
        for t in ts.values():
            t.close()


def test_timeout_close_and_abort_name_the_peer():
    ta, tb = _pair()
    try:
        with pytest.raises(PeerError, match=r"party 'b': no message within 0\.05 s"):
            ta.recv("b", 0.05)
        tb.send("a", [np.array([1])])
        tb.abort("ValueError: boom")
        np.testing.assert_array_equal(ta.recv("b", 5.0)[0], [1])  # sent before the abort
        with pytest.raises(PeerError, match="party 'b': peer stopped: ValueError: boom"):
            ta.recv("b", 5.0)
        with pytest.raises(PeerError, match="party 'b'"):
            for _ in range(100):  # the socket is gone: sending fails (maybe after buffering)
                ta.send("b", [np.zeros(100_000)])
    finally:
        ta.close()
        tb.close()
    tc, td = _pair()
    td.close()
    with pytest.raises(PeerError, match="party 'b': connection closed"):
        tc.recv("b", 5.0)
    tc.close()
    with pytest.raises(covault.PartyError, match="no peer 'zz'"):
        tc.recv("zz", 1.0)


# -- handshake ------------------------------------------------------------------------------
def _mesh(order, ids, timeout):
    listeners = {p: open_listener() for p in order}
    addresses = {p: listeners[p].getsockname() for p in order}
    out = {}

    def body(p):
        try:
            out[p] = connect_mesh(p, order, listeners[p], addresses, ids[p], timeout)
        except Exception as exc:
            out[p] = exc

    threads = [threading.Thread(target=body, args=(p,)) for p in order]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout + 10)
    return out


def test_mesh_connects_every_pair_and_checks_the_session_id():
    sid = b"s" * 16
    got = _mesh(("x", "y", "z"), dict.fromkeys("xyz", sid), 10.0)
    transports = {p: TcpTransport(p, got[p]) for p in "xyz"}
    try:
        for p in "xyz":
            for q in "xyz":
                if p != q:
                    transports[p].send(q, [np.array([ord(p)])])
        for p in "xyz":
            assert {q: int(transports[p].recv(q, 5.0)[0][0]) for q in transports[p].peers} == {
                q: ord(q) for q in "xyz" if q != p
            }
    finally:
        for t in transports.values():
            t.close()

    t0 = time.monotonic()
    got = _mesh(("x", "y"), {"x": sid, "y": b"o" * 16}, 10.0)
    assert time.monotonic() - t0 < 3.0  # both sides at once, not after the timeout
    for me, peer in (("x", "y"), ("y", "x")):
        assert type(got[me]) is SessionMismatchError and got[me].party == peer
        assert "session id mismatch" in str(got[me]) and got[me].keys == ()


def test_parties_of_different_jobs_name_the_keys_that_differ_at_once(caplog):
    """Session ids with manifests (digests per key): both parties fail at once, naming the keys
    that differ; a manifest too large for the hello goes per top-level key."""
    digest = {
        k: bytes([i]) * 8 for i, k in enumerate(["protocol", "model.epochs", "model.learning_rate", "seed"])
    }
    mine = SessionId(b"a" * 16, digest)
    theirs = SessionId(b"b" * 16, {**digest, "model.epochs": b"\xee" * 8, "label": b"\1" * 8})
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="covault.transport"):
        got = _mesh(("x", "y", "z"), {"x": mine, "y": mine, "z": theirs}, 10.0)
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed
    for me, peers in (("x", "z"), ("y", "z"), ("z", "xy")):  # z names whichever it heard first
        err = got[me]
        assert isinstance(err, SessionMismatchError) and err.keys == ("label", "model.epochs"), (me, err)
        assert err.party in peers and str(err) == (
            f"party {err.party!r}: session id mismatch: it runs another job or consortium config; "
            "keys that differ: label, model.epochs"
        )
    assert any("keys that differ: label, model.epochs" in r.getMessage() for r in caplog.records)
    big = {f"parties.p{i:03}.address": bytes([i]) * 8 for i in range(200)}
    blob = sessionid._encode_manifest({**big, "seed": b"s" * 8})
    assert len(blob) <= sessionid.MANIFEST_MAX_BYTES
    assert sorted(sessionid._decode_manifest(blob)) == ["parties", "seed"]
    sid = pickle.loads(pickle.dumps(mine))
    assert sid == mine and sid.manifest == mine.manifest
    with (
        open_listener() as lst,
        pytest.raises(covault.PartyError, match="1 to 255 bytes"),
    ):  # a hello holds it
        connect_mesh("x" * 256, ["x" * 256], lst, {}, mine, 1.0)


# -- covault.run over tcp -----------------------------------------------------------------------
def arithmetic_program(s):
    a, b = s.compute_parties[0], s.compute_parties[1]
    rng = np.random.default_rng(7)
    x0, y0, w0 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    x = s.input(x0 if s.party == a else None, owner=a)
    y = s.input(y0 if s.party == b else None, owner=b)
    w = s.input(w0 if s.party == b else None, owner=b)
    z = (x * y + x) @ w
    out = z.reveal()
    transport = s.net.transport
    assert transport.tls  # the default: mutual TLS with throw-away certificates
    if out is None:
        return None
    return out, (x0 * y0 + x0) @ w0, s.stats.bytes_sent, transport.wire_bytes_sent


@pytest.mark.parametrize(("protocol", "n"), [("2pc", 2), ("rep3", 3)])
def test_run_over_tcp_matches_plaintext(protocol, n):
    res = covault.run(arithmetic_program, n, protocol, transport="tcp")
    assert set(res) == ({"p0", "p1", "dealer"} if protocol == "2pc" else {"p0", "p1", "p2"})
    if protocol == "2pc":
        assert res["dealer"] is None
    outs = [res[p] for p in res if p != "dealer"]
    for got, want, payload, wire in outs:
        np.testing.assert_allclose(got, want, atol=64 * ULP)
        np.testing.assert_array_equal(got, outs[0][0])
        assert 0 < payload < wire
    assert multiprocessing.active_children() == []


def failing_program(s):
    x = s.input(np.ones(3) if s.party == "p0" else None, owner="p0")
    if s.party == "p1":
        raise ValueError("p1 cannot go on")
    return (x * x).reveal()


def test_party_failure_is_raised_promptly_and_no_process_remains():
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="p1 cannot go on") as ei:
        covault.run(failing_program, 3, "rep3", transport="tcp", timeout=120.0)
    assert time.monotonic() - t0 < 60.0  # peers stop on the closed connection, not the timeout
    assert "raised at party 'p1'" in ei.value.__notes__
    assert isinstance(ei.value.__cause__, launch.RemoteTraceback)
    assert "failing_program" in str(ei.value.__cause__)
    assert multiprocessing.active_children() == []


def test_program_that_cannot_be_pickled_is_refused_up_front():
    def nested(s):
        return 1

    for prog in (nested, lambda s: 1):
        with pytest.raises(CovaultError, match="needs a module-level function"):
            covault.run(prog, 3, "rep3", transport="tcp")
    assert multiprocessing.active_children() == []


def test_rebuilt_errors_keep_builtin_and_covault_types():
    class Odd(Exception):
        pass

    info = launch._describe(Odd("strange"))
    exc = launch._rebuild(info, "p2")
    assert type(exc) is CovaultError and "Odd at party 'p2': strange" in str(exc)
    peer = launch._rebuild(launch._describe(PeerError("p0", "connection closed")), "p1")
    assert type(peer) is PeerError and peer.party == "p0" and str(peer) == "party 'p0': connection closed"
    shape = launch._rebuild(launch._describe(covault.ShapeError("bad shape")), "p0")
    assert type(shape) is covault.ShapeError and str(shape) == "bad shape"
    key = launch._rebuild(launch._describe(KeyError("k")), "p0")
    assert type(key) is KeyError


def test_program_missing_in_the_party_process_is_reported(monkeypatch):
    ghost = types.ModuleType("covault_ghost_module")
    exec("def prog(s):\n    return 1\n", ghost.__dict__)
    monkeypatch.setitem(sys.modules, "covault_ghost_module", ghost)
    with pytest.raises(ModuleNotFoundError, match="covault_ghost_module") as ei:
        covault.run(ghost.prog, 3, "rep3", transport="tcp")
    assert "while loading the program in the party process" in ei.value.__notes__
    assert multiprocessing.active_children() == []
