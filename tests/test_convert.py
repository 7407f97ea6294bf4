"""A2B/B2A conversions and boolean tensors against plaintext numpy, both protocols."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import covault
from covault.booltensor import BooleanTensor
from covault.errors import CovaultError, ShapeError
from covault.ops import convert
from covault.tensor import SecretTensor
from tests.helpers import owner_value, run_both, skip_unless_dealt

RNG = np.random.default_rng(777)  # test data only; never secrets
W1 = RNG.integers(-(2**63), 2**63 - 1, size=(3, 5), dtype=np.int64, endpoint=True)
W1[0, :5] = [0, -1, 2**63 - 1, -(2**63), 1]
W2 = RNG.integers(-(2**63), 2**63 - 1, size=(5,), dtype=np.int64, endpoint=True)
U = np.uint64


def _words(s):
    p, q = s.compute_parties[0], s.compute_parties[-1]
    x = s.input(owner_value(s, W1, p), owner=p, integer=True, bound=2**63)
    y = s.input(owner_value(s, W2, q), owner=q, integer=True, bound=2**63)
    return x, y


def _ring(t):
    """``t`` for deliberate arithmetic modulo 2^64: its bound dropped, so a sum may wrap."""
    return SecretTensor(t.session, t.shares, t.frac, 0.0)


def prog_a2b_b2a(s):
    x, y = _words(s)
    bx = x.to_boolean()
    f = s.input(owner_value(s, np.array([-1.5, 0.0, 2.25]), s.compute_parties[0]), owner=s.compute_parties[0])
    bf = convert.a2b(f)
    back = bf.to_arithmetic()
    return (
        bx.reveal(),
        convert.b2a(bx).reveal(),
        convert.a2b(_ring(x) + _ring(y)).reveal(),
        bf.reveal(),
        (bf.frac, back.frac),
        back.reveal(),
        isinstance(bx, BooleanTensor),
    )


def test_a2b_and_b2a_round_trip(proto):
    bx, ax, bsum, bf, fracs, back, is_bool = run_both(prog_a2b_b2a, proto)
    assert is_bool
    np.testing.assert_array_equal(bx, W1)
    np.testing.assert_array_equal(ax, W1)
    np.testing.assert_array_equal(bsum, W1 + W2)  # wraps mod 2^64 like int64
    np.testing.assert_array_equal(bf, np.array([-1.5, 0.0, 2.25]) * 2**16)
    assert fracs == (16, 16)
    np.testing.assert_array_equal(back, [-1.5, 0.0, 2.25])


def prog_bitwise(s):
    x, y = _words(s)
    bx, by = x.to_boolean(), y.to_boolean()
    return (
        (bx ^ by).reveal(),
        (bx & by).reveal(),
        (bx | by).reveal(),
        (~bx).reveal(),
        (bx << 7).reveal(),
        (bx >> 9).reveal(),
        bx.lshr(9).reveal(),
        (bx & 0xFF).reveal(),
        (0xFFFF_FFFF_FFFF_0000 & bx).reveal(),  # full unsigned 64-bit constant
        (bx | np.arange(5)).reveal(),
        (np.int64(12345) ^ bx).reveal(),
        (bx ^ np.array([[1], [2], [3]], dtype=np.uint64)).reveal(),
        bx[1:, ::2].reveal(),
        bx.reshape(5, 3).reveal(),
        (bx & True).reveal(),
    )


def test_bitwise_operations(proto):
    got = iter(run_both(prog_bitwise, proto))
    x, y = W1, W2
    want = [
        x ^ y,
        x & y,
        x | y,
        ~x,
        x << 7,
        x >> 9,
        (x.view(U) >> U(9)).view(np.int64),
        x & 0xFF,
        (x.view(U) & U(0xFFFF_FFFF_FFFF_0000)).view(np.int64),
        x | np.arange(5),
        x ^ 12345,
        x ^ np.array([[1], [2], [3]]),
        x[1:, ::2],
        x.reshape(5, 3),
        x & 1,
    ]
    for w in want:
        np.testing.assert_array_equal(next(got), w)


def prog_bits(s):
    x, _ = _words(s)
    b = x.to_boolean()
    low = b.bit_to_arith()
    top = convert.bit_to_arith(b.lshr(63))
    return low.frac, low.reveal(), top.reveal(), (low * x).reveal()


def test_bit_to_arith(proto):
    frac, low, top, prod = run_both(prog_bits, proto)
    assert frac == 0
    np.testing.assert_array_equal(low, W1 & 1)
    np.testing.assert_array_equal(top, (W1 < 0).astype(np.int64))
    np.testing.assert_array_equal(prod, (W1 & 1) * W1)


def prog_reveal_to_one(s):
    x, _ = _words(s)
    return x.to_boolean().reveal(to=s.compute_parties[-1])


def test_reveal_to_one_party(proto):
    name, k = proto
    res = covault.run(prog_reveal_to_one, k, name)
    last = f"p{k - 1}"
    np.testing.assert_array_equal(res[last], W1)
    assert all(res[p] is None for p in res if p != last)


def test_bad_operands():
    def prog(s):
        x, y = _words(s)
        bx, by = x.to_boolean(), y.to_boolean()
        errors = []
        for f, exc in (
            (lambda: bx & by.reshape(5, 1)[:2], ShapeError),
            (lambda: bx ^ np.ones((2, 2), np.int64), ShapeError),
            (lambda: bx << 64, ValueError),
            (lambda: bx >> -1, ValueError),
            (lambda: bx & 1.5, TypeError),
            (lambda: bx | 2**64, ValueError),
            (lambda: convert.b2a(x), CovaultError),
            (lambda: bx.reshape(4, 4), ShapeError),
        ):
            try:
                f()
            except exc as e:
                errors.append(type(e).__name__)
        return errors

    assert len(covault.run(prog, 3, "rep3")["p0"]) == 8


# -- cost -------------------------------------------------------------------------------------------------
def test_a2b_cost(proto):
    skip_unless_dealt(proto)
    name, k = proto
    n = 40

    def prog(s):
        x = s.input(
            owner_value(s, np.arange(n), s.compute_parties[0]), owner=s.compute_parties[0], integer=True
        )
        with s.scope() as c:
            b = x.to_boolean()
        with s.scope() as d:
            b.to_arithmetic()
        return c.as_dict(), d.as_dict()

    res = covault.run(prog, k, name)
    for p, (c, d) in res.items():
        if p == "dealer":
            assert c["bytes_sent"] == 96 * n and d["bytes_sent"] == 512 * n
        elif name == "2pc":
            assert c["bytes_sent"] == 192 * n and c["rounds"] == 7
            assert d["bytes_sent"] == 8 * n and d["rounds"] == 1
        else:
            assert c["bytes_sent"] == 104 * n and c["rounds"] == 8
            assert d["bytes_sent"] == 1024 * n and d["rounds"] == 2


# -- properties --------------------------------------------------------------------------------------------
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), bits=st.sampled_from([3, 40, 63, 64]))
def test_property_round_trip(proto, shape, seed, bits):
    rng = np.random.default_rng(seed)
    a = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, size=shape, dtype=np.int64, endpoint=True)
    b = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, size=shape, dtype=np.int64, endpoint=True)
    shift = int(rng.integers(0, 64))

    def prog(s):
        p, q = s.compute_parties[0], s.compute_parties[-1]
        x = s.input(owner_value(s, a, p), owner=p, integer=True, bound=2**63)
        y = s.input(owner_value(s, b, q), owner=q, integer=True, bound=2**63)
        bx, by = x.to_boolean(), y.to_boolean()
        return (bx & by).reveal(), (bx ^ by).to_arithmetic().reveal(), (bx >> shift).reveal()

    band, xor_arith, shr = run_both(prog, proto)
    np.testing.assert_array_equal(band, a & b)
    np.testing.assert_array_equal(xor_arith, a ^ b)
    np.testing.assert_array_equal(shr, a >> shift)


# -- tcp -----------------------------------------------------------------------------------------------------
def prog_tcp(s):
    x, y = _words(s)
    return (x.to_boolean() & y.to_boolean()).to_arithmetic().reveal()


@pytest.mark.processes
def test_convert_over_tcp(proto):
    name, k = proto
    res = covault.run(prog_tcp, k, name, transport="tcp")
    for p, got in res.items():
        if p != "dealer":
            np.testing.assert_array_equal(got, W1 & W2)
