"""Non-linear functions against numpy on dense grids, both protocols (targets: docs/precision.md)."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault.ops import nonlinear
from covault.ops.nonlinear import fixed
from tests.helpers import IDS, ULP, VARIANTS, owner_value, run_both, skip_unless_dealt

N = 3001  # grid points per function, both range ends included


def on_grid(lo: float, hi: float, n: int = N) -> np.ndarray:
    """``n`` points from ``lo`` to ``hi`` (inclusive), exactly representable with 16 bits."""
    return np.round(np.linspace(lo, hi, n) / ULP) * ULP


def sigmoid_np(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# name: (reference, lo, hi, "abs" | "rel", target)
TARGETS = {
    "sigmoid": (sigmoid_np, -10.0, 10.0, "abs", 5e-4),
    "tanh": (np.tanh, -10.0, 10.0, "abs", 1e-3),
    "exp": (np.exp, -5.0, 5.0, "rel", 5e-3),
    "reciprocal": (lambda x: 1.0 / x, 0.1, 100.0, "rel", 1e-3),
    "log": (np.log, 0.1, 100.0, "abs", 1e-3),
    "sqrt": (np.sqrt, 0.1, 100.0, "rel", 1e-3),
    "inv_sqrt": (lambda x: 1.0 / np.sqrt(x), 0.1, 100.0, "rel", 1e-3),
}
SOFTMAX_TARGET = 1e-3

RNG = np.random.default_rng(2024)  # test data only
LOGITS = RNG.uniform(-10.0, 10.0, size=(96, 10))
LOGITS[0] = -10.0  # all equal
LOGITS[1, :] = -10.0
LOGITS[1, 3] = 10.0  # one dominant logit: every other probability ~ 2e-9
LOGITS[2] = np.linspace(-10.0, 10.0, 10)
LOGITS3 = RNG.uniform(-10.0, 10.0, size=(4, 7, 5))


def softmax_np(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def errors(name: str, got: np.ndarray, x: np.ndarray) -> np.ndarray:
    ref, _, _, kind, _ = TARGETS[name]
    want = ref(x)
    err = np.abs(got - want)
    return err / np.abs(want) if kind == "rel" else err


def prog_grids(s):
    out = []
    for name, (_, lo, hi, _, _) in TARGETS.items():
        x = s.input(owner_value(s, on_grid(lo, hi)), owner=s.compute_parties[0])
        out.append(getattr(nonlinear, name)(x).reveal())
    lg = s.input(owner_value(s, LOGITS), owner=s.compute_parties[0])
    lg3 = s.input(owner_value(s, LOGITS3, s.compute_parties[-1]), owner=s.compute_parties[-1])
    out.append(nonlinear.softmax(lg).reveal())
    out.append(nonlinear.softmax(lg3, axis=1).reveal())
    return out


@pytest.fixture(scope="module", params=VARIANTS, ids=IDS)
def grids(request):
    got = run_both(prog_grids, request.param)
    return dict(zip([*TARGETS, "softmax", "softmax3"], got))


@pytest.mark.parametrize("name", list(TARGETS))
def test_accuracy_on_grid(grids, name):
    _, lo, hi, kind, target = TARGETS[name]
    x = on_grid(lo, hi)
    err = errors(name, grids[name], x)
    worst = int(err.argmax())
    assert err.max() <= target, f"{name}: max {kind} error {err.max():.3g} at x = {x[worst]!r}"


def test_softmax_accuracy(grids):
    got, want = grids["softmax"], softmax_np(LOGITS, -1)
    assert np.abs(got - want).max() <= SOFTMAX_TARGET
    got3, want3 = grids["softmax3"], softmax_np(LOGITS3, 1)
    assert got3.shape == LOGITS3.shape
    assert np.abs(got3 - want3).max() <= SOFTMAX_TARGET
    assert np.abs(got.sum(axis=-1) - 1.0).max() <= 1e-3


# -- outside the accuracy ranges ----------------------------------------------------------------
WIDE = np.array([-32767.5, -1000.0, -40.0, -10.0, -8.0, -4.0, -1e-3, 0.0, 1e-3, 4.0, 8.0, 12.0, 32767.5])
EXP_WIDE = np.array(
    [-32767.5, -1000.0, -40.0, -16.5, -12.0, -8.0, 0.0, 7.5, 10.0, 10.39, 11.0, 500.0, 32767.5]
)
POS = np.concatenate([2.0 ** np.arange(-16.0, 15.0), [3 * ULP, 1.5, 3.0, 1234.5678, 32767.5]])
ZERO = np.zeros(3)


def prog_wide(s):
    def inp(v):
        return s.input(owner_value(s, v), owner=s.compute_parties[0])

    w, e, p, z = inp(WIDE), inp(EXP_WIDE), inp(POS), inp(ZERO)
    return (
        nonlinear.sigmoid(w).reveal(),
        nonlinear.tanh(w).reveal(),
        nonlinear.exp(e).reveal(),
        nonlinear.reciprocal(p).reveal(),
        nonlinear.log(p).reveal(),
        nonlinear.sqrt(p).reveal(),
        nonlinear.inv_sqrt(p).reveal(),
        nonlinear.sqrt(z).reveal(),
    )


def test_full_fixed_point_range(proto):
    sig, th, ex, rec, lg, sq, isq, sq0 = run_both(prog_wide, proto)
    # sigmoid/tanh saturate for every representable input
    assert np.abs(sig - sigmoid_np(WIDE)).max() <= 5e-4
    assert np.abs(th - np.tanh(WIDE)).max() <= 1e-3
    # exp: large negative -> 0, large positive saturates at the top of the fixed-point range
    with np.errstate(over="ignore"):
        want = np.exp(EXP_WIDE)
    ok = EXP_WIDE <= 10.39
    assert np.all(np.abs(ex[ok] - want[ok]) <= 2e-5 * want[ok] + 2 * ULP)
    assert np.all(ex[~ok] >= 32700.0) and np.all(ex[~ok] < 32768.0)
    # reciprocal: correctly rounded (plus 1e-6 relative) wherever 1/x is representable
    fine = POS >= 2.0**-15
    assert np.all(np.abs(rec[fine] - 1.0 / POS[fine]) <= 0.5 * ULP + 1e-6 / POS[fine])
    assert abs(rec[0] - 2.0**16) <= 1e-6 * 2.0**16  # x = 2^-16: beyond the range, still exact
    assert np.abs(lg - np.log(POS)).max() <= 1e-4
    assert np.all(np.abs(sq - np.sqrt(POS)) <= 1e-5 * np.sqrt(POS) + ULP)
    np.testing.assert_array_equal(sq0, 0.0)
    assert np.all(np.abs(isq - 1.0 / np.sqrt(POS)) <= 1e-5 / np.sqrt(POS) + ULP)


# -- the SecretTensor methods, shapes, integer inputs ------------------------------------------
A = np.array([[0.5, 2.0, 7.25], [1.0, 3.5, 90.0]])
B = np.array([[1.5, -2.0, 4.0], [-6.0, 0.25, 10.0]])


def prog_methods(s):
    a = s.input(owner_value(s, A), owner=s.compute_parties[0])
    b = s.input(owner_value(s, B, s.compute_parties[-1]), owner=s.compute_parties[-1])
    n = s.input(owner_value(s, np.array([3, 10, 100])), owner=s.compute_parties[0], integer=True)
    scalar = s.input(owner_value(s, np.float64(2.0)), owner=s.compute_parties[0])
    return (
        (b / a).reveal(),
        (1.0 / a).reveal(),
        a.log().reveal(),
        a.sqrt().reveal(),
        a.inv_sqrt().reveal(),
        b.exp().reveal(),
        b.sigmoid().reveal(),
        b.tanh().reveal(),
        b.softmax(axis=0).reveal(),
        n.reciprocal().reveal(),
        scalar.exp().reveal(),
    )


def test_tensor_methods_shapes_and_integers(proto):
    got = run_both(prog_methods, proto)
    want = (
        B / A,
        1.0 / A,
        np.log(A),
        np.sqrt(A),
        1.0 / np.sqrt(A),
        np.exp(B),
        sigmoid_np(B),
        np.tanh(B),
        softmax_np(B, 0),
        1.0 / np.array([3, 10, 100]),
        np.exp(2.0),
    )
    for g, w in zip(got, want):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(g, w, rtol=3e-3, atol=5e-4)


def prog_cost(s):
    x = s.input(owner_value(s, np.linspace(-9.0, 9.0, 64)), owner=s.compute_parties[0])
    with s.scope() as cost:
        nonlinear.sigmoid(x)
    return cost.rounds


def test_sigmoid_rounds(proto):
    """One batched comparison and the documented product/truncation chain (no hidden rounds)."""
    skip_unless_dealt(proto)
    name, k = proto
    res = covault.run(prog_cost, k, name)
    # 2pc: boolean msb 3 (radix-4 tree) + bit injection 1 + 6 x (product 1 + truncation 1);
    # rep3: the clamp in the dealt two-party view (msb 3 + bit injection 1 + back to replicated
    # 1: P1 and P2 only, P0 deals) + 6 fused products (2 rounds each; the Horner steps add their
    # block before the fused truncation); below 4096 elements P0 deals every truncation and
    # takes no part in their second rounds
    want = {"2pc": {"p0": 16, "p1": 16, "dealer": 0}, "rep3": {"p0": 6, "p1": 17, "p2": 17}}[name]
    assert res == want


# -- fixed-point helpers ---------------------------------------------------------------------------
def prog_poly(s):
    v = s.input(owner_value(s, np.linspace(-1.0, 1.0, 201)), owner=s.compute_parties[0])
    v = fixed.as_frac(v, 24)
    outs = []
    for deg in (0, 1, 2, 5, 9):
        coeffs = [(-1) ** i / (i + 1) for i in range(deg + 1)]
        outs.append(fixed.poly(v, coeffs, 1.0, 16).reveal())
    near = fixed.round_nearest(fixed.as_frac(v, 30), 16).reveal()
    third = s.input(owner_value(s, np.linspace(-3.0, 3.0, 201)), owner=s.compute_parties[0])
    squares = fixed.round_nearest(fixed.mul(third, third), 16).reveal()  # 32 exact bits
    return outs, near, squares


def test_poly_and_rounding_helpers(proto):
    outs, near, squares = run_both(prog_poly, proto)
    grid = np.round(np.linspace(-1.0, 1.0, 201) / ULP) * ULP
    g3 = np.round(np.linspace(-3.0, 3.0, 201) / ULP) * ULP
    np.testing.assert_array_equal(squares, np.floor(g3 * g3 / ULP + 0.5) * ULP)
    for deg, got in zip((0, 1, 2, 5, 9), outs):
        coeffs = [(-1) ** i / (i + 1) for i in range(deg + 1)]
        np.testing.assert_allclose(got, np.polyval(coeffs[::-1], grid), atol=2 * ULP)
    np.testing.assert_array_equal(near, grid)


def test_poly_rejects_oversized_bound():
    def prog(s):
        v = fixed.as_frac(s.input(owner_value(s, np.ones(3)), owner=s.compute_parties[0]), 30)
        fixed.poly(v, [1.0, 50.0], 1.0, 16)

    with pytest.raises(covault.ProtocolError, match="does not fit"):
        covault.run(prog, 2, "2pc")


# -- tcp ---------------------------------------------------------------------------------------------
def prog_tcp(s):
    x = s.input(owner_value(s, np.linspace(-12.0, 12.0, 33)), owner=s.compute_parties[0])
    return x.sigmoid().reveal(), (x * x + 0.5).reciprocal().reveal()


@pytest.mark.processes
def test_nonlinear_over_tcp(proto):
    name, k = proto
    res = covault.run(prog_tcp, k, name, transport="tcp")
    x = np.linspace(-12.0, 12.0, 33)
    sig, rec = res["p0"]
    assert np.abs(sig - sigmoid_np(x)).max() <= 5e-4
    xe = np.round(x / ULP) * ULP
    assert np.all(np.abs(rec - 1.0 / (xe * xe + 0.5)) <= 1e-3 / (xe * xe + 0.5) + ULP)
