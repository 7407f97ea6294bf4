"""Linear algebra, products and shape operations against plaintext numpy, both protocols."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import covault
from tests.helpers import ULP, run_both

RNG = np.random.default_rng(1234)  # test data only; never secrets
X = RNG.uniform(-8, 8, size=(5, 4))
Y = RNG.uniform(-8, 8, size=(4, 3))
V = RNG.uniform(-8, 8, size=(4,))
B = RNG.uniform(-3, 3, size=(2, 5, 4))
C = RNG.uniform(-3, 3, size=(2, 4, 3))


def _inputs(s):
    a, b = s.compute_parties[0], s.compute_parties[1]
    x = s.input(X if s.party == a else None, owner=a)
    y = s.input(Y if s.party == b else None, owner=b)
    return x, y


def prog_linear(s):
    x, y = _inputs(s)
    v = s.input(V if s.party == s.compute_parties[-1] else None, owner=s.compute_parties[-1])
    return (
        (x + v).reveal(),
        (x - v).reveal(),
        (v - x).reveal(),
        (x + 1.5).reveal(),
        (2.25 - x).reveal(),
        (-x).reveal(),
        (x * 3).reveal(),
        (x * np.arange(4)).reveal(),
        (x / 4.0).reveal(),
        (x * 0.3).reveal(),
        (x * v).reveal(),
        (x @ y).reveal(),
        (x @ Y).reveal(),
        (X @ y).reveal(),
        (x @ v).reveal(),
        x.sum().reveal(),
        x.sum(axis=0).reveal(),
        x.sum(axis=1, keepdims=True).reveal(),
        x.mean(axis=0).reveal(),
    )


def test_linear_and_products(proto):
    got = run_both(prog_linear, proto)
    want = (
        X + V,
        X - V,
        V - X,
        X + 1.5,
        2.25 - X,
        -X,
        X * 3,
        X * np.arange(4),
        X / 4.0,
        X * 0.3,
        X * V,
        X @ Y,
        X @ Y,
        X @ Y,
        X @ V,
        X.sum(),
        X.sum(0),
        X.sum(1, keepdims=True),
        X.mean(0),
    )
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == np.shape(w), i
        # inputs carry 0.5 ulp encoding error each; sums of K terms scale it
        np.testing.assert_allclose(g, w, atol=60 * ULP, err_msg=f"output {i}")


def prog_batched(s):
    a, b = s.compute_parties[0], s.compute_parties[1]
    x = s.input(B if s.party == a else None, owner=a)
    y = s.input(C if s.party == b else None, owner=b)
    return (x @ y).reveal(), (x @ C[0]).reveal(), (x * y[:, :, :1].transpose(0, 2, 1)[:, :, :1]).reveal()


def test_batched_matmul(proto):
    g1, g2, g3 = run_both(prog_batched, proto)
    np.testing.assert_allclose(g1, B @ C, atol=40 * ULP)
    np.testing.assert_allclose(g2, B @ C[0], atol=40 * ULP)
    np.testing.assert_allclose(g3, B * C[:, :1, :1], atol=8 * ULP)


def prog_shapes(s):
    x, y = _inputs(s)
    parts = (
        x.reshape(2, 10),
        x.reshape((20,)),
        x.T,
        x.transpose(1, 0),
        x[1],
        x[1:3, ::2],
        x[:, [0, 2]],
        x[..., -1],
        covault.concatenate([x, x * 2], axis=1),
        covault.concatenate([x[:2], x[3:]], axis=0),
        covault.stack([x[0], x[1]], axis=1),
        x.expand_dims(0),
        x[:1].squeeze(0),
        x[:1].broadcast_to((3, 4)),
        x.flatten(),
    )
    return [p.reveal() for p in parts]


def test_shape_ops(proto):
    got = run_both(prog_shapes, proto)
    want = [
        X.reshape(2, 10),
        X.reshape(20),
        X.T,
        X.T,
        X[1],
        X[1:3, ::2],
        X[:, [0, 2]],
        X[..., -1],
        np.concatenate([X, X * 2], axis=1),
        np.concatenate([X[:2], X[3:]]),
        np.stack([X[0], X[1]], axis=1),
        X[None],
        X[0],
        np.broadcast_to(X[:1], (3, 4)),
        X.reshape(-1),
    ]
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, i
        np.testing.assert_allclose(g, w, atol=ULP, err_msg=f"output {i}")


def prog_where_and_ints(s):
    a = s.compute_parties[0]
    bits = s.input(np.array([1, 0, 1, 1]) if s.party == a else None, owner=a, integer=True)
    v = s.input(V if s.party == a else None, owner=a)
    picked = covault.where(bits, v, -v)
    counts = (bits * 5 + 2).reveal()
    return picked.reveal(), counts, (bits * v).reveal(), s.constant([1.5, 2.0]).reveal()


def test_where_and_integers(proto):
    picked, counts, masked, const = run_both(prog_where_and_ints, proto)
    m = np.array([1, 0, 1, 1])
    np.testing.assert_allclose(picked, np.where(m == 1, V, -V), atol=ULP)
    np.testing.assert_array_equal(counts, m * 5 + 2)
    assert counts.dtype == np.int64
    np.testing.assert_allclose(masked, m * V, atol=ULP)
    np.testing.assert_allclose(const, [1.5, 2.0])


def prog_reveal_targets(s):
    a, b = s.compute_parties[0], s.compute_parties[1]
    x = s.input(V if s.party == a else None, owner=a)
    only_b = x.reveal(to=b)
    both = x.reveal(to=[a, b])
    everyone = x.reveal(to=list(s.parties))
    return only_b, both, everyone


def test_reveal_to_subsets(proto):
    name, n = proto
    res = covault.run(prog_reveal_targets, n, name)
    names = list(res)
    a, b = names[0], names[1]
    for p, (only_b, both, everyone) in res.items():
        assert (only_b is not None) == (p == b)
        assert (both is not None) == (p in (a, b))
        np.testing.assert_allclose(everyone, V, atol=ULP)
        if only_b is not None:
            np.testing.assert_allclose(only_b, V, atol=ULP)


@pytest.mark.parametrize("frac_bits", [8, 20])
def test_configurable_fraction_bits(proto, frac_bits):
    def prog(s):
        x, y = _inputs(s)
        return (x * y[:, :1].T[:, :4].reshape(4)).reveal(), s.frac_bits

    name, n = proto
    out = covault.run(prog, n, name, frac_bits=frac_bits)["p0"]
    assert out[1] == frac_bits
    np.testing.assert_allclose(out[0], X * Y[:, 0], atol=12 * 2.0**-frac_bits)


# -- property tests ---------------------------------------------------------------------------

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-3, 1.0, 100.0, 3000.0]))
def test_property_mul_add(proto, shape, seed, scale):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-scale, scale, size=shape)
    b = rng.uniform(-min(scale, 10.0), min(scale, 10.0), size=shape)

    def prog(s):
        p, q = s.compute_parties[0], s.compute_parties[1]
        x = s.input(a if s.party == p else None, owner=p)
        y = s.input(b if s.party == q else None, owner=q)
        return (x * y).reveal(), (x + y).reveal()

    prod, total = run_both(prog, proto)
    # each input is rounded to 1/2 ulp, the product is truncated (at most 1 ulp)
    np.testing.assert_allclose(prod, a * b, atol=(np.abs(a).max() + np.abs(b).max() + 4) * ULP)
    np.testing.assert_allclose(total, a + b, atol=2 * ULP)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 6), k=st.integers(1, 6), m=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_property_matmul(proto, n, k, m, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-10, 10, size=(n, k))
    b = rng.uniform(-10, 10, size=(k, m))

    def prog(s):
        p, q = s.compute_parties[0], s.compute_parties[1]
        x = s.input(a if s.party == p else None, owner=p)
        y = s.input(b if s.party == q else None, owner=q)
        return (x @ y).reveal()

    got = run_both(prog, proto)
    np.testing.assert_allclose(got, a @ b, atol=(20 * k + 2) * ULP)


def test_scalars_and_rank_broadcasting(proto):
    def prog(s):
        a = s.compute_parties[0]
        v = s.input(V if s.party == a else None, owner=a)
        total = v.sum()  # 0-d
        return (
            (total * total).reveal(),
            total.reveal(),
            v.broadcast_to((3, 4)).reveal(),
            (v + np.ones((2, 4))).reveal(),
        )

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sq, total, bc, plus = run_both(prog, proto)
    assert total.shape == () and sq.shape == ()
    np.testing.assert_allclose(total, V.sum(), atol=4 * ULP)
    np.testing.assert_allclose(sq, V.sum() ** 2, atol=1e-3)
    np.testing.assert_allclose(bc, np.broadcast_to(V, (3, 4)), atol=ULP)
    np.testing.assert_allclose(plus, V + np.ones((2, 4)), atol=ULP)


def prog_all_core(s):
    return prog_linear(s), prog_batched(s), prog_shapes(s), prog_where_and_ints(s)


@pytest.mark.processes
def test_core_ops_over_tcp(proto):
    """The same programs over real processes and sockets give the same answers."""
    name, n = proto
    local = covault.run(prog_all_core, n, name)
    tcp = covault.run(prog_all_core, n, name, transport="tcp", timeout=60)
    assert set(local) == set(tcp)
    for party in local:
        flat_l = [a for group in local[party] for a in group] if local[party] else []
        flat_t = [a for group in tcp[party] for a in group] if tcp[party] else []
        for a, b in zip(flat_l, flat_t):
            # both are within the precision bound of plaintext; truncation is probabilistic
            np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=100 * ULP)
    linear = tcp["p0"][0]
    np.testing.assert_allclose(linear[11], X @ Y, atol=60 * ULP)


def test_division_by_large_public_value_keeps_relative_precision(proto):
    vals = np.linspace(40.0, 70.0, 4000)

    def prog(s):
        a = s.compute_parties[0]
        x = s.input(vals if s.party == a else None, owner=a)
        return x.mean().reveal(), (x / 3.0).reveal(), (x * 1e-4).reveal(), (x * 300.0).reveal()

    mean, third, tiny, big = run_both(prog, proto)
    assert abs(mean - vals.mean()) < 1e-3  # 1/4000 at 16 bits alone would be off by 2.3%
    np.testing.assert_allclose(third, vals / 3, atol=2 * ULP)
    np.testing.assert_allclose(tiny, vals * 1e-4, atol=2 * ULP)
    np.testing.assert_allclose(big, vals * 300, atol=300 * ULP)
