"""Public magnitude bounds: every result is right or a named error, never a wrap-around.

Each secure result is compared with the same computation in plaintext, for both protocols.
"""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault import bounds
from covault.errors import BoundError, EncodingError
from tests.helpers import owner_value, run_both

F = 16
ULP = 2.0**-F


def _mean_of(n: int, value: float):
    def prog(s):
        x = s.input(owner_value(s, np.full(n, value)), owner=s.compute_parties[0])
        return x.mean().reveal()

    return prog


@pytest.mark.parametrize(
    ("n", "value"),
    [(1_000, 30_000.0), (100_000, 200.0), (1_000_000, 20.0), (10_000, 600.0), (7, -32_767.5)],
)
def test_mean_of_large_tables_is_exact(proto, n, value):
    """Sums far beyond the input range, then a small public multiplier: the scale is chosen
    from the sum's bound (two limbs where one would lose bits), so the mean is exact."""
    got = run_both(_mean_of(n, value), proto)
    assert abs(float(got) - value) < 4 * ULP


def test_mean_of_large_tables_is_exact_every_time(proto):
    """Probabilistic truncation must not make it right only most of the time."""
    for _ in range(4):
        assert abs(float(run_both(_mean_of(10_000, 600.0), proto)) - 600.0) < 4 * ULP


def prog_mean_tcp(s):
    x = s.input(owner_value(s, np.full(1_000, 30_000.0)), owner=s.compute_parties[0])
    return x.mean().reveal(), (x.sum() / 3.0).reveal()


@pytest.mark.processes
@pytest.mark.parametrize(("name", "n"), [("2pc", 2), ("rep3", 3)])
def test_mean_over_tcp(name, n):
    res = covault.run(prog_mean_tcp, n, name, transport="tcp")
    mean, third = res["p0"]
    assert abs(float(mean) - 30_000.0) < 4 * ULP
    assert abs(float(third) - 1e7) < 4 * ULP


def prog_public_scaling(s):
    a = s.compute_parties[0]
    big = s.input(owner_value(s, np.full(4_096, 31_000.0)), owner=a).sum()  # 1.27e8
    x = s.input(owner_value(s, np.array([1.5, -2.25, 3.0])), owner=a)
    c = np.array([[0.1, -0.7], [1e-3, 0.25], [2.0, -1e-4]])
    return (
        (big * 1e-4).reveal(),
        (big / 3.0).reveal(),
        (big / 4096).reveal(),
        (x * 1e-5).reveal(),
        (x @ c).reveal(),
        (c.T @ x).reveal(),
        (big.reshape(1) @ np.array([[1e-3, -2e-4]])).reveal(),
    )


def test_public_multipliers_and_matrices_against_plaintext(proto):
    got = run_both(prog_public_scaling, proto)
    big = 4_096 * 31_000.0
    x = np.array([1.5, -2.25, 3.0])
    c = np.array([[0.1, -0.7], [1e-3, 0.25], [2.0, -1e-4]])
    want = [big * 1e-4, big / 3.0, 31_000.0, x * 1e-5, x @ c, c.T @ x, np.array([big * 1e-3, -big * 2e-4])]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=4 * ULP)


def prog_declared_bound(s):
    a = s.compute_parties[0]
    x = s.input(owner_value(s, np.full(1_000_000, 20.0)), owner=a, bound=32.0)
    return x.bound, x.sum().bound, x.mean().reveal()


def test_declared_bounds_are_checked_and_followed(proto):
    b, total, mean = run_both(prog_declared_bound, proto)
    assert b == 32.0 and total == 32.0 * 1_000_000
    assert abs(float(mean) - 20.0) < 4 * ULP


def test_values_beyond_a_declared_bound_are_refused_at_the_owner(proto):
    def prog(s):
        a = s.compute_parties[0]
        s.input(owner_value(s, np.array([1.0, 150.0])), owner=a, bound=100.0)

    with pytest.raises(EncodingError, match=r"input of party 'p0'.*150.*declared bound"):
        run_both(prog, proto)


def prog_bounds_follow(s):
    a, b = s.compute_parties[:2]
    x = s.input(owner_value(s, np.ones((4, 3))), owner=a, bound=2.0)
    y = s.input(owner_value(s, np.ones((3, 5)), b), owner=b, bound=3.0)
    return {
        "add": (x + x).bound,
        "sum": x.sum(axis=0).bound,
        "matmul": (x @ y).bound,
        "mul": (x * x).bound,
        "public": (x * 4).bound,
        "sigmoid": x.sigmoid().bound,
        "cmp": (x > 0).bound,
        "max": x.max(axis=1).bound,
        "where": covault.where(x > 0, x, -x).bound,
    }


def test_bounds_follow_the_computation(proto):
    got = run_both(prog_bounds_follow, proto)
    assert got["add"] == 4.0 and got["sum"] == 8.0 and got["public"] == 8.0
    assert 18.0 <= got["matmul"] <= 18.0 + 1e-4  # inner size 3 x 2 x 3
    assert 4.0 <= got["mul"] <= 4.0 + 1e-4
    assert 1.0 <= got["sigmoid"] <= 1.02
    assert got["cmp"] == 1.0 and got["max"] == 2.0 and got["where"] == 2.0


def test_a_result_that_may_not_fit_is_a_named_error(proto):
    def sum_too_big(s):
        x = s.input(owner_value(s, np.ones(1 << 20)), owner=s.compute_parties[0])
        (x.sum() * 30_000.0).reveal()

    with pytest.raises(BoundError, match=r"product with a public value.*2\^49.9.*fractional bits"):
        run_both(sum_too_big, proto)

    def add_too_big(s):
        x = s.input(owner_value(s, np.ones(3)), owner=s.compute_parties[0], bound=2.0**46)
        (x + x + x).reveal()

    with pytest.raises(BoundError, match="addition"):
        run_both(add_too_big, proto)


def test_products_beyond_the_bound_rely_on_the_documented_assumption(proto):
    """x^3 of inputs at the default range cannot be proven to fit: the bound is capped at
    what an exact truncation allows (docs/precision.md), and small values come out right."""

    def prog(s):
        x = s.input(owner_value(s, np.array([1.5, -2.0, 3.0])), owner=s.compute_parties[0])
        cube = x * x * x
        return cube.bound, cube.reveal(), (x**3).reveal()

    bound, cube, power = run_both(prog, proto)
    assert bound <= bounds.EXACT_LIMIT / 2.0 ** (2 * F) + ULP
    np.testing.assert_allclose(cube, [3.375, -8.0, 27.0], atol=4 * ULP)
    np.testing.assert_allclose(power, [3.375, -8.0, 27.0], atol=4 * ULP)


@pytest.mark.parametrize(
    ("op", "error", "message"),
    [
        (lambda x: x + 2**50, EncodingError, "outside the fixed-point range"),
        (lambda x: x + 40_000, EncodingError, "outside the fixed-point range"),
        (lambda x: x + 40_000.0, EncodingError, "outside the fixed-point range"),
        (lambda x: x - np.array([1, 2**40, 3]), EncodingError, "outside the fixed-point range"),
        (lambda x: x * 2**50, BoundError, r"product with a public integer.*2\^65"),
        (lambda x: x * 2.0**50, BoundError, r"product with a public value.*2\^65"),
        (lambda x: x @ np.full((3, 2), 2**40), BoundError, "matmul with a public integer matrix"),
        (lambda x: x * np.array([1, 2**64 - 1, 3], dtype=np.uint64), EncodingError, "outside the range"),
    ],
    ids=[
        "add-2^50",
        "add-40000",
        "add-40000.0",
        "sub-array",
        "mul-2^50",
        "mul-2.0^50",
        "matmul-int",
        "mul-uint64",
    ],
)
def test_public_integers_are_checked_like_reals(proto, op, error, message):
    """Public addends must lie in the encoding range (integers and reals alike); public
    multipliers, integer or real, may be anything whose product's bound fits the ring."""

    def prog(s):
        x = s.input(owner_value(s, np.array([1.0, 2.0, 3.0])), owner=s.compute_parties[0])
        op(x).reveal()

    with pytest.raises(error, match=message):
        run_both(prog, proto)


def prog_large_multipliers(s):
    a = s.compute_parties[0]
    x = s.input(owner_value(s, np.array([1.5, -2.0, 3.0])), owner=a)
    rows = s.input(owner_value(s, np.ones((40_000, 1))), owner=a)
    return (x * 32_768).reveal(), (x * 40_000.5).reveal(), (x / 1e-4).reveal(), (rows * 40_000).sum().reveal()


def test_large_public_multipliers_whose_products_fit(proto):
    """``x * n`` for a row count above the encoding range (the secure standardisation of 40,000
    rows does this) and real multipliers beyond it are exact when the product fits."""
    small, real, inv, total = run_both(prog_large_multipliers, proto)
    x = np.array([1.5, -2.0, 3.0])
    np.testing.assert_array_equal(small, x * 32_768)
    np.testing.assert_allclose(real, x * 40_000.5, atol=4 * ULP)
    np.testing.assert_allclose(inv, x * 1e4, atol=4 * ULP)
    assert float(total) == 40_000.0 * 40_000


@pytest.mark.parametrize(
    "values",
    [np.array([1, 2**64 - 1], dtype=np.uint64), np.array([2**40]), np.array([-(2**63)])],
    ids=["uint64-max", "2^40", "int64-min"],
)
def test_integer_inputs_are_range_checked(proto, values):
    def prog(s):
        s.input(owner_value(s, values), owner=s.compute_parties[0], integer=True)

    with pytest.raises(EncodingError, match=r"input of party 'p0': integer .* outside the range"):
        run_both(prog, proto)


def test_integer_inputs_accept_a_declared_bound(proto):
    def prog(s):
        x = s.input(
            owner_value(s, np.array([2**40, -(2**40)])), owner=s.compute_parties[0], integer=True, bound=2**41
        )
        return (x + 1).reveal()

    np.testing.assert_array_equal(run_both(prog, proto), [2**40 + 1, -(2**40) + 1])


def test_truncation_refuses_values_beyond_its_exact_range(proto):
    def prog(s):
        x = s.input(owner_value(s, np.array([1, 2])), owner=s.compute_parties[0], integer=True, bound=2**63)
        x.truncate(3)

    with pytest.raises(BoundError, match="truncate"):
        run_both(prog, proto)


def test_integer_inputs_take_whole_floats_and_refuse_fractions(proto):
    def prog(s):
        a = s.compute_parties[0]
        x = s.input(owner_value(s, np.array([2.0, -3.0])), owner=a, integer=True)
        return (x + s.constant(np.zeros(2), integer=True)).reveal()

    np.testing.assert_array_equal(run_both(prog, proto), [2, -3])

    def bad(s):
        s.input(owner_value(s, np.array([2.0, 2.7])), owner=s.compute_parties[0], integer=True)

    with pytest.raises(EncodingError, match=r"expected integers, got 2.7 at index \(1,\)"):
        run_both(bad, proto)


def prog_untracked(s):
    """Tracked and untracked operands mixed: the result is untracked (its bound unknown), never
    the tracked operand's bound."""
    from covault.nn import functional as F
    from covault.tensor import SecretTensor

    a = s.compute_parties[0]
    x = s.input(owner_value(s, np.array([1.0, -1.0])), owner=a, bound=2.0)
    big = SecretTensor(s, x.shares * np.int64(1000), x.frac)  # untracked, values +-1000
    y = x + big
    w = s.constant(np.array([0.5, 0.5]))
    g = s.constant(np.array([3000.0, 3000.0]))
    (u,) = F.combine([([(1.0, w), (10.0, g)], s.frac_bits, 1e5)])
    return y.bound, (y * 1e-6).reveal(), u.bound, (u * 0.1).reveal()


def test_untracked_operands_give_untracked_results(proto):
    bound, small, ubound, u = run_both(prog_untracked, proto)
    assert bound is None and ubound is None
    np.testing.assert_allclose(small, [1001e-6, -1001e-6], atol=2 * ULP)
    np.testing.assert_allclose(u, [3000.05, 3000.05], atol=4 * ULP)


def prog_review_cases(s):
    a = s.compute_parties[0]
    wide = s.input(owner_value(s, np.full((1, 64), 2.0**30)), owner=a, bound=2.0**40)
    ones = s.input(owner_value(s, np.ones(1 << 20)), owner=a).sum()
    x42 = s.input(owner_value(s, np.array([1000.0, -3.0])), owner=a, bound=2.0**42)
    big = s.input(owner_value(s, np.full(65_536, 30_000.0)), owner=a).sum()
    out = []
    for fn in (
        lambda: (wide @ np.full((64, 1), 1e-3)).reveal(),
        lambda: (ones * 3000.7).reveal(),
        lambda: (x42 * 15.0).reveal(),
        lambda: (big * 3.7).reveal(),
    ):
        try:
            out.append(fn())
        except BoundError as e:
            out.append(str(e))
    return out


def test_public_scalings_are_right_or_named_at_any_bound(proto):
    """Large operand bounds leave a public constant few bits: the result is still right to
    float32 precision of its bound, or a BoundError naming the operation."""
    matmul, sum_times, declared, two_limbs = run_both(prog_review_cases, proto)
    np.testing.assert_allclose(matmul, [[64 * 2.0**30 * 1e-3]], rtol=2.0**-24)
    assert "product with a public value" in sum_times and "beyond the exact range" in sum_times
    np.testing.assert_allclose(declared, [15_000.0, -45.0], atol=4 * ULP)
    want = 65_536 * 30_000.0 * 3.7
    assert abs(float(two_limbs) - want) <= 2.0**-24 * 65_536 * 2.0**15 * 3.7


def prog_scaler_var(s):
    from covault import ml

    a = s.compute_parties[0]
    x = s.input(owner_value(s, SMALL), owner=a, bound=0.01)
    v = s.input(owner_value(s, SMALL * 1000), owner=a, bound=10.0)
    return (ml.StandardScaler().fit_transform(x) * 0.3).reveal(), (
        ml.StandardScaler().fit(v).var_ * 0.5
    ).reveal()


SMALL = np.array([[0.001, -0.002], [0.003, 0.004], [-0.005, 0.001]])


def test_standardised_values_and_variances_scale_right(proto):
    z, var = run_both(prog_scaler_var, proto)
    np.testing.assert_allclose(z, 0.3 * (SMALL - SMALL.mean(0)) / SMALL.std(0), atol=2e-3)
    np.testing.assert_allclose(var, 0.5 * (SMALL * 1000).var(0), atol=1e-3)


def test_parties_that_declare_different_bounds_are_stopped(proto):
    """Bounds choose scales, so every party must declare the same one: a mismatch is named."""

    def prog(s):
        a = s.compute_parties[0]
        bound = 10.0 if s.party == s.compute_parties[-1] else None
        s.input(owner_value(s, np.ones(3)), owner=a, bound=bound)

    with pytest.raises(
        covault.ProtocolError, match=r"the owner declared the default but party 'p\d' bound=10"
    ):
        run_both(prog, proto)


def prog_extreme_multipliers(s):
    a = s.compute_parties[0]
    x = s.input(owner_value(s, np.array([1.5, -2.0])), owner=a)
    n = s.input(owner_value(s, np.array([3, -4])), owner=a, integer=True)
    out = [(x * 1e-300).reveal(), (x * 5e-324).reveal(), (n * 1e-300).reveal()]
    for fn in (lambda: x @ np.array([[1e308], [1e308]]), lambda: x * 1e308):
        try:
            fn().reveal()
            out.append("no error")
        except BoundError as e:
            out.append(type(e).__name__)
    return out


def test_extreme_public_multipliers_give_zero_or_a_named_error(proto):
    tiny, denormal, int_tiny, huge_matrix, huge = run_both(prog_extreme_multipliers, proto)
    for got in (tiny, denormal, int_tiny):
        np.testing.assert_array_equal(got, [0.0, 0.0])
    assert huge_matrix == huge == "BoundError"
