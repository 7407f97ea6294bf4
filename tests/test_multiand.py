"""Multi-input AND (``Protocol.and_many``): plaintext products, rounds, bytes and what goes on the wire."""

from __future__ import annotations

import math

import numpy as np
import pytest

import covault
from covault.protocols import multiand
from tests.helpers import dealt, owner_value, run_both

RNG = np.random.default_rng(2024)  # test data only
VALUES = RNG.integers(-(2**31) + 1, 2**31, size=(6, 9))  # six variables, nine words each
MONOMIALS = ((0, 1), (2, 3, 4), (0, 1, 2, 3, 4, 5), (5,), (1, 3, 5, 0))


def plain(words: np.ndarray, monomials) -> np.ndarray:
    return np.stack([np.bitwise_and.reduce(words[list(m)], axis=0) for m in monomials])


def prog_products(s):
    x = s.input(owner_value(s, VALUES), owner=s.compute_parties[0], integer=True).to_boolean()
    with s.scope() as cost:
        out = s.protocol.and_many(x.shares, MONOMIALS)
    return x._new(out).reveal(), cost.as_dict()["rounds"], s.protocol.fused_and


def test_and_many_matches_plaintext(proto):
    """Every scheme: the products of the plaintext words; one round with the 2pc dealer, else by
    pairs (ceil(log2 6) = 3 rounds of ANDs)."""
    got, rounds, fused = run_both(prog_products, proto)
    np.testing.assert_array_equal(got, plain(VALUES, MONOMIALS))
    assert fused == (proto[0] == "2pc" and dealt(proto))
    if dealt(proto):
        assert rounds == (1 if fused else math.ceil(math.log2(6)))


def test_and_many_over_tcp():
    got, rounds, fused = run_both(prog_products, ("2pc", 2), transport="tcp")
    np.testing.assert_array_equal(got, plain(VALUES, MONOMIALS))
    assert fused and rounds == 1


K_ZERO, WORDS_ZERO, MONOS_ZERO = 4, 512, ((0, 1, 2, 3), (0, 1))


def prog_zero(s):
    """``and_many`` of all-zero words; what this party received meanwhile."""
    zero = s.input(owner_value(s, np.zeros((K_ZERO, WORDS_ZERO), np.int64)), owner="p0", integer=True)
    x = zero.to_boolean()
    seen, on = [], [True]
    s.net.add_recorder(lambda d, peer, msg: seen.append(msg) if d == "received" and on[0] else None)
    with s.scope() as cost:
        out = s.protocol.and_many(x.shares, MONOS_ZERO)
    on[0] = False
    return x._new(out).reveal(), cost.as_dict(), seen


@pytest.mark.parametrize("transport", ["local", "tcp"])
def test_one_round_cost_and_uniform_openings(transport):
    """2pc with the dealer: each compute party sends its ``k`` masked words once, the dealer one
    correction per mask product to P1; what P1 receives for an all-zero input is uniform (its
    bits balanced, no word repeated), never the input."""
    k, words, monos = K_ZERO, WORDS_ZERO, MONOS_ZERO
    res = covault.run(prog_zero, 2, "2pc", transport=transport)
    subsets = multiand.plan(k, monos).subsets
    assert len(subsets) == 11  # every subset of {0, 1, 2, 3} with two elements or more
    for p, (got, cost, seen) in res.items():
        if p == "dealer":
            assert cost["bytes_sent"] == 8 * words * len(subsets) and cost["rounds"] == 0
            continue
        np.testing.assert_array_equal(got, np.zeros((2, words), np.int64))
        assert cost["rounds"] == 1 and cost["bytes_sent"] == 8 * k * words
        opened = seen[-1][0]  # the other compute party's masked words
        assert opened.shape == (k, words) and len(np.unique(opened)) == opened.size
        ones = np.unpackbits(opened.view(np.uint8)).mean()
        assert 0.48 < ones < 0.52


def prog_sums(s):
    """Variable 6 is the XOR of variables 0 and 3: given as a sum, it is not opened."""
    words = np.concatenate([VALUES, VALUES[0:1] ^ VALUES[3:4]])
    x = s.input(owner_value(s, words), owner=s.compute_parties[0], integer=True).to_boolean()
    monos = ((6, 1), (0, 6, 5), (2, 4))
    with s.scope() as plain_cost:
        a = s.protocol.and_many(x.shares, monos)
    with s.scope() as sum_cost:
        b = s.protocol.and_many(x.shares, monos, sums=((6, 0, 3),))
    return x._new(a).reveal(), x._new(b).reveal(), plain_cost.bytes_sent, sum_cost.bytes_sent


def test_a_variable_given_as_a_sum_is_not_opened(proto):
    a, b, plain_cost, sum_cost = run_both(prog_sums, proto)
    words = np.concatenate([VALUES, VALUES[0:1] ^ VALUES[3:4]])
    want = plain(words, ((6, 1), (0, 6, 5), (2, 4)))
    np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(b, want)
    if proto[0] == "2pc" and dealt(proto):  # one word fewer of each 7 opened
        assert plain_cost == 7 * 9 * 8 and sum_cost == 6 * 9 * 8


@pytest.mark.parametrize("sums", [((6, 0, 0),), ((6, 0, 9),), ((6, 0, 3), (6, 1, 2)), ((6, 0, 3), (5, 6, 1))])
def test_bad_sums_are_refused(sums):
    with pytest.raises(ValueError, match="and_many: "):
        multiand.plan(7, ((0, 1),), sums)


def test_plan_expands_every_product():
    """The plan alone (share maths, no network): P0 holding every share, P1 none."""
    rng = np.random.default_rng(5)  # test data only
    k = 5
    monos = ((0, 1, 2, 3, 4), (4, 2), (1,))
    p = multiand.plan(k, monos)
    x = rng.integers(0, 2**63, size=(k, 7), dtype=np.uint64)
    r = rng.integers(0, 2**63, size=(k, 7), dtype=np.uint64)
    table = np.concatenate(
        [np.full((1, 7), ~np.uint64(0)), r, plain(r, p.subsets).reshape(len(p.subsets), 7)]
    )
    np.testing.assert_array_equal(p.products(x ^ r, table), plain(x, p.monomials))


@pytest.mark.parametrize(
    "bad", [((),), ((0, 0),), ((0, 7),), ((-1, 1),), ((0.5, 1),), (("a", 1),), (tuple(range(9)),)]
)
def test_bad_monomials_are_refused(bad):
    with pytest.raises(ValueError, match="and_many: monomial"):
        multiand.plan(10 if len(bad[0]) == 9 else 3, bad)


def test_cached_plans_do_not_admit_bad_indices_and_are_read_only():
    """A cached plan of ``((1, 2),)`` is not returned for ``True`` or ``1.0`` in its place (the
    cache compares keys by equality), and its tables cannot be written."""
    p = multiand.plan(3, ((1, 2),))
    for bad in (((True, 2),), ((1.0, 2),), ((np.float64(1), 2),)):
        with pytest.raises(ValueError, match="and_many: monomial"):
            multiand.plan(3, bad)
    assert multiand.plan(3, [[1, 2]]).monomials == p.monomials  # lists: checked afresh, same plan
    tables = [p.opened, p.term_pub, p.term_share, p.starts, *(a for st in p.steps for a in st)]
    for table in tables:
        with pytest.raises(ValueError, match="read-only"):
            table[...] = 0


def test_bad_shares_and_no_monomials(proto):
    """Float shares are a TypeError naming and_many (at every party, before any message); no
    monomials: an empty answer, no round."""

    def prog(s):
        x = s.input(owner_value(s, VALUES), owner=s.compute_parties[0], integer=True).to_boolean()
        try:
            s.protocol.and_many(x.shares.astype(np.float64), MONOMIALS)
            error = None
        except TypeError as exc:
            error = str(exc)
        with s.scope() as cost:
            out = s.protocol.and_many(x.shares, ())
        return error, out.shape[1:], cost.as_dict()["rounds"]

    error, shape, rounds = run_both(prog, proto)
    assert "and_many: the shares must be integer words" in error
    assert shape == (0, 9) and rounds == 0
