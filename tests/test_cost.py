"""Cost accounting: each operation costs exactly what its protocol says."""

from __future__ import annotations

import numpy as np

import covault

N = 1000
EL = 8  # bytes per ring element


def _ints(s):
    a, b = s.compute_parties[0], s.compute_parties[1]
    x = s.input(np.arange(N) if s.party == a else None, owner=a, integer=True)
    y = s.input(np.arange(N) % 7 if s.party == b else None, owner=b, integer=True)
    return x, y


def test_2pc_product_costs_two_elements_per_party():
    def prog(s):
        x, y = _ints(s)
        with s.scope() as mul:
            z = x * y
        with s.scope() as tr:
            z.truncate(3)
        with s.scope() as mm:
            x.reshape(50, 20) @ y.reshape(20, 50)
        return mul.as_dict(), tr.as_dict(), mm.as_dict(), z.reveal()

    res = covault.run(prog, 2, "2pc")
    for p in ("p0", "p1"):
        mul, tr, mm, z = res[p]
        assert mul["bytes_sent"] == 2 * N * EL and mul["rounds"] == 1
        assert tr["bytes_sent"] == 1 * N * EL and tr["rounds"] == 1
        assert mm["bytes_sent"] == 2 * N * EL and mm["rounds"] == 1  # E (50x20) and F (20x50)
        np.testing.assert_array_equal(z, np.arange(N) * (np.arange(N) % 7))
    # the dealer sends P1 one correction per product, two per truncation; P0 nothing
    dmul, dtr, dmm, _ = res["dealer"]
    assert dmul["bytes_sent"] == N * EL and dmul["rounds"] == 0
    assert dtr["bytes_sent"] == 2 * N * EL
    assert dmm["bytes_sent"] == 50 * 50 * EL


def test_rep3_product_costs_one_element_per_party():
    def prog(s):
        x, y = _ints(s)
        with s.scope() as mul:
            z = x * y
        with s.scope() as tr:
            z.truncate(3)
        return mul.as_dict(), tr.as_dict(), z.reveal()

    res = covault.run(prog, 3, "rep3")
    for p in ("p0", "p1", "p2"):
        mul, tr, z = res[p]
        assert mul["bytes_sent"] == N * EL and mul["rounds"] == 1
        assert mul["bytes_received"] == N * EL
        assert tr["bytes_sent"] == 2 * N * EL
        np.testing.assert_array_equal(z, np.arange(N) * (np.arange(N) % 7))
    assert res["p0"][1]["rounds"] == 1 and res["p1"][1]["rounds"] == 2


def test_stats_reset_and_scope_nesting():
    def prog(s):
        x, _ = _ints(s)
        s.stats.reset()
        assert s.stats.bytes_sent == 0
        with s.scope() as outer:
            with s.scope() as inner:
                x.reveal()
            x.reveal()
        return inner.as_dict(), outer.as_dict()

    res = covault.run(prog, 3, "rep3")
    inner, outer = res["p1"]
    assert outer["bytes_sent"] == 2 * inner["bytes_sent"] == 2 * N * EL
    assert outer["rounds"] == 2 * inner["rounds"] == 2


def test_fixed_point_product_costs():
    """2pc: product then truncation (2 rounds, 3 elements); rep3: fused (2 rounds)."""

    def prog(s):
        a, b = s.compute_parties[0], s.compute_parties[1]
        x = s.input(np.linspace(-3, 3, N) if s.party == a else None, owner=a)
        y = s.input(np.linspace(2, -1, N) if s.party == b else None, owner=b)
        with s.scope() as cost:
            z = x * y
        return cost.as_dict(), z.reveal()

    want = np.linspace(-3, 3, N) * np.linspace(2, -1, N)
    res2 = covault.run(prog, 2, "2pc")
    for p in ("p0", "p1"):
        cost, z = res2[p]
        assert cost["bytes_sent"] == 3 * N * EL and cost["rounds"] == 2
        np.testing.assert_allclose(z, want, atol=1e-4)
    res3 = covault.run(prog, 3, "rep3")
    assert res3["p0"][0]["bytes_sent"] == 4 * N * EL and res3["p0"][0]["rounds"] == 1
    for p in ("p1", "p2"):
        cost, z = res3[p]
        assert cost["bytes_sent"] == 2 * N * EL and cost["rounds"] == 2
        np.testing.assert_allclose(z, want, atol=1e-4)
