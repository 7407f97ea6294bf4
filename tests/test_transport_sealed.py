"""covault's records inside TLS (covault.transport.sealed): every byte arrives intact and in order
whatever the sizes and read views; tampering, reordering, replay, deletion and truncation are
each detected; keys update on both ends; nothing readable goes on the wire."""

import os
import socket
import threading

import numpy as np
import pytest

from covault.transport.sealed import (
    MAX_RECORD,
    OVERHEAD,
    RecordError,
    SealedChannel,
    derive_keys,
    next_key,
)


def pair(rekey_bytes=None):
    a, b = socket.socketpair()
    a.settimeout(10)  # a bug fails the test instead of hanging it
    b.settimeout(10)
    k1, k2 = derive_keys(os.urandom(32), os.urandom(32))
    kw = {} if rekey_bytes is None else {"rekey_bytes": rekey_bytes}
    x = SealedChannel(a, k1, k2, version="TLSv1.3", peer_names=None, **kw)
    y = SealedChannel(b, k2, k1, version="TLSv1.3", peer_names=None, **kw)
    return x, y


def read_exactly(ch, n, step=None):
    out = bytearray(n)
    view, pos = memoryview(out), 0
    while pos < n:
        got = ch.recv_into(view[pos : pos + step] if step else view[pos:])
        assert got, "stream ended early"
        pos += got
    return bytes(out)


def send_in_thread(ch, messages, close=False):
    def run():
        for m in messages:
            ch.send_buffers(m)
        if close:
            ch.close_write()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_derived_keys_differ_per_direction_and_per_seed():
    s1, s2 = os.urandom(32), os.urandom(32)
    k1, k2 = derive_keys(s1, s2)
    assert len(k1) == len(k2) == 32 and k1 != k2
    assert derive_keys(s1, s2) == (k1, k2)
    assert derive_keys(s2, s1) != (k1, k2)
    assert next_key(k1) not in (k1, k2) and len(next_key(k1)) == 32
    with pytest.raises(ValueError, match="32 bytes"):
        derive_keys(s1[:16], s2)


@pytest.mark.parametrize("step", [None, 7, 65536])
def test_blocking_messages_of_every_size_arrive_intact(step):
    x, y = pair()
    rng = np.random.default_rng(1)  # test data only
    sizes = [1, 17, 16384, 16385, MAX_RECORD - 1, MAX_RECORD, MAX_RECORD + 1, 3 * MAX_RECORD + 5]
    msgs = [[b"head", rng.integers(0, 256, n, dtype=np.uint8).tobytes()] for n in sizes]
    t = send_in_thread(x, msgs, close=True)
    for m in msgs:
        want = b"".join(m)
        assert read_exactly(y, len(want), step) == want
    assert y.recv_into(memoryview(bytearray(10))) == 0 and y.eof_note() == ""  # the closing record
    t.join(10)
    x.close()
    y.close()


def test_nonblocking_queue_and_flush_deliver_in_order_both_ways_at_once():
    x, y = pair()
    for ch in (x, y):
        ch.set_nonblocking()
    rng = np.random.default_rng(2)
    out = {
        ch: [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (5, 70000, 2 * MAX_RECORD + 3, 9)]
        for ch in (x, y)
    }
    want = {x: b"".join(out[y]), y: b"".join(out[x])}
    got = {x: bytearray(), y: bytearray()}
    for ch in (x, y):
        for m in out[ch]:
            ch.queue([m[:3], m[3:]])
    view = memoryview(bytearray(100000))
    for _ in range(100000):
        done = True
        for ch in (x, y):
            done &= ch.flush()
            n = ch.read_nb(view)
            while n:
                got[ch] += view[:n]
                n = ch.read_nb(view) if ch.more else None
        if done and all(len(got[c]) == len(want[c]) for c in (x, y)):
            break
    assert bytes(got[x]) == want[x] and bytes(got[y]) == want[y]


def test_keys_update_at_both_ends_and_data_stays_intact():
    x, y = pair(rekey_bytes=5000)
    first = x._tx.key
    msgs = [[os.urandom(3000)] for _ in range(10)]
    t = send_in_thread(x, msgs)
    for m in msgs:
        assert read_exactly(y, 3000) == m[0]
    t.join(10)
    assert x._tx.key != first and x._tx.key == y._rx.key  # five updates, in step
    assert x._tx.key == next_key(next_key(next_key(next_key(next_key(first)))))


class Tap:
    """Stands in for a socket: keeps what each send wrote."""

    def __init__(self):
        self.writes = []

    def sendmsg(self, views):
        data = b"".join(bytes(v) for v in views)
        self.writes.append(data)
        return len(data)


def capture(msgs):
    """The records each of ``msgs`` becomes on the wire, and a receiver keyed for them."""
    k1, k2 = derive_keys(os.urandom(32), os.urandom(32))
    tap = Tap()
    x = SealedChannel(tap, k1, k2, version="TLSv1.3", peer_names=None)
    for m in msgs:
        x.send_buffers(m)
    a, b = socket.socketpair()
    b.settimeout(10)
    return tap.writes, SealedChannel(b, k2, k1, version="TLSv1.3", peer_names=None), a


@pytest.mark.parametrize("attack", ["flip", "swap", "replay", "drop", "header"])
def test_tampered_reordered_replayed_or_dropped_records_are_refused(attack):
    (r0, r1, r2), y, end = capture([[b"first message"], [b"second message"], [b"third message"]])
    if attack == "flip":
        stream = [r0, r1[:10] + bytes([r1[10] ^ 1]) + r1[11:], r2]
    elif attack == "swap":
        stream = [r0, r2, r1]
    elif attack == "replay":
        stream = [r0, r0, r1]
    elif attack == "drop":
        stream = [r0, r2]
    else:  # the length in the header, changed: the tag covers the header
        stream = [r0, r1[:3] + bytes([r1[3] - 1]) + r1[4:-1]]
    end.sendall(b"".join(stream))
    assert read_exactly(y, 13) == b"first message"
    with pytest.raises(RecordError, match="failed authentication"):
        y.recv_into(memoryview(bytearray(100)))


def test_untouched_records_pass_the_same_receiver():
    (r0, r1, r2), y, end = capture([[b"first message"], [b"second message"], [b"third message"]])
    end.sendall(r0 + r1 + r2)
    assert read_exactly(y, 40) == b"first messagesecond messagethird message"


def test_a_record_announcing_too_many_bytes_is_refused_naming_the_bound():
    x, y = pair()
    x.sock.sendall((MAX_RECORD + 1).to_bytes(4, "big") + bytes(64))
    with pytest.raises(RecordError, match=f"announces {MAX_RECORD + 1} bytes .at most {MAX_RECORD}"):
        y.recv_into(memoryview(bytearray(100)))


def test_a_stream_cut_without_the_closing_record_is_abrupt_and_messages_before_arrive():
    x, y = pair()
    x.send_buffers([b"last words"])
    x.sock.shutdown(socket.SHUT_WR)  # no closing record: a crash, or a truncating attacker
    assert read_exactly(y, 10) == b"last words"
    assert y.recv_into(memoryview(bytearray(10))) == 0
    assert "abruptly (no closing record" in y.eof_note()


def test_nothing_readable_on_the_wire_and_ciphertext_looks_uniform():
    secret = np.arange(200000, dtype=np.int64)  # a recognisable, highly structured plaintext
    raw = b"".join(capture([[secret.tobytes()]])[0])
    assert len(raw) == secret.nbytes + 2 * OVERHEAD  # two records: 1 MiB and the rest
    for probe in (secret[1000:1004].tobytes(), secret[150000:150004].tobytes()):
        assert probe not in raw
    counts = np.bincount(np.frombuffer(raw, np.uint8), minlength=256)
    expected = len(raw) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 400  # 255 degrees of freedom: p < 1e-6 above about 370 for uniform bytes
    fresh = b"".join(capture([[secret.tobytes()]])[0])
    assert fresh[4:1000] != raw[4:1000]  # fresh keys, fresh ciphertext


def test_the_closing_record_read_with_the_last_plaintext_is_reported_at_the_next_read():
    x, y = pair()
    x.send_buffers([b"abc"])
    x.sock.sendall(x._seal(b"", closing=True))  # the closing record, the socket left open
    y.set_nonblocking()
    view = memoryview(bytearray(100))
    for _ in range(1000):
        n = y.read_nb(view)
        if n is not None:
            break
    assert n == 3 and y.more  # the loop reads again at once: no wait for a FIN that may not come
    assert y.read_nb(view) == 0 and y.eof_note() == ""


def test_a_link_of_small_messages_keeps_small_buffers_and_bulk_grows_them():
    from covault.transport.sealed import FIRST_RAW_BUFFER, RAW_BUFFER

    x, y = pair()
    t = send_in_thread(x, [[b"small"]] * 50)
    assert read_exactly(y, 250) == b"small" * 50
    t.join(10)
    assert len(y._raw) == FIRST_RAW_BUFFER and not {"_out", "_join", "_stage"} & (
        vars(x).keys() | vars(y).keys()
    )
    big = os.urandom(3 * MAX_RECORD)
    t = send_in_thread(x, [[big]])
    assert read_exactly(y, len(big)) == big
    t.join(10)
    assert len(y._raw) == RAW_BUFFER
