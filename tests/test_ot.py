"""Oblivious transfer: base OT, IKNP extension (random, correlated, chosen), what the receiver
sends, and the errors of wrong sizes and malformed peers."""

from __future__ import annotations

import functools
import os
import re

import numpy as np
import pytest

import covault
from covault.errors import CovaultError, PeerError, ProtocolError, ShapeError
from covault.protocols.ot import OTExtReceiver, OTExtSender, session_channel
from covault.protocols.ot.base import base_ot_recv, base_ot_send, lift, random_choices
from covault.protocols.ot.bits import AHEAD, Buffers, ColumnPRG, transpose
from covault.protocols.ot.crhash import FixedKeyHash


def urandom_array(shape, dtype) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(os.urandom(n), dtype=dtype).reshape(shape).copy()


# -- programs (module level: the tcp test pickles them) -----------------------------------------
def ot_program(session, plan, batch=1 << 20, record=False):
    """Run ``plan`` (a list of (operation, argument)) with p0 as sender and p1 as receiver;
    return what each side got (and, with ``record``, the arrays the party sent)."""
    if session.party not in ("p0", "p1"):
        return None
    sent: list[np.ndarray] = []
    if record:
        session.net.add_recorder(
            lambda d, peer, msg: sent.extend(a.copy() for a in msg) if d == "sent" else None
        )
    ch = session_channel(session)
    out = []
    try:
        if session.party == "p0":
            s = OTExtSender(ch, tag=b"test", batch=batch)
            for op, arg in plan:
                if op == "random":
                    out.append(s.random_ot(arg))
                elif op == "cot":
                    n, k = arg
                    delta = urandom_array((n, k), np.int64)
                    out.append((delta, s.cot_send(n, delta)))
                elif op == "cot_derived":  # delta of each OT from the x0 of the one before
                    n, k = arg
                    seen = {}

                    def derive(x0):
                        seen["delta"] = np.roll(x0, 1, axis=0) * 3 + np.arange(n)[:, None]
                        return seen["delta"]

                    x0 = s.cot_send_derived(n, k, derive)
                    out.append((seen["delta"], x0))
                elif op in ("chosen", "choices"):
                    n, b = arg if op == "chosen" else (len(arg[0]), arg[1])
                    m0, m1 = urandom_array((n, b), np.uint8), urandom_array((n, b), np.uint8)
                    s.chosen_ot(m0, m1)
                    out.append((m0, m1))
        else:
            r = OTExtReceiver(ch, tag=b"test", batch=batch)
            for op, arg in plan:
                if op == "random":
                    out.append(r.random_ot(arg))
                elif op in ("cot", "cot_derived", "chosen"):
                    n, size = arg
                    c = random_choices(n) if n else np.zeros(0, np.uint8)
                    got = r.chosen_ot(c, size) if op == "chosen" else r.cot_recv(c, size)
                    out.append((c, got))
                elif op == "choices":  # chosen OT with given choices (leakage tests)
                    c, b = arg
                    out.append((c, r.chosen_ot(c, b)))
    except CovaultError as e:
        return e
    return (out, sent) if record else out


def run_ot(plan, transport="local", batch=1 << 20, record=False, sender_plan=None):
    prog = functools.partial(ot_program, plan=plan, batch=batch, record=record)
    if sender_plan is not None:
        prog = functools.partial(two_plans, plans={"p0": sender_plan, "p1": plan}, batch=batch)
    return covault.run(prog, parties=2, protocol="2pc", transport=transport)


def two_plans(session, plans, batch):
    return ot_program(session, plans.get(session.party, []), batch=batch)


def check_results(plan, res):
    for (op, _), snd, rcv in zip(plan, res["p0"], res["p1"], strict=True):
        if op == "random":
            (m0, m1), (c, mc) = snd, rcv
            pick = c[:, None].astype(bool)
            assert m0.shape == m1.shape == mc.shape == (len(c), 16)
            assert np.array_equal(mc, np.where(pick, m1, m0))
            other = np.where(pick, m0, m1)
            assert not np.any(np.all(other == mc, axis=1))  # the other message is unrelated
            assert set(np.unique(c)) <= {0, 1}
        elif op in ("cot", "cot_derived"):
            (delta, x0), (c, y) = snd, rcv
            assert np.array_equal(y, x0 + c[:, None].astype(np.int64) * delta)
        elif op == "chosen":
            (m0, m1), (c, y) = snd, rcv
            assert np.array_equal(y, np.where(c[:, None].astype(bool), m1, m0))


# -- building blocks -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(128, 8), (128, 40), (64, 2048), (192, 8200)])
def test_transpose_matches_bit_by_bit(shape):
    cols = urandom_array(shape, np.uint8)
    bits = np.unpackbits(cols, axis=1, bitorder="little")
    want = np.packbits(bits.T, axis=1, bitorder="little")
    assert np.array_equal(transpose(cols), want)


def test_column_prg_streams_continue():
    seeds = urandom_array((4, 16), np.uint8)
    whole = ColumnPRG(seeds).expand(48)
    prg = ColumnPRG(seeds)
    assert np.array_equal(np.concatenate([prg.expand(16), prg.expand(32)], axis=1), whole)
    assert len({row.tobytes() for row in whole}) == 4
    # small requests (from keystream drawn ahead), large ones (drawn directly) and requests
    # across the edge of what was drawn ahead: the same bytes as one draw
    sizes = [0, 8, AHEAD - 8, 16, 3 * AHEAD + 5, 1, AHEAD, 7, 2 * AHEAD - 3]
    whole = ColumnPRG(seeds).expand(sum(sizes))
    prg = ColumnPRG(seeds)
    parts = [prg.expand(m) for m in sizes]
    assert np.array_equal(np.concatenate(parts, axis=1), whole)


def test_fixed_key_hash_tweaks():
    h = FixedKeyHash()
    rows = np.zeros((3, 16), np.uint8)
    out = h(rows, 0, 2)
    assert out.shape == (3, 32)
    blocks = out.reshape(6, 16)
    assert len({b.tobytes() for b in blocks}) == 6  # equal inputs, distinct tweaks
    assert np.array_equal(h(rows, 0, 2), out)
    assert np.array_equal(h(rows[1:], 1, 2), out[1:])
    rows, delta = urandom_array((5, 16), np.uint8), urandom_array(16, np.uint8)
    pair = h(rows, 7, 3, delta=delta, buffers=Buffers())
    assert np.array_equal(pair, np.stack([h(rows, 7, 3), h(rows ^ delta, 7, 3)]))
    with pytest.raises(ShapeError, match="fixed-key hash"):
        h(np.zeros((3, 8), np.uint8), 0, 1)


def base_program(session, choices):
    ch = session_channel(session) if session.party in ("p0", "p1") else None
    if session.party == "p0":
        return base_ot_send(ch, len(choices), b"t")
    if session.party == "p1":
        return base_ot_recv(ch, choices, b"t")
    return None


def test_base_ot():
    c = random_choices(64)
    res = covault.run(functools.partial(base_program, choices=c), parties=2, protocol="2pc")
    (k0, k1), kc = res["p0"], res["p1"]
    pick = c[:, None].astype(bool)
    assert np.array_equal(kc, np.where(pick, k1, k0))
    assert not np.any(np.all(np.where(pick, k0, k1) == kc, axis=1))
    assert len({k.tobytes() for k in np.concatenate([k0, k1])}) == 128


# -- extension, in process -------------------------------------------------------------------------
def test_random_correlated_chosen_in_process():
    plan = [
        ("random", 1000),
        ("random", 13),
        ("cot", (777, 1)),
        ("cot", (301, 3)),
        ("chosen", (259, 5)),
        ("chosen", (100, 33)),
        ("cot_derived", (513, 2)),
        ("random", 0),
    ]
    check_results(plan, run_ot(plan))


def test_batches_and_costs():
    plan = [("random", 1000), ("cot", (500, 2)), ("cot_derived", (300, 3))]
    res = run_ot(plan, batch=128)  # 8 and 4 batches
    check_results(plan, res)


def ready_side(session, batch):
    """p0's sender or p1's receiver with its base OTs run (None elsewhere)."""
    if session.party not in ("p0", "p1"):
        return None
    ch = session_channel(session)
    side = OTExtSender(ch, batch=batch) if session.party == "p0" else OTExtReceiver(ch, batch=batch)
    side.setup()
    return side


def counted_program(session, batch):
    side = ready_side(session, batch)
    if side is None:
        return None
    with session.net.scope() as cost:
        if session.party == "p0":
            side.random_ot(4096)
            side.cot_send(4096, np.ones((4096, 2), np.int64))
        else:
            side.random_ot(4096)
            side.cot_recv(np.ones(4096, np.uint8), 2)
    return cost.as_dict()


@pytest.mark.parametrize("batch", [128, 1 << 18])
def test_bytes_and_rounds_counted(batch):
    res = covault.run(functools.partial(counted_program, batch=batch), parties=2, protocol="2pc")
    header = 3 * 8 * -(-4096 // batch)  # one per batch
    assert res["p1"]["bytes_sent"] == 2 * (4096 * 16 + header)  # kappa bits per OT, twice
    assert res["p0"]["bytes_sent"] == 4096 * 2 * 8  # k words per correlated OT
    assert (
        res["p1"]["rounds"] == res["p0"]["rounds"] == 2
    )  # flights: u, u (all batches); then d (all batches)


# -- leakage ---------------------------------------------------------------------------------------
def test_receiver_messages_uniform_and_independent_of_choices():
    n = 1 << 14
    zeros, ones = np.zeros(n, np.uint8), np.ones(n, np.uint8)
    plan = [("choices", (zeros, 1)), ("choices", (ones, 1)), ("random", n)]
    out, sent = run_ot(plan, record=True)["p1"]
    us = [a for a in sent if a.dtype == np.uint8 and a.ndim == 2 and a.shape[0] == 128]
    assert len(us) == 3
    for u in us:
        bits = np.unpackbits(u, axis=1, bitorder="little")
        freq = bits.mean()
        assert abs(freq - 0.5) < 0.005, freq  # 2^21 bits: sd 0.00035
        assert np.abs(bits.mean(axis=1) - 0.5).max() < 0.05  # every column (sd 0.004)
    # the random-OT message is unrelated to the choices: agreement near one half in every column
    c = out[2][0]
    bits = np.unpackbits(us[2], axis=1, bitorder="little")[:, :n]
    agree = (bits == c[None, :]).mean(axis=1)
    assert np.abs(agree - 0.5).max() < 0.05


# -- errors ----------------------------------------------------------------------------------------
def test_wrong_sizes_raise_naming_the_operation():
    class Idle:
        peer = "p9"

        def send(self, message):
            raise AssertionError("nothing is sent for a bad call")

        recv = send

    s, r = OTExtSender(Idle()), OTExtReceiver(Idle())
    with pytest.raises(ShapeError, match=r"correlated OT.*int64 \(5, k\)"):
        s.cot_send(5, np.zeros((4, 2), np.int64))
    with pytest.raises(ShapeError, match="correlated OT"):
        s.cot_send(5, np.zeros((5, 2), np.float64))
    with pytest.raises(ShapeError, match="chosen-message OT"):
        s.chosen_ot(np.zeros((3, 4), np.uint8), np.zeros((3, 5), np.uint8))
    with pytest.raises(ShapeError, match="choices must be a 1-d array of 0/1"):
        r.cot_recv(np.array([0, 2, 1]), 1)
    with pytest.raises(ShapeError, match="n must be an int"):
        r.random_ot(-1)
    with pytest.raises(ShapeError, match="nbytes must be >= 1"):
        r.chosen_ot(np.zeros(3, np.uint8), 0)


def test_mismatched_calls_name_the_peer():
    res = run_ot([("cot", (100, 2))], sender_plan=[("random", 100)])
    err = res["p0"]
    assert isinstance(err, PeerError) and err.party == "p1"
    assert "correlated OT of 2 words" in str(err) and "random OT" in str(err)


def bad_reply_program(session):
    """p1: an honest receiver; p0: a sender whose correlated-OT reply has the wrong shape."""
    if session.party not in ("p0", "p1"):
        return None
    ch = session_channel(session)
    if session.party == "p0":
        s = OTExtSender(ch)
        s.setup()
        s._rows(3, 2, 100)  # the receiver's matrix, then a reply of 1 word instead of 2
        ch.send([np.zeros((100, 1), np.int64)])
        return None
    r = OTExtReceiver(ch)
    try:
        r.cot_recv(np.zeros(100, np.uint8), 2)
    except CovaultError as e:
        first = e
    try:
        r.random_ot(8)
    except CovaultError as e:
        return first, e
    return first, None


def test_malformed_reply_named_and_state_refused():
    first, then = covault.run(bad_reply_program, parties=2, protocol="2pc")["p1"]
    assert isinstance(first, PeerError) and first.party == "p0"
    assert "expected corrections [('int64', (100, 2))], got [('int64', (100, 1))]" in str(first)
    assert isinstance(then, ProtocolError) and "stopped half-way" in str(then)


def bad_derive_program(session):
    """p1 sends one batch's ``u`` of 100 correlated OTs of 2 words; p0's ``derive`` answers with
    the wrong shape, then p0 tries another call."""
    side = {"p0": OTExtSender, "p1": OTExtReceiver}.get(session.party)
    if side is None:
        return None
    ot = side(session_channel(session))
    if session.party == "p1":
        ot.setup()
        ot._send_u(3, 2, np.zeros(100, np.uint8), 0, 100, 1)
        return None
    errors = []
    for call in (lambda: ot.cot_send_derived(100, 2, lambda x0: x0[:, :1].copy()), lambda: ot.random_ot(8)):
        try:
            call()
        except CovaultError as e:
            errors.append(e)
    return errors


def test_derived_correlations_of_the_wrong_shape_raise_and_state_refused():
    first, then = covault.run(bad_derive_program, parties=2, protocol="2pc")["p0"]
    assert isinstance(first, ShapeError) and "derive must return int64 (100, 2)" in str(first)
    assert isinstance(then, ProtocolError) and "stopped half-way" in str(then)


def twist_point() -> np.ndarray:
    """A u-coordinate on the quadratic twist of Curve25519, not on the curve."""
    u = next(u for u in range(2, 100) if lift(u) is None)
    return np.frombuffer(u.to_bytes(32, "little"), np.uint8).copy()


def malformed_program(session, attack):
    """p0: an honest sender; p1: a receiver that sends ``attack``'s malformed message."""
    if session.party not in ("p0", "p1"):
        return None
    ch = session_channel(session)
    try:
        if session.party == "p0":
            return OTExtSender(ch).random_ot(64)
        if attack == "twist":
            ch.send([twist_point()])
        elif attack == "short":
            ch.send([np.zeros(31, np.uint8)])
        else:  # honest base OTs, then a matrix of the wrong shape
            base_ot_send(ch, 128)
            ch.send([np.array([1, 0, 64], np.int64), np.zeros((128, 9), np.uint8)])
        return None
    except CovaultError as e:
        return e


@pytest.mark.parametrize(
    ("attack", "match"),
    [
        ("twist", "point is not on Curve25519"),
        ("short", "expected one point"),
        ("matrix", "matrix u must be uint8 \\(128, 8\\)"),
    ],
)
def test_malformed_peer_named(attack, match):
    res = covault.run(functools.partial(malformed_program, attack=attack), parties=2, protocol="2pc")
    err = res["p0"]
    assert isinstance(err, PeerError), err
    assert err.party == "p1"
    assert re.search(match, str(err)), str(err)


# -- over TCP with TLS, two processes --------------------------------------------------------------
@pytest.mark.processes
def test_over_tcp_tls():
    plan = [("random", 5000), ("cot", (3000, 2)), ("chosen", (1000, 16))]
    check_results(plan, run_ot(plan, transport="tcp", batch=2048))


def shortened_program(session, n, k, widths, batch):
    """Correlated OTs with shortened corrections (``nbytes``): what each side got and sent."""
    side = ready_side(session, batch)
    if side is None:
        return None
    with session.net.scope() as cost:
        if session.party == "p0":
            delta = urandom_array((n, k), np.int64)
            got = (delta, side.cot_send(n, delta, widths))
        else:
            c = random_choices(n)
            got = (c, side.cot_recv(c, k, widths))
    return got, cost.as_dict()


GILBOA = np.repeat(
    np.select([np.arange(64) >= 56, np.arange(64) >= 48, np.arange(64) >= 32], [1, 2, 4], 8), 37
)


@pytest.mark.parametrize(
    "widths, batch",
    [
        (GILBOA, 1 << 18),  # Gilboa's runs, one batch
        (GILBOA, 256),  # runs across batches
        (np.array([1, 2, 4, 8])[np.arange(1000) % 4], 128),  # a new width at every OT
        (np.full(100, 8), 64),  # whole words
    ],
)
def test_shortened_corrections_agree_modulo_their_width_and_send_less(widths, batch):
    n, k = widths.size, 3
    res = covault.run(
        functools.partial(shortened_program, n=n, k=k, widths=widths, batch=batch), parties=2, protocol="2pc"
    )
    ((delta, x0), sent), ((c, y), _) = res["p0"], res["p1"]
    mask = np.array([(1 << (8 * int(w))) - 1 if w < 8 else -1 for w in widths], np.int64)[:, None]
    want = x0 + c[:, None].astype(np.int64) * delta
    np.testing.assert_array_equal(y & mask, want & mask)
    if (widths < 8).any():
        assert np.any(y[widths < 8] != want[widths < 8])  # the high bytes really were dropped
    assert sent["bytes_sent"] == k * int(widths.sum())  # instead of 8 k n


def test_shortened_corrections_widths_checked():
    def prog(session):
        if session.party == "p1":  # the receiver checks its widths too, before any message
            r = OTExtReceiver(session_channel(session))
            with pytest.raises(ShapeError, match="nbytes must be"):
                r.cot_recv(np.zeros(4, np.uint8), 1, np.full(4, 3))
            return True
        if session.party != "p0":
            return None
        s = OTExtSender(session_channel(session))
        for bad in (
            np.zeros(4, np.uint8),
            np.full(4, 3),
            np.full(4, 16),
            np.ones(3, np.uint8),
            np.full(4, 1.0),
        ):
            with pytest.raises(ShapeError, match="nbytes must be"):
                s.cot_send(4, np.zeros((4, 1), np.int64), bad)
        return True

    res = covault.run(prog, parties=2, protocol="2pc")
    assert res["p0"] and res["p1"]
