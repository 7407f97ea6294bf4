"""Bit injection (``Protocol.b2a_mul``): arithmetic shares of boolean-shared bits and of their
products with arithmetic values in one round; rep3's daBits made along earlier rounds
(``Protocol.prepare_b2a``); the fused product-plus-addend truncation (``mul_add_trunc``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import covault
from covault.errors import ShapeError
from covault.ops import compare
from tests.helpers import dealt, owner_value, run_both, skip_unless_dealt

RNG = np.random.default_rng(11)  # test data
N = 200
BITS = RNG.integers(0, 2, N)
VALS = RNG.integers(-(2**62), 2**62, N)  # ring elements far beyond the fixed-point range
EXTRA = RNG.integers(0, 2, 13)
EL = 8


def _bool_bits(s, bits):
    """Boolean shares whose bit 0 holds ``bits`` (int64 words from A2B of the 0/1 values)."""
    t = s.input(owner_value(s, np.asarray(bits)), owner=s.compute_parties[0], integer=True)
    return t.to_boolean().shares


def _ints(s, values, owner=1):
    return s.input(
        owner_value(s, np.asarray(values), s.compute_parties[owner]),
        s.compute_parties[owner],
        integer=True,
        bound=2**63,  # raw ring elements
    )


def _open(s, shares):
    return s.protocol.reveal(shares, s.compute_parties)


def prog_inject(s):
    proto = s.protocol
    b = _bool_bits(s, BITS)
    x = _ints(s, VALS)
    e = _bool_bits(s, EXTRA)
    out = []
    for announce in (False, True):
        if announce:
            proto.prepare_b2a(N + EXTRA.size)
        bits, prods, ebits = proto.b2a_mul(b, x.shares, extra=e)
        out += [_open(s, bits), _open(s, prods), _open(s, ebits)]
    # broadcasting: bits (2, N) against values (N,), bits (N,) against values (3, N), 0-d
    b2 = _bool_bits(s, np.stack([BITS, 1 - BITS]))
    proto.prepare_b2a(2 * N)
    bits2, prods2 = proto.b2a_mul(b2, x.shares)
    x3 = _ints(s, np.stack([VALS, -VALS, VALS // 3]))
    bits3, prods3 = proto.b2a_mul(b, x3.shares)
    b0 = _bool_bits(s, np.int64(1))
    x0 = _ints(s, np.int64(-7))
    bits0, prods0 = proto.b2a_mul(b0, x0.shares)
    out += [_open(s, v) for v in (bits2, prods2, bits3, prods3, bits0, prods0)]
    return out


def test_b2a_mul_matches_plaintext(proto):
    got = run_both(prog_inject, proto)
    for k in (0, 3):  # without and with announced daBits (rep3: b2a_bit + mul, or the pool)
        bits, prods, ebits = got[k : k + 3]
        np.testing.assert_array_equal(bits, BITS)
        np.testing.assert_array_equal(prods, BITS * VALS)
        np.testing.assert_array_equal(ebits, EXTRA)
    bits2, prods2, bits3, prods3, bits0, prods0 = got[6:]
    two = np.stack([BITS, 1 - BITS])
    np.testing.assert_array_equal(bits2, two)
    np.testing.assert_array_equal(prods2, two * VALS)
    np.testing.assert_array_equal(bits3, BITS)
    np.testing.assert_array_equal(prods3, BITS * np.stack([VALS, -VALS, VALS // 3]))
    assert bits0.shape == () and int(bits0) == 1 and int(prods0) == -7


def prog_shape_error(s):
    b = _bool_bits(s, BITS[:4])
    x = _ints(s, VALS[:5])
    s.protocol.b2a_mul(b, x.shares)


def test_b2a_mul_shape_mismatch_is_a_shape_error(proto):
    with pytest.raises(ShapeError, match=r"\(4,\).*\(5,\)"):
        run_both(prog_shape_error, proto)


# -- costs ----------------------------------------------------------------------------------------
NB, NX = 100, 100


def prog_costs(s):
    proto = s.protocol
    b = _bool_bits(s, BITS[:NB])
    x = _ints(s, VALS[:NX])
    e = _bool_bits(s, EXTRA[:10])
    y = _ints(s, VALS[:NX], owner=0)
    costs = {}
    with s.scope() as c:
        proto.b2a_mul(b, x.shares)
    costs["cold"] = c.as_dict()
    with s.scope() as c:
        proto.prepare_b2a(NB + 10)
        proto.mul(x.shares, y.shares)
        proto.mul(x.shares, y.shares)  # two resharing rounds carry the daBits
    costs["carry"] = c.as_dict()
    with s.scope() as c:
        bits, prods, _ = proto.b2a_mul(b, x.shares, extra=e)
    costs["warm"] = c.as_dict()
    with s.scope() as c:
        proto.prepare_b2a(NB)
        proto.b2a_mul(b, x.shares)  # announced too late: the daBits are finished first
    costs["forced"] = c.as_dict()
    with s.scope() as c:
        proto.prepare_b2a(NB)
        proto.mul(x.shares, y.shares)
        bits = proto.b2a(b)
    costs["b2a"] = c.as_dict()
    return costs, _open(s, bits)


def test_b2a_mul_costs_exactly_what_the_docstrings_say(proto):
    skip_unless_dealt(proto)
    name, k = proto
    res = covault.run(prog_costs, k, name)
    packed = math.ceil(NB / 8)
    for p, (costs, bits) in res.items():
        cold, carry, warm, forced, b2a = (costs[key] for key in ("cold", "carry", "warm", "forced", "b2a"))
        if p == "dealer":  # P1's corrections of [r] and [r a] (plus one per extra daBit), offline
            assert cold["bytes_sent"] == EL * (NB + NX) and cold["rounds"] == 0
            assert warm["bytes_sent"] == EL * (NB + NX + 10) and warm["rounds"] == 0
            continue
        np.testing.assert_array_equal(bits, BITS[:NB])
        if name == "2pc":  # 1 bit per bit (packed) and e = x - a; nothing to announce
            for c in (cold, forced):
                assert c["rounds"] == 1 and c["bytes_sent"] == packed + EL * NX
            assert warm["rounds"] == 1 and warm["bytes_sent"] == math.ceil((NB + 10) / 8) + EL * NX
            assert carry["rounds"] == 2 and carry["bytes_sent"] == 2 * 2 * EL * NX
            assert b2a["rounds"] == 2 and b2a["bytes_sent"] == 2 * EL * NX + packed
        else:
            i = int(p[1])
            # not announced: b2a_bit (2 products) then a product
            assert cold["rounds"] == 3 and cold["bytes_sent"] == 2 * EL * NB + EL * NX
            # n daBits: one reshared element each, and w for the party's third, carried by the
            # products' rounds
            assert carry["rounds"] == 2
            assert carry["bytes_sent"] == 2 * EL * NX + dabit_bytes(NB + 10, i)
            assert warm["rounds"] == 1 and warm["bytes_sent"] == math.ceil((NB + 10) / 8) + EL * NX
            # the two daBit steps take two rounds of their own, then the injection
            assert forced["rounds"] == 3
            assert forced["bytes_sent"] == dabit_bytes(NB, i) + packed + EL * NX
            assert b2a["rounds"] == 3 and b2a["bytes_sent"] == EL * NX + dabit_bytes(NB, i) + packed


def dabit_bytes(n, i):
    """rep3 daBit traffic of party P_i: 8 bytes per daBit, plus 8 for each of its third."""
    return EL * (n + n // 3 + (i < n % 3))


def prog_pool(s):
    proto = s.protocol
    b = _bool_bits(s, BITS[:30])
    x = _ints(s, VALS[:30])
    proto.prepare_b2a(30)
    proto.prepare_b2a(12)
    for _ in range(2):
        proto.mul(x.shares, x.shares)
    with s.scope() as c:
        first = proto.b2a(b[:, :20])  # the first batch, in part
        second = proto.b2a(b[:, 20:])  # the rest of it and two of the next
        third, prods = proto.b2a_mul(b[:, :10], x.shares[:, :10])  # the last ten
        fourth = proto.b2a(b[:, :3])  # only two left: b2a_bit, the pool keeps them
    left = (proto._ready, proto._pending, len(proto._riders))
    return c.rounds, left, [_open(s, v) for v in (first, second, third, prods, fourth)]


def test_rep3_dabit_pool_is_first_in_first_out():
    res = covault.run(prog_pool, 3, "rep3")
    for p in res:
        rounds, left, (first, second, third, prods, fourth) = res[p]
        assert rounds == 1 + 1 + 1 + 2 and left == (2, 0, 0)
        np.testing.assert_array_equal(np.concatenate([first, second]), BITS[:30])
        np.testing.assert_array_equal(third, BITS[:10])
        np.testing.assert_array_equal(prods, BITS[:10] * VALS[:10])
        np.testing.assert_array_equal(fourth, BITS[:3])


# -- comparisons and clamps on top ------------------------------------------------------------------
X = np.round(RNG.normal(size=(3, 7)) * 4, 3)


def prog_msb_mul(s):
    x = s.input(owner_value(s, X), owner=s.compute_parties[0])
    v = s.input(owner_value(s, X[::-1].copy(), s.compute_parties[1]), owner=s.compute_parties[1])
    with s.scope() as c:
        bit, prod = compare.msb_mul(x, v)
    _, prod_row = compare.msb_mul(x[0], v)  # the bit broadcasts over the values
    return bit.reveal(), prod.reveal(), prod_row.reveal(), c.rounds


def test_msb_mul_is_one_round_after_the_msb(proto):
    bit, prod, prod_row, rounds = run_both(prog_msb_mul, proto)
    neg = (X < 0).astype(np.int64)
    np.testing.assert_array_equal(bit, neg)
    np.testing.assert_allclose(prod, neg * X[::-1], atol=2.0**-16)
    np.testing.assert_allclose(prod_row, neg[0] * X[::-1], atol=2.0**-16)
    assert rounds == {"2pc": 4, "rep3": 9}[proto[0]] or not dealt(proto)


def prog_mul_add_trunc(s):
    x = s.input(owner_value(s, X), owner=s.compute_parties[0])
    y = s.input(owner_value(s, X.T[::-1].T.copy(), s.compute_parties[1]), owner=s.compute_parties[1])
    a = s.input(owner_value(s, X / 3), owner=s.compute_parties[0])
    add = a.shares << np.int64(16)
    with s.scope() as c:
        z = s.protocol.mul_add_trunc(x.shares, y.shares, add, 16)
    return x._new(z).reveal(), c.as_dict()


def test_mul_add_trunc(proto):
    name, k = proto
    res = covault.run(prog_mul_add_trunc, k, name)
    want = X * X.T[::-1].T + X / 3
    for p, (z, cost) in res.items():
        if p == "dealer":
            continue
        np.testing.assert_allclose(z, want, atol=3 * 2.0**-16)
        if not dealt(proto):
            continue
        if name == "2pc":  # a product, then a truncation
            assert cost["rounds"] == 2 and cost["bytes_sent"] == 3 * EL * X.size
        else:  # fused as mul_trunc: P0 deals (4 elements, 1 round), P1 and P2 open (2, 2 rounds)
            dealer = p == "p0"
            assert cost["rounds"] == (1 if dealer else 2)
            assert cost["bytes_sent"] == (4 if dealer else 2) * EL * X.size


# -- tcp -----------------------------------------------------------------------------------------
TCP_BITS = np.array([1, 0, 1, 1, 0])
TCP_VALS = np.array([5, -3, 2**40, -(2**50), 7])


def prog_tcp(s):
    proto = s.protocol
    b = _bool_bits(s, TCP_BITS)
    x = _ints(s, TCP_VALS)
    proto.prepare_b2a(TCP_BITS.size)
    proto.mul(x.shares, x.shares)
    proto.mul(x.shares, x.shares)
    bits, prods = proto.b2a_mul(b, x.shares)
    return _open(s, bits), _open(s, prods)


@pytest.mark.processes
def test_b2a_mul_over_tcp(proto):
    name, k = proto
    res = covault.run(prog_tcp, k, name, transport="tcp", timeout=60)
    for p, got in res.items():
        if p == "dealer":
            continue
        bits, prods = got
        np.testing.assert_array_equal(bits, TCP_BITS)
        np.testing.assert_array_equal(prods, TCP_BITS * TCP_VALS)


def prog_empty(s):
    x = s.input(owner_value(s, np.zeros((0, 3))), owner=s.compute_parties[0])
    return (x < 0).reveal().shape, x.relu().reveal().shape, (x == 1).reveal().shape


def test_rep3_empty_tensors():
    """No elements: no daBits, the conversions still take their round (shapes kept)."""
    assert run_both(prog_empty, ("rep3", 3)) == ((0, 3), (0, 3), (0, 3))
