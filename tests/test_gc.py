"""Garbled circuits: every circuit against plaintext, garbled evaluation against the plaintext
circuit for many instances, the two-party protocol (input labels by OT, outputs to arithmetic
shares), what the evaluator sees, gc_compare on 2pc over the in-process transport and TCP/TLS,
and the errors of wrong widths and malformed peers."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import covault
from covault.errors import CovaultError, PeerError, ProtocolError, ShapeError
from covault.protocols.gc import builders as B
from covault.protocols.gc.circuit import Builder, from_bits, to_bits
from covault.protocols.gc.convert import compare_circuit, gc_apply, gc_compare, gc_party
from covault.protocols.gc.garble import evaluate, garble, permute_bits
from covault.protocols.gc.hash import GarbleHash
from covault.protocols.gc.yao import EVALUATOR, GARBLER, YaoParty, signed_weights
from covault.protocols.ot import session_channel

WIDTHS = [1, 2, 8, 32, 64]


def words(width: int, n: int, seed: int) -> np.ndarray:
    """Random signed ``width``-bit words and the edge values 0, -1, 1, min, max (int64)."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    edge = np.array(sorted({0, -1 if width > 1 else 0, min(1, hi), lo, hi}), dtype=np.int64)
    rnd = np.random.default_rng(seed).integers(lo, hi, size=n, endpoint=True, dtype=np.int64)
    return np.concatenate([edge, rnd])


def pairs(width: int, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of edge values and random pairs (with some equal ones)."""
    x, y = words(width, n, seed), words(width, n, seed + 1)
    e = x[:5]
    ex, ey = np.meshgrid(e, e)
    x, y = np.concatenate([ex.ravel(), x]), np.concatenate([ey.ravel(), y])
    y[-20:] = x[-20:]
    return x, y


def wrap(v: np.ndarray, width: int) -> np.ndarray:
    """``v`` reduced to a signed ``width``-bit word."""
    u = v.view(np.uint64) & np.uint64((1 << width) - 1 if width < 64 else 2**64 - 1)
    s = u.view(np.int64)
    return s - ((s >> (width - 1)) & 1) * (1 << width) if width < 64 else s


# (name, builder(b, x, y) -> outputs, plaintext(x, y) -> outputs (each (n,) int64 or bit), signed out)
CIRCUITS = {
    "add": (lambda b, x, y: B.add(b, x, y), lambda x, y, w: wrap(x + y, w)),
    "add_log": (lambda b, x, y: B.add_log(b, x, y), lambda x, y, w: wrap(x + y, w)),
    "sub": (lambda b, x, y: B.sub(b, x, y), lambda x, y, w: wrap(x - y, w)),
    "msb_of_sum": (lambda b, x, y: [B.msb_of_sum(b, x, y)], lambda x, y, w: (wrap(x + y, w) < 0) * 1),
    "greater": (lambda b, x, y: [B.greater(b, x, y)], lambda x, y, w: (x > y) * 1),
    "positive": (lambda b, x, y: [B.positive(b, x)], lambda x, y, w: (x > 0) * 1),
    "equal": (lambda b, x, y: [B.equal(b, x, y)], lambda x, y, w: (x == y) * 1),
    "relu": (lambda b, x, y: B.relu(b, x), lambda x, y, w: np.maximum(x, 0)),
    "max2": (lambda b, x, y: B.maximum(b, [x, y]), lambda x, y, w: np.maximum(x, y)),
}


def build(name: str, width: int):
    b = Builder()
    x, y = b.input(GARBLER, width), b.input(EVALUATOR, width)
    return b.build(CIRCUITS[name][0](b, x, y))


BIT_OUT = {"msb_of_sum", "greater", "positive", "equal"}


def decode(name: str, out: np.ndarray) -> np.ndarray:
    return out[0].astype(np.int64) if name in BIT_OUT else from_bits(out)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_circuit_matches_plaintext(name, width):
    x, y = pairs(width)
    c = build(name, width)
    got = decode(name, c.plain(to_bits(x, width), to_bits(y, width)))
    np.testing.assert_array_equal(got, CIRCUITS[name][1](x, y, width))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_max_and_argmax_of_k(k):
    width = 8
    vals = np.stack([words(width, 200, s) for s in range(k)])  # (k, n)
    vals[:, :3] = vals[0, :3]  # ties: the first index wins
    b = Builder()
    ins = [b.input(GARBLER if i % 2 == 0 else EVALUATOR, width) for i in range(k)]
    best, idx = B.argmax(b, ins)
    c = b.build([*best, *B.maximum(b, ins), *idx])
    g = np.concatenate([to_bits(vals[i], width) for i in range(0, k, 2)])
    e = (
        np.concatenate([to_bits(vals[i], width) for i in range(1, k, 2)])
        if k > 1
        else np.zeros((0, vals.shape[1]))
    )
    out = c.plain(g, e.astype(np.uint8))
    np.testing.assert_array_equal(from_bits(out[:width]), vals.max(axis=0))
    np.testing.assert_array_equal(from_bits(out[width : 2 * width]), vals.max(axis=0))
    np.testing.assert_array_equal(from_bits(out[2 * width :], signed=False), vals.argmax(axis=0))


def test_and_counts_are_as_documented():
    for w in (8, 32, 64):
        assert build("add", w).n_and == w - 1
        assert build("msb_of_sum", w).n_and == w - 1
        assert build("greater", w).n_and == w
        assert build("equal", w).n_and == w - 1
        assert build("relu", w).n_and == w - 1
        assert build("positive", w).n_and == w - 1
    # log depth: AND gates sit on far fewer levels than the ripple-carry adder's
    assert build("add_log", 64).and_levels < 16 < build("add", 64).and_levels


# -- garbling and evaluation, many instances (labels handed over locally: test only) ---------
def random_labels(shape) -> np.ndarray:
    return np.frombuffer(os.urandom(int(np.prod(shape)) * 8), dtype=np.uint64).reshape(shape).copy()


def garble_and_evaluate(circuit, g, e, offset=0):
    """Garble, hand the evaluator the labels of the actual bits directly (no OT: test only),
    evaluate; return (output bits decoded, output labels, output zero-labels, delta, tables)."""
    n = g.shape[1]
    delta = random_labels((2,))
    delta[0] |= np.uint64(1)
    h = GarbleHash(os.urandom(16))
    zero = random_labels((len(circuit.inputs), n, 2))
    tables, zero_out = garble(circuit, zero, delta, h, offset)
    bits = np.concatenate([g, e]).astype(np.uint64)
    active = zero ^ (bits[..., None] * delta)
    out = evaluate(circuit, active, tables, h, offset)
    return permute_bits(out) ^ permute_bits(zero_out), out, zero_out, delta, tables


@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_garbled_equals_plaintext(name):
    width = 32
    x, y = pairs(width, n=3000)
    c = build(name, width)
    g, e = to_bits(x, width), to_bits(y, width)
    got, out, zero_out, delta, _ = garble_and_evaluate(c, g, e, offset=7)
    want = c.plain(g, e)
    np.testing.assert_array_equal(got, want)
    # every output label is exactly W_0 or W_0 ^ delta, as the bit says
    np.testing.assert_array_equal(out, zero_out ^ (want.astype(np.uint64)[..., None] * delta))


def test_wide_levels_across_instance_blocks():
    """A level of 200 AND gates over instances that span several hashing blocks."""
    b = Builder()
    x, y = b.input(GARBLER, 200), b.input(EVALUATOR, 200)
    c = b.build([b.and_(x[i], y[i]) for i in range(200)] + [b.xor(x[0], y[0])])
    g = np.random.default_rng(3).integers(0, 2, (200, 1000), dtype=np.uint8)
    e = np.random.default_rng(4).integers(0, 2, (200, 1000), dtype=np.uint8)
    got, *_ = garble_and_evaluate(c, g, e)
    np.testing.assert_array_equal(got, c.plain(g, e))


def test_tables_are_32_bytes_per_and_and_look_uniform():
    c = build("msb_of_sum", 32)
    x, y = pairs(32, n=4000)
    *_, tables = garble_and_evaluate(c, to_bits(x, 32), to_bits(y, 32))
    assert tables.nbytes == 32 * c.n_and * len(x)
    bits = np.unpackbits(tables.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.002
    counts = np.bincount(tables.view(np.uint8).ravel(), minlength=256)
    expect = tables.nbytes / 256
    assert ((counts - expect) ** 2 / expect).sum() < 400  # chi-square, 255 dof (p ~ 1e-7)


def test_hash_tweaks_and_doubling():
    h = GarbleHash(os.urandom(16))
    x = random_labels((5, 2))
    lanes = np.arange(5, dtype=np.uint64)
    a = h(x, lanes, np.uint64(0))
    assert not np.array_equal(a, h(x, lanes + np.uint64(1), np.uint64(0)))
    assert not np.array_equal(a, h(x, lanes, np.uint64(1)))
    assert np.array_equal(a, h(x.copy(), lanes, np.uint64(0)))
    with pytest.raises(ShapeError, match="16 bytes"):
        GarbleHash(b"short")


# -- the two-party protocol ------------------------------------------------------------------
def yao_program(session, width=16, n=2500, chunk=1000, values=None):
    """P0 garbles msb_of_sum, add and equal of its words and P1's; returns the output shares."""
    party = gc_party(session, chunk=chunk)
    if party is None:
        return None
    rng_seed = 0 if party.role == GARBLER else 1
    mine = words(width, n, rng_seed)[:n] if values is None else values[party.role]
    b = Builder()
    u, v = b.input(GARBLER, width), b.input(EVALUATOR, width)
    circuit = b.build([B.msb_of_sum(b, u, v), *B.add(b, u, v), B.equal(b, u, v)])
    out = party.run(circuit, to_bits(mine, width))
    arith = party.to_arith(out[1 : 1 + width], signed_weights(width))  # XOR shares, then B2A by OT
    weights = np.concatenate([[5], signed_weights(width), [-3]])  # output translation
    direct = party.run(circuit, to_bits(mine, width), weights)
    return mine, out, arith, direct


def test_yao_run_and_arithmetic_outputs_in_chunks():
    res = covault.run(functools.partial(yao_program, width=16), parties=2, protocol="2pc")
    (x, s0, a0, d0), (y, s1, a1, d1) = res["p0"], res["p1"]
    bits = s0 ^ s1
    w = 16
    np.testing.assert_array_equal(bits[0], (wrap(x + y, w) < 0) * 1)
    np.testing.assert_array_equal(from_bits(bits[1 : 1 + w]), wrap(x + y, w))
    np.testing.assert_array_equal(bits[-1], (x == y) * 1)
    np.testing.assert_array_equal(a0 + a1, wrap(x + y, w))  # Y2A: additive shares of the word
    np.testing.assert_array_equal(d0 + d1, 5 * bits[0] + wrap(x + y, w) - 3 * bits[-1])
    assert res.get("dealer") is None  # the 2pc dealer, where there is one, takes no part


def evaluator_view(session, garbler_bit, n=4000):
    """P0 inputs all-``garbler_bit`` words; P1 records what it receives during run()."""
    party = gc_party(session)
    if party is None:
        return None
    got = []
    if party.role == EVALUATOR:
        party.ot.setup()  # base OTs outside the record
        session.net.add_recorder(
            lambda d, peer, msg: got.extend(a.copy() for a in msg) if d == "received" else None
        )
    c = compare_circuit(8)
    bits = (
        np.full((8, n), garbler_bit, dtype=np.uint8) if party.role == GARBLER else np.zeros((8, n), np.uint8)
    )
    if party.role == GARBLER:
        party.ot.setup()
    out = party.run(c, bits)
    return out, got


@pytest.mark.parametrize("garbler_bit", [0, 1])
def test_evaluator_view_is_uniform_labels_and_permute_bits(garbler_bit):
    res = covault.run(functools.partial(evaluator_view, garbler_bit=garbler_bit), parties=2, protocol="2pc")
    out0, _ = res["p0"]
    out1, got = res["p1"]
    head, key, labels, d, tables, trans = got
    assert [a.dtype for a in got] == [np.int64, np.uint8, np.uint64, np.uint64, np.uint64, np.int64]
    assert trans.size == 0  # XOR-shared outputs: no translation
    # the garbler's labels: their permute bits are fair coins whatever its input bits
    assert abs(permute_bits(labels).mean() - 0.5) < 0.02
    assert abs(np.unpackbits(labels.view(np.uint8)).mean() - 0.5) < 0.005
    # the evaluator's output share is a permute bit: a fair coin, though the output is fixed
    # (all-0 garbler words and all-0 evaluator words: the msb is garbler_bit)
    assert np.all((out0 ^ out1) == garbler_bit)
    assert abs(out1.mean() - 0.5) < 0.02
    # nothing else travels: no decoding bits, only labels, corrections and tables
    assert sum(a.size for a in (labels, d, tables)) * 8 == (8 * 16 + 8 * 16 + 7 * 32) * 4000


# -- gc_compare and gc_apply on secret tensors ------------------------------------------------
EDGE = np.array([0.0, 2**-16, -(2**-16), 1.0, -1.0, 32767.99, -32767.99, 0.5, -0.5])


def compare_program(session, bound=None, chunk=1 << 17):
    vals = np.concatenate([EDGE, np.random.default_rng(5).uniform(-3000, 3000, 997)])
    if bound is not None:
        vals = np.clip(vals, -bound + 1, bound - 1)
    x = session.input(
        vals if session.party == session.compute_parties[0] else None, session.compute_parties[0], bound=bound
    )
    link = gc_party(session, chunk=chunk)
    y = gc_compare(x, link=link)
    assert y.frac == 0 and y.bound == 1.0
    r = gc_apply(x, B.relu, link=link)
    same = gc_apply(x, lambda b, w: list(w), link=link)
    return vals, y.reveal(), r.reveal(), same.reveal()


def check_compare(res):
    vals, y, r, same = res["p0"]
    want = np.round(vals * 2**16) / 2**16
    np.testing.assert_array_equal(y, (want > 0) * 1.0)
    np.testing.assert_array_equal(r, np.maximum(want, 0))
    np.testing.assert_array_equal(same, want)  # A2Y then Y2A: the value back


@pytest.mark.parametrize("bound", [None, 4000.0])  # 64-bit and 32-bit words
def test_gc_compare_2pc_local(bound):
    check_compare(
        covault.run(functools.partial(compare_program, bound=bound, chunk=300), parties=2, protocol="2pc")
    )


def test_gc_compare_dealer_free_2pc():
    """With provider "ot" there is no dealer: gc_compare runs on the two parties alone."""
    res = covault.run(
        functools.partial(compare_program, bound=4000.0), parties=2, protocol="2pc", provider="ot"
    )
    assert set(res) == {"p0", "p1"}
    check_compare(res)


@pytest.mark.processes
def test_gc_compare_2pc_tcp_tls():
    check_compare(
        covault.run(
            functools.partial(compare_program, bound=4000.0), parties=2, protocol="2pc", transport="tcp"
        )
    )


def test_word_width_follows_the_bound():
    def prog(session):
        x = session.input(np.zeros(3) if session.party == "p0" else None, "p0", bound=100.0)
        z = session.input(np.zeros(3) if session.party == "p0" else None, "p0")
        with session.scope() as narrow:
            gc_compare(x)
        with session.scope() as wide:
            gc_compare(z)
        return narrow.bytes_sent, wide.bytes_sent

    narrow, wide = covault.run(prog, parties=2, protocol="2pc")["p0"]
    assert narrow < wide


# -- errors ----------------------------------------------------------------------------------
def test_builder_and_input_errors():
    b = Builder()
    x, y = b.input(GARBLER, 4), b.input(EVALUATOR, 5)
    with pytest.raises(ShapeError, match="one width"):
        B.add(b, x, y)
    with pytest.raises(ShapeError, match="no wire 99"):
        b.xor(x[0], 99)
    b.xor(x[0], y[0])
    with pytest.raises(ShapeError, match="before the first gate"):
        b.input(GARBLER, 1)
    with pytest.raises(ShapeError, match="'garbler' or 'evaluator'"):
        Builder().input("dealer", 3)
    c = build("add", 8)
    with pytest.raises(ShapeError, match=r"garbler's inputs must be an array \(8, n\)"):
        c.plain(np.zeros((7, 3), np.uint8), np.zeros((8, 3), np.uint8))
    with pytest.raises(ShapeError, match="tables must be uint64"):
        evaluate(c, random_labels((16, 3, 2)), random_labels((7, 3, 4)), GarbleHash(os.urandom(16)))
    with pytest.raises(ShapeError, match="delta"):
        garble(c, random_labels((16, 3, 2)), np.zeros(2, np.uint64), GarbleHash(os.urandom(16)))


def bad_garbler(session, flaw):
    """P0 takes the garbler's part but sends a malformed garbling; P1 evaluates."""
    if session.party not in session.compute_parties:
        return None
    c = compare_circuit(8)
    n = 50
    if session.party == "p1":
        try:
            YaoParty(session_channel(session), EVALUATOR).run(c, np.zeros((8, n), np.uint8))
        except CovaultError as e:
            return e
        return None
    ch = session_channel(session)
    g = YaoParty(ch, GARBLER)
    g.ot.random_ot(8 * n)
    ch.recv()
    head = np.array([n, c.n_and, 8, 8, 0, 0], dtype=np.int64)
    key = np.frombuffer(os.urandom(16), np.uint8)
    msg = [head, key, random_labels((8, n, 2)), random_labels((8, n, 2)), random_labels((c.n_and, 2, n, 2))]
    msg.append(np.empty((0, n, 2), np.int64))
    if flaw == "tables":
        msg[4] = msg[4][:-1]
    elif flaw == "header":
        msg[0] = head + np.array([0, 1, 0, 0, 0, 0])
    elif flaw == "count":
        msg = msg[:3]
    ch.send(msg)
    return None


@pytest.mark.parametrize(
    ("flaw", "match"), [("tables", "malformed tables"), ("header", "AND gates"), ("count", "got 3 arrays")]
)
def test_malformed_garbling_names_the_garbler(flaw, match):
    err = covault.run(functools.partial(bad_garbler, flaw=flaw), parties=2, protocol="2pc")["p1"]
    assert isinstance(err, PeerError), err
    assert err.party == "p0"
    assert "garbled circuit (evaluator side)" in str(err)
    assert match in str(err)


def bad_evaluator(session):
    """P1 takes the evaluator's part but sends too few choice corrections; P0 garbles."""
    if session.party not in session.compute_parties:
        return None
    c = compare_circuit(8)
    if session.party == "p0":
        try:
            YaoParty(session_channel(session), GARBLER).run(c, np.zeros((8, 64), np.uint8))
        except CovaultError as e:
            return e
        return None
    ch = session_channel(session)
    e = YaoParty(ch, EVALUATOR)
    e.ot.random_ot(8 * 64)
    ch.send([np.zeros(3, np.uint8)])  # 64 bytes expected
    return None


def test_malformed_choices_name_the_evaluator():
    err = covault.run(bad_evaluator, parties=2, protocol="2pc")["p0"]
    assert isinstance(err, PeerError), err
    assert err.party == "p1"
    assert "garbled circuit (garbler side): expected the packed choice corrections of 512 OTs" in str(err)


def test_gc_needs_2pc_and_0_1_inputs():
    def prog(session):
        x = session.input(np.zeros(2) if session.party == "p0" else None, "p0")
        with pytest.raises(ProtocolError, match="'2pc', not 'rep3'"):
            gc_compare(x)
        return True

    assert covault.run(prog, parties=3, protocol="rep3")["p0"]
    with pytest.raises(ShapeError, match="role"):
        YaoParty(None, "dealer")  # type: ignore[arg-type]

    def bits(session):
        party = gc_party(session)
        if party is None:
            return None
        with pytest.raises(ShapeError, match=r"0/1 integer array \(8, n\)"):
            party.run(compare_circuit(8), np.full((8, 2), 2))
        with pytest.raises(ShapeError, match="1 output weights"):
            party.run(compare_circuit(8), np.zeros((8, 2), np.uint8), np.ones(2, np.int64))
        return True

    assert covault.run(bits, parties=2, protocol="2pc")["p0"]


def test_evaluator_arithmetic_share_is_uniform():
    """Output translation leaves the evaluator ``b + r``: uniform words though every ``b`` is 0."""

    def prog(session):
        x = session.input(np.zeros(4000) if session.party == "p0" else None, "p0", bound=10.0)
        y = gc_compare(x)
        return y.shares, y.reveal()

    res = covault.run(prog, parties=2, protocol="2pc")
    shares, opened = res["p1"]
    assert np.all(opened == 0)
    assert abs(np.unpackbits(shares.view(np.uint8)).mean() - 0.5) < 0.005
    assert len(np.unique(shares)) == shares.size


def test_gc_compare_empty_and_scalar():
    def prog(session):
        a = session.input(np.zeros((0, 3)) if session.party == "p0" else None, "p0")
        b = session.input(np.array(-3.5) if session.party == "p0" else None, "p0")
        return gc_compare(a).reveal(), gc_compare(b).reveal()

    empty, scalar = covault.run(prog, parties=2, protocol="2pc")["p0"]
    assert empty.shape == (0, 3)
    assert np.shape(scalar) == () and scalar == 0
