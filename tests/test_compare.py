"""Comparisons, sign/abs/relu and max/argmax against plaintext numpy, both protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import covault
from covault.errors import ShapeError
from covault.ops import compare
from tests.helpers import ULP, dealt, fused, owner_value, run_both, skip_unless_dealt

RNG = np.random.default_rng(4321)  # test data only; never secrets
SCALE = 1 << 16


def enc(v):
    """The fixed-point values covault actually compares (16 fractional bits)."""
    return np.round(np.asarray(v, dtype=np.float64) * SCALE) / SCALE


def onehot_first_max(v, axis):
    idx = np.expand_dims(np.argmax(v, axis=axis), axis)
    out = np.zeros(v.shape, dtype=np.int64)
    np.put_along_axis(out, idx, 1, axis)
    return out


def _two_inputs(s, a, b):
    p, q = s.compute_parties[0], s.compute_parties[-1]
    return s.input(owner_value(s, a, p), owner=p), s.input(owner_value(s, b, q), owner=q)


# -- comparisons --------------------------------------------------------------------------------
A = np.round(RNG.normal(size=(4, 6)) * 20, 3)
A[0, :4] = [0.0, -0.0, 7.5, -7.5]
A[1, :] = 2.5  # ties along an axis
BV = np.round(RNG.normal(size=(6,)) * 20, 3)
BV[:3] = [0.0, 7.5, 2.5]


def prog_compare(s):
    x, y = _two_inputs(s, A, BV)
    return (
        (x < y).reveal(),
        (x > y).reveal(),
        (x <= y).reveal(),
        (x >= y).reveal(),
        (x == y).reveal(),
        (x != y).reveal(),
        (x < 2.5).reveal(),
        (x > 0).reveal(),
        (x == 2.5).reveal(),
        (x >= np.arange(6) - 3).reveal(),
        compare.less_than(1.0, x).reveal(),  # public on the left
        compare.greater_than(0, y).reveal(),
        (x == x).reveal(),
    )


def test_comparisons(proto):
    got = run_both(prog_compare, proto)
    a, b = enc(A), enc(BV)
    want = (
        a < b,
        a > b,
        a <= b,
        a >= b,
        a == b,
        a != b,
        a < 2.5,
        a > 0,
        a == 2.5,
        a >= np.arange(6) - 3,
        a > 1.0,
        b < 0,
        np.ones(a.shape, bool),
    )
    for g, w in zip(got, want):
        assert g.dtype == np.int64
        np.testing.assert_array_equal(g, w.astype(np.int64))


def prog_result_is_integer(s):
    x, y = _two_inputs(s, A, BV)
    c = x < y
    # an integer 0/1 times a real needs no truncation: exact selection
    return c.frac, (c * x).reveal(), covault.where(c, x, y).reveal()


def test_results_are_exact_integers(proto):
    frac, sel, where = run_both(prog_result_is_integer, proto)
    a, b = enc(A), enc(BV)
    assert frac == 0
    np.testing.assert_array_equal(sel, np.where(a < b, a, 0.0))
    np.testing.assert_array_equal(where, np.where(a < b, a, b))


EXTREME = np.array(
    [0, 1, -1, 2, -2, 2**62, -(2**62), 2**63 - 1, -(2**63), 2**63 - 2, -(2**63) + 1, 12345, -12345], np.int64
)


def prog_ring_extremes(s):
    p = s.compute_parties[0]
    x = s.input(owner_value(s, EXTREME, p), owner=p, integer=True, bound=2**63)
    return compare.msb(x).reveal(), (x == 0).reveal(), (x == -1).reveal()


def test_msb_and_zero_test_cover_the_whole_ring(proto):
    msb, z, m1 = run_both(prog_ring_extremes, proto)
    np.testing.assert_array_equal(msb, (EXTREME < 0).astype(np.int64))
    np.testing.assert_array_equal(z, (EXTREME == 0).astype(np.int64))
    np.testing.assert_array_equal(m1, (EXTREME == -1).astype(np.int64))


LIMIT = 2.0**15 - 2.0**-16  # largest encodable magnitude for 16 fractional bits
NEAR = np.array([LIMIT, -LIMIT, LIMIT - 2**-16, -LIMIT + 2**-16, 2**-16, -(2**-16), 0.0])


def prog_range_limit(s):
    x, y = _two_inputs(s, NEAR, NEAR[::-1].copy())
    return (x < y).reveal(), (x == y).reveal(), (x > -LIMIT).reveal(), x.relu().reveal(), abs(x).reveal()


def test_values_at_the_fixed_point_range_limit(proto):
    lt, eq, gt, relu, ab = run_both(prog_range_limit, proto)
    a, b = NEAR, NEAR[::-1]
    np.testing.assert_array_equal(lt, (a < b).astype(np.int64))
    np.testing.assert_array_equal(eq, (a == b).astype(np.int64))
    np.testing.assert_array_equal(gt, (a > -LIMIT).astype(np.int64))
    np.testing.assert_array_equal(relu, np.maximum(a, 0))
    np.testing.assert_array_equal(ab, np.abs(a))


def prog_integer_tensors(s):
    p, q = s.compute_parties[0], s.compute_parties[-1]
    x = s.input(owner_value(s, np.arange(-3, 4), p), owner=p, integer=True)
    y = s.input(owner_value(s, np.array([[1], [-2]]), q), owner=q, integer=True)
    f = s.input(owner_value(s, np.array([0.5, -0.25, 1.0]), p), owner=p)
    return (x < y).reveal(), (x == y).reveal(), (f[:, None] > x[:3]).reveal(), (x > 1.5).reveal()


def test_integer_and_mixed_precision_operands(proto):
    lt, eq, mixed, half = run_both(prog_integer_tensors, proto)
    x, y = np.arange(-3, 4), np.array([[1], [-2]])
    np.testing.assert_array_equal(lt, (x < y).astype(np.int64))
    np.testing.assert_array_equal(eq, (x == y).astype(np.int64))
    f = np.array([0.5, -0.25, 1.0])
    np.testing.assert_array_equal(mixed, (f[:, None] > x[:3]).astype(np.int64))
    np.testing.assert_array_equal(half, (x > 1.5).astype(np.int64))


def prog_sign_abs_relu(s):
    x, _ = _two_inputs(s, A, BV)
    sg = x.sign()
    return sg.frac, sg.reveal(), abs(x).reveal(), x.relu().reveal(), compare.relu(-x).reveal()


def test_sign_abs_relu(proto):
    frac, sg, ab, relu, relu_neg = run_both(prog_sign_abs_relu, proto)
    a = enc(A)
    assert frac == 0
    np.testing.assert_array_equal(sg, np.where(a < 0, -1, 1))  # sign(0) = +1
    np.testing.assert_array_equal(ab, np.abs(a))
    np.testing.assert_array_equal(relu, np.maximum(a, 0))
    np.testing.assert_array_equal(relu_neg, np.maximum(-a, 0))


# -- max / argmax -----------------------------------------------------------------------------------
M = np.round(RNG.normal(size=(3, 5, 7)) * 4, 1)
M[0, 0, :] = 1.0  # all tied
M[1, :, 2] = M[1, :, 5] = 9.0  # tie for the maximum along the last axis
M[2, 1, :] = M[2, 3, :] = 50.0  # tie along axis 1


def prog_max(s):
    x, _ = _two_inputs(s, M, BV)
    out = []
    for axis in (0, 1, 2, -1, None):
        out.append(x.max(axis=axis).reveal())
        out.append(x.max(axis=axis, keepdims=True).reveal())
        out.append(x.argmax(axis=axis).reveal())
    out.append(x.min(axis=1).reveal())
    return out


def test_max_and_argmax(proto):
    got = iter(run_both(prog_max, proto))
    m = enc(M)
    for axis in (0, 1, 2, -1, None):
        np.testing.assert_array_equal(next(got), m.max(axis=axis))
        np.testing.assert_array_equal(next(got), m.max(axis=axis, keepdims=True))
        if axis is None:
            want = np.zeros(m.size, np.int64)
            want[np.argmax(m)] = 1
            want = want.reshape(m.shape)
        else:
            want = onehot_first_max(m, axis)
        np.testing.assert_array_equal(next(got), want)
    np.testing.assert_array_equal(next(got), m.min(axis=1))


def prog_max_small(s):
    x, _ = _two_inputs(s, np.array([[3.0], [-1.0]]), BV)
    one = s.input(owner_value(s, np.array([4.0, 4.0]), s.compute_parties[0]), owner=s.compute_parties[0])
    return x.max(axis=1).reveal(), x.argmax(axis=1).reveal(), one.argmax().reveal(), one.max().reveal()


def test_max_of_length_one_and_two_way_tie(proto):
    mx, am, tie, tmax = run_both(prog_max_small, proto)
    np.testing.assert_array_equal(mx, [3.0, -1.0])
    np.testing.assert_array_equal(am, [[1], [1]])
    np.testing.assert_array_equal(tie, [1, 0])
    assert tmax == 4.0


def test_bad_axes_and_empty_tensors():
    def prog(s):
        x = s.input(owner_value(s, np.ones((2, 3)), "p0"), owner="p0")
        errors = []
        for f in (lambda: x.max(axis=2), lambda: x.argmax(axis=-3), lambda: x[:, :0].max(axis=1)):
            try:
                f()
            except ShapeError as e:
                errors.append(str(e))
        try:
            compare.less_than(1.0, 2.0)
        except TypeError as e:
            errors.append(str(e))
        return errors

    errors = covault.run(prog, 3, "rep3")["p0"]
    assert len(errors) == 4
    assert "out of range" in errors[0] and "empty" in errors[2] and "secret" in errors[3]


# -- cost ------------------------------------------------------------------------------------------------
def msb_tree_words(n):
    """AND operand bytes of msb_bits per operand: level 0, levels 1..5, level 6 (uint32)."""
    total, count = 8 * n, n
    for _ in range(5):
        total += 8 * count
        count = math.ceil(count / 2)
    return total + 4 * count


def eqz_tree_words(n):
    total, count = 8 * n, n
    for _ in range(5):
        count = math.ceil(count / 2)
        total += 8 * count
    return total + 4 * count


def fused_tree_bytes(n, width):
    """Bytes of the radix-4 tree's three rounds, sent by each compute party and by the dealer
    (P1's corrections), for ``n`` elements of ``width`` bits: 8 opened variables per packed word
    of 4 elements (the 4 propagates are sums of the others), then 7 per word of 16 elements, then 6 (64 bits: 4 groups) or 2 (32 bits: 2
    groups, words of 32 elements); the dealer deals 48, 22, then 15 or 1 mask products."""
    w1 = math.ceil(n / 4)
    w2 = math.ceil(w1 / 4)
    w3 = math.ceil(w2 / (4 if width == 64 else 2))
    last, dealt_last = (6, 15) if width == 64 else (2, 1)
    size = width // 8
    return size * (8 * w1 + 7 * w2 + last * w3), size * (48 * w1 + 22 * w2 + dealt_last * w3)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7, 17, 64, 100, 255, 1023, 1024])
def test_fused_tree_cost_matches_the_documented_formula(n):
    """2pc with the dealer, up to FUSED_ELEMENTS elements: the msb in 3 AND rounds on either
    width, the comparison in 4, with the bytes of :func:`fused_tree_bytes`."""
    vals = np.arange(n) - n / 2

    def prog(s):
        x = s.input(owner_value(s, vals, "p0"), owner="p0")
        cost = {}
        for bits in (64, 32):
            with s.scope() as cost[bits]:
                b = compare.msb_bits(s.protocol, x.shares, bits)
            out = s.protocol.reveal_bool(b, ["p0", "p1"])
            cost[bits] = cost[bits].as_dict(), None if out is None else out.astype(np.int64)
        with s.scope() as lt:
            y = x < 0
        return cost, lt.as_dict(), y.reveal()

    res = covault.run(prog, 2, "2pc")
    for p, (cost, lt, y) in res.items():
        for bits in (64, 32):
            online, offline = fused_tree_bytes(n, bits)
            c, msb = cost[bits]
            if p == "dealer":
                assert c["bytes_sent"] == offline and c["rounds"] == 0
                continue
            np.testing.assert_array_equal(msb, (vals < 0).astype(np.int64))
            assert c["bytes_sent"] == online and c["rounds"] == 3
        if p != "dealer":
            np.testing.assert_array_equal(y, (vals < 0).astype(np.int64))
            assert lt["rounds"] == 4 and lt["bytes_sent"] == fused_tree_bytes(n, 64)[0] + math.ceil(n / 8)


def test_dealt_view_takes_the_radix_4_tree_to_its_batch_limit():
    """rep3's dealt two-party view (P0 deals): the msb on 64 and 32 bits at the radix-4 tree's
    last batch size and one beyond (the binary tree), equal to plaintext, 3 and 6-7 AND rounds."""
    raw = {n: np.concatenate([[0, -1, 1, 2**31 - 1, -(2**31)], RNG.integers(-(2**31), 2**31, n - 5)])
           for n in (compare.FUSED_ELEMENTS, compare.FUSED_ELEMENTS + 1)}  # fmt: skip

    def prog(s):
        proto, view = s.protocol, s.protocol.dealt_view()
        out = {}
        for n, vals in raw.items():
            x = s.input(owner_value(s, np.zeros(n), s.compute_parties[0]), owner=s.compute_parties[0])
            u = proto.to_view(proto.add_public(x.shares, vals))
            for bits in (64, 32):
                with s.scope() as cost:
                    b = compare.msb_bits(view, u, bits)
                got = view.reveal_bool(b, list(s.compute_parties[1:]))
                out[n, bits] = None if got is None else got.astype(np.int64), cost.as_dict()["rounds"]
        return out

    res = covault.run(prog, 3, "rep3")
    for p in ("p1", "p2"):
        for (n, bits), (got, rounds) in res[p].items():
            np.testing.assert_array_equal(got, (raw[n] < 0).astype(np.int64))
            fused = n <= compare.FUSED_ELEMENTS
            assert rounds == (3 if fused else 7 if bits == 64 else 6), (n, bits, rounds)


@pytest.mark.parametrize("n", [64, 100])
def test_cost_matches_the_documented_formula(proto, n, monkeypatch):
    """The binary tree (2pc: forced, as beyond FUSED_ELEMENTS elements)."""
    skip_unless_dealt(proto)
    name, k = proto
    monkeypatch.setattr(compare, "FUSED_ELEMENTS", 0)

    def prog(s):
        x = s.input(owner_value(s, np.arange(n) - n / 2, s.compute_parties[0]), owner=s.compute_parties[0])
        with s.scope() as bits:
            compare.msb_bits(s.protocol, x.shares)
        with s.scope() as lt:
            y = x < 0
        with s.scope() as eq:
            compare.equal(x, 0)
        return bits.as_dict(), lt.as_dict(), eq.as_dict(), y.reveal()

    res = covault.run(prog, k, name)
    msb_and, eqz_and = msb_tree_words(n), eqz_tree_words(n)
    if n == 64:
        assert msb_and == 23.625 * n and eqz_and == 15.875 * n
    for p in res:
        bits, lt, eq, y = res[p]
        if p == "dealer":  # offline: one correction word per AND word, 8 bytes per daBit
            assert bits["bytes_sent"] == msb_and and bits["rounds"] == 0
            assert lt["bytes_sent"] == msb_and + 8 * n
            assert eq["bytes_sent"] == eqz_and + 8 * n
            continue
        np.testing.assert_array_equal(y, (np.arange(n) < n / 2).astype(np.int64))
        if name == "2pc":  # a Beaver AND opens two words per operand word; b2a_bit one bit
            assert bits["bytes_sent"] == 2 * msb_and and bits["rounds"] == 7
            assert lt["bytes_sent"] == 2 * msb_and + math.ceil(n / 8) and lt["rounds"] == 8
            assert eq["bytes_sent"] == 2 * eqz_and + math.ceil(n / 8) and eq["rounds"] == 8
        else:  # msb_addends: one 8-byte AND; a rep3 AND reshares one word; daBits: 1 element,
            # plus 1 for the party's third, carried by the first two AND rounds; then one round
            # opening 1 bit per element
            i = int(p[1])
            dabits = 8 * (n + n // 3 + (i < n % 3)) + math.ceil(n / 8)
            assert bits["bytes_sent"] == 8 * n + msb_and and bits["rounds"] == 8
            assert lt["bytes_sent"] == 8 * n + msb_and + dabits and lt["rounds"] == 9
            assert eq["bytes_sent"] == 8 * n + eqz_and + dabits and eq["rounds"] == 9


def test_msb_on_the_low_32_bits(proto):
    """``msb_bits(..., bits=32)``: the sign for every value in [-2^31, 2^31) ring units (the
    edges included), one AND round fewer and half the AND traffic of the 64-bit tree."""
    name, k = proto
    raw = np.concatenate(
        [[0, -1, 1, 2**31 - 1, -(2**31) + 1, 2**30, -(2**30)], RNG.integers(-(2**31) + 1, 2**31, 300)]
    )
    raw[-1] = -(2**31)  # the lowest value is fine too (shares are set directly: no encoding)

    def prog(s):
        x = s.input(owner_value(s, np.zeros(raw.shape), s.compute_parties[0]), owner=s.compute_parties[0])
        x = x._new(s.protocol.add_public(x.shares, raw), 0)
        cost = {}
        for bits in (64, 32):
            with s.scope() as cost[bits]:
                b = compare.msb_bits(s.protocol, x.shares, bits)
            cost[bits] = cost[bits].as_dict()
            out = s.protocol.reveal_bool(b, list(s.compute_parties))
            cost[bits]["msb"] = None if out is None else out.astype(np.int64)
        with pytest.raises(ValueError, match="64 or 32 bits"):
            compare.msb_bits(s.protocol, x.shares, 16)
        return cost

    res = covault.run(prog, k, name)
    for p in res:
        if p == "dealer":
            continue
        c64, c32 = res[p][64], res[p][32]
        np.testing.assert_array_equal(c32["msb"], (raw < 0).astype(np.int64))
        np.testing.assert_array_equal(c64["msb"], c32["msb"])
        if dealt(proto):  # the radix-4 tree takes 3 AND rounds on either width
            assert c32["rounds"] == c64["rounds"] - (0 if fused(proto, raw.size) else 1)
            assert c32["bytes_sent"] < 0.55 * c64["bytes_sent"]


# -- properties ------------------------------------------------------------------------------------------
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-4, 1.0, 1000.0, 30000.0]))
def test_property_compare(proto, shape, seed, scale):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-scale, scale, size=shape)
    b = np.where(rng.random(shape) < 0.3, a, rng.uniform(-scale, scale, size=shape))  # some ties
    axis = int(rng.integers(0, len(shape)))

    def prog(s):
        x, y = _two_inputs(s, a, b)
        return (
            (x < y).reveal(),
            (x == y).reveal(),
            (x > 0).reveal(),
            x.max(axis=axis).reveal(),
            x.argmax(axis=axis).reveal(),
        )

    lt, eq, pos, mx, am = run_both(prog, proto)
    ea, eb = enc(a), enc(b)
    np.testing.assert_array_equal(lt, (ea < eb).astype(np.int64))
    np.testing.assert_array_equal(eq, (ea == eb).astype(np.int64))
    np.testing.assert_array_equal(pos, (ea > 0).astype(np.int64))
    np.testing.assert_allclose(mx, ea.max(axis=axis), atol=ULP / 2)
    np.testing.assert_array_equal(am, onehot_first_max(ea, axis))


# -- tcp ----------------------------------------------------------------------------------------------------
TCP_X = np.array([-2.0, 0.0, 0.5, 3.0, -0.25])


def prog_tcp(s):
    x = s.input(owner_value(s, TCP_X, s.compute_parties[0]), owner=s.compute_parties[0])
    return (x > 0).reveal(), (x == 0.5).reveal(), x.argmax().reveal()


@pytest.mark.processes
def test_compare_over_tcp(proto):
    name, k = proto
    res = covault.run(prog_tcp, k, name, transport="tcp")
    for p in res:
        if p == "dealer":
            continue
        gt, eq, am = res[p]
        np.testing.assert_array_equal(gt, (TCP_X > 0).astype(np.int64))
        np.testing.assert_array_equal(eq, (TCP_X == 0.5).astype(np.int64))
        np.testing.assert_array_equal(am, [0, 0, 0, 1, 0])


def test_bounded_comparisons_take_the_32_bit_tree(proto):
    """A public bound within 2^31 ring units makes ``<``, ``relu``, ``argmax`` and ``max`` run
    the msb on the low 32 bits: the plaintext answers (edges of the bound included), one round
    fewer than the same values under the default bound (the binary tree; the radix-4 tree takes
    as many rounds on either width)."""
    name, k = proto
    bound = 1000.0
    vals = np.concatenate([[0.0, -(2.0**-16), 2.0**-16, 999.99998, -999.99998], RNG.uniform(-1000, 1000, 95)])
    other = RNG.uniform(-1000, 1000, vals.size)

    def prog(s):
        a, b = s.compute_parties[0], s.compute_parties[1]
        x = s.input(owner_value(s, vals, a), owner=a, bound=bound)
        y = s.input(owner_value(s, other, b), owner=b, bound=bound)
        wide = s.input(owner_value(s, vals, a), owner=a)
        out, cost = {}, {}
        for key, fn in {
            "lt": lambda: x < y,
            "neg": lambda: x < 0,
            "wide": lambda: wide < 0,
            "relu": lambda: x.relu(),
            "argmax": lambda: np.stack([x, y], axis=-1).argmax(axis=-1),
            "max": lambda: np.stack([x, y], axis=-1).max(axis=-1),
        }.items():
            with s.scope() as c:
                r = fn()
            cost[key] = c.as_dict()["rounds"]
            out[key] = r.reveal()
        return out, cost, compare.msb_width(x - y), compare.msb_width(wide)

    res = covault.run(prog, k, name)
    for p in res:
        if p == "dealer":
            continue
        out, cost, narrow, wide = res[p]
        assert (narrow, wide) == (32, 64)
        enc, oth = np.round(vals * 2**16) / 2**16, np.round(other * 2**16) / 2**16
        np.testing.assert_array_equal(out["lt"], (enc < oth).astype(np.int64))
        np.testing.assert_array_equal(out["neg"], (enc < 0).astype(np.int64))
        np.testing.assert_array_equal(out["wide"], out["neg"])
        np.testing.assert_allclose(out["relu"], np.maximum(enc, 0), atol=ULP)
        want = np.stack([1 - (enc < oth), (enc < oth)], axis=-1).astype(np.int64)
        np.testing.assert_array_equal(out["argmax"], want)
        np.testing.assert_allclose(out["max"], np.maximum(enc, oth), atol=ULP)
        assert cost["neg"] == cost["wide"] - (0 if fused(proto, vals.size) else 1)
