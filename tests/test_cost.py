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
        # P0 deals (2 corrections, input-independent), P1 and P2 open (2 each); from 4096
        # elements on, every party deals a third (test_rep3_truncation_rotates_the_dealer)
        assert tr["bytes_sent"] == 2 * N * EL
        np.testing.assert_array_equal(z, np.arange(N) * (np.arange(N) % 7))
    assert res["p0"][1]["rounds"] == 1 and res["p1"][1]["rounds"] == res["p2"][1]["rounds"] == 2


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


def test_rep3_truncation_rotates_the_dealer():
    """From 4096 elements on, each party deals a contiguous third (the first ones one longer)
    and opens the other two: exact results and exact bytes, below and above the threshold."""
    sizes = (1, 5, 4095, 4096, 4097, 4098)
    big = np.array([2**61, -(2**61), 2**62 - 1, -(2**62) + 1, 12345, -12345, 0], dtype=np.int64)
    mult = np.array([1, -1, 1, -1, 7, -9, 5], dtype=np.int64)  # |big * mult| < 2^62

    def prog(s):
        out = []
        for n in sizes:
            x = s.input(np.resize(big, n) if s.party == "p0" else None, owner="p0", integer=True, bound=2**62)
            c = s.input(np.resize(mult, n) if s.party == "p1" else None, owner="p1", integer=True, bound=10)
            with s.scope() as tr:
                y = x.truncate(20)
            with s.scope() as mt:
                z = s.protocol.mul_trunc(x.shares, c.shares, 20)
            out.append((tr.as_dict(), mt.as_dict(), y.reveal(), x._new(z).reveal()))
        return out

    res = covault.run(prog, 3, "rep3")
    for i, p in enumerate(("p0", "p1", "p2")):
        for n, (tr, mt, y, z) in zip(sizes, res[p]):
            if n >= 4096:  # D of one third (4 elements fused, 2 corrections), R1/R2 of the others
                third = n // 3 + (i < n % 3)
                assert tr["bytes_sent"] == 2 * n * EL and tr["rounds"] == 2
                assert mt["bytes_sent"] == (2 * n + 2 * third) * EL and mt["rounds"] == 2
            else:  # P0 deals everything and sits out the second round
                assert tr["bytes_sent"] == 2 * n * EL and tr["rounds"] == (1 if i == 0 else 2)
                assert mt["bytes_sent"] == (4 if i == 0 else 2) * n * EL
            x = np.resize(big, n)  # floor(x / 2^20) or one more, for every |x| < 2^62
            assert np.all((y - (x >> 20) >= 0) & (y - (x >> 20) <= 1))
            prod = x * np.resize(mult, n)
            assert np.all((z - (prod >> 20) >= 0) & (z - (prod >> 20) <= 1))
