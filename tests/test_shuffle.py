"""Oblivious shuffle: the output is a permutation of the rows, different each call, uniform, and
no party sees anything but uniformly masked messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import covault
from covault.errors import ShapeError
from covault.ops import shuffle as shuffle_module
from covault.ops.shuffle import shuffle_rows, shuffle_together
from tests.helpers import PROTOCOLS, bit_balance_z, owner_value, run_both

ROWS = np.arange(60.0).reshape(20, 3) + 0.25  # distinct rows


def prog_perm(s):
    x = s.input(owner_value(s, ROWS), owner=s.compute_parties[0])
    with s.scope() as cost:
        a = shuffle_rows(x)
    b = shuffle_rows(x)
    cube = shuffle_rows(x.reshape(20, 3, 1))
    return a.reveal(), b.reveal(), cube.reveal(), cost.as_dict()


@pytest.mark.parametrize("proto", PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def test_result_is_a_permutation_of_the_rows(proto):
    a, b, cube, _ = run_both(prog_perm, proto)
    for got in (a, b, cube.reshape(20, 3)):
        assert got.shape == ROWS.shape
        # rows stay intact: every output row is an input row, each exactly once
        idx = [int(np.flatnonzero((ROWS == r).all(axis=1))[0]) for r in got]
        assert sorted(idx) == list(range(20))
        assert idx != list(range(20))  # not the identity (probability 1/20!)
    assert not np.array_equal(a, b)  # a fresh permutation per call


@pytest.mark.parametrize("proto", PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def test_cost(proto):
    name, n = proto
    res = covault.run(prog_perm, n, name)
    elems = ROWS.size
    for party, (*_, cost) in res.items():
        if party == "dealer":  # sends one correction per step to the permutation holder
            assert cost["bytes_received"] == 0 and cost["rounds"] == 0
            assert cost["bytes_sent"] == 2 * elems * 8
        elif name == "2pc":
            assert cost["rounds"] == 2 and cost["bytes_sent"] == elems * 8
        else:  # each party is in two of the three resharing pairs
            assert cost["rounds"] == 2 and cost["bytes_sent"] == 2 * elems * 8


def prog_small(s):
    x = s.input(owner_value(s, np.array([[0.0], [1.0], [2.0]])), owner=s.compute_parties[0])
    got = [shuffle_rows(x).reveal() for _ in range(90)]
    return None if got[0] is None else [g[:, 0].astype(int).tolist() for g in got]


@pytest.mark.parametrize("proto", PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def test_every_permutation_occurs(proto):
    got = run_both(prog_small, proto)
    counts = {p: 0 for p in itertools.permutations(range(3))}
    for order in got:
        counts[tuple(order)] += 1
    # 90 draws of 6 equally likely outcomes: each expected 15; below 3 has probability < 1e-4
    assert min(counts.values()) >= 3, counts


N = 2000


def prog_transcript(s):
    received = []
    s.net.add_recorder(lambda d, peer, msg: received.extend(msg) if d == "received" else None)
    x = s.constant(np.zeros((N, 1)))  # fixed, structured shares: 0 and the public slot
    y = shuffle_rows(x)
    return received, y.shares.copy()


@pytest.mark.parametrize("proto", PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def test_messages_and_new_shares_look_uniform(proto):
    name, n = proto
    res = covault.run(prog_transcript, n, name)
    for party, (received, shares) in res.items():
        if party == "dealer":
            assert received == [] and shares.size == 0  # the dealer sees no message at all
            continue
        assert received, party
        for msg in received:
            if msg.dtype == np.int64 and msg.size >= N:
                assert bit_balance_z(msg) < 5.5, party
        for comp in shares:
            assert bit_balance_z(comp) < 5.5, party  # a fresh sharing, not the zeros


def prog_together(s):
    a = s.compute_parties[0]
    x = s.input(owner_value(s, ROWS), owner=a)
    label = s.input(owner_value(s, np.arange(20)), owner=a, integer=True)
    xs, ls = shuffle_together([x, label])
    return xs.reveal(), ls.reveal(), ls.frac


@pytest.mark.parametrize("proto", PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def test_shuffle_together_keeps_rows_aligned(proto):
    xs, ls, frac = run_both(prog_together, proto)
    assert frac == 0 and ls.dtype == np.int64
    np.testing.assert_array_equal(xs, ROWS[ls])
    assert sorted(ls.tolist()) == list(range(20))


def test_bad_input():
    def prog(s):
        x = s.input(owner_value(s, np.ones(3)), owner=s.compute_parties[0])
        with pytest.raises(ShapeError):
            shuffle_rows(x.sum())
        with pytest.raises(ShapeError):
            shuffle_together([x, x[:2]])
        with pytest.raises(ShapeError):
            shuffle_together([])
        return True

    run_both(prog, ("rep3", 3))


def prog_tcp(s):
    x = s.input(owner_value(s, ROWS), owner=s.compute_parties[0])
    return shuffle_rows(x).reveal()


@pytest.mark.processes
def test_tcp_shuffle():
    got = run_both(prog_tcp, ("2pc", 2), transport="tcp")
    assert sorted(map(tuple, got)) == sorted(map(tuple, ROWS))


def prog_blocks(s):
    a = s.compute_parties[0]
    x = s.input(owner_value(s, ROWS), owner=a)
    label = s.input(owner_value(s, np.arange(20)), owner=a, integer=True)
    with s.scope() as cost:
        xs, ls = shuffle_together([x, label], in_place=True)
    same = xs is x and ls is label
    return xs.reveal(), ls.reveal(), same, cost.as_dict()


@pytest.mark.parametrize("proto", PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def test_column_blocks_in_place_keep_rows_aligned(proto, monkeypatch):
    """Columns reshared in blocks (2 columns of 20 rows per block: x's first two columns,
    then its third with the label), written into the tensors' own arrays."""
    monkeypatch.setattr(shuffle_module, "SHUFFLE_ELEMS", 40)
    name, n = proto
    res = covault.run(prog_blocks, n, name)
    for party, (xs, ls, same, cost) in res.items():
        assert same, party
        if party != "dealer":
            assert cost["rounds"] == 2 * 2, party  # two blocks per step
        if xs is not None:
            np.testing.assert_array_equal(xs, ROWS[ls])
            assert sorted(ls.tolist()) == list(range(20))
            assert ls.tolist() != list(range(20))


def test_column_blocks():
    assert shuffle_module.column_blocks(10, [3, 1]) == [[(0, slice(0, 3)), (1, slice(0, 1))]]
    big = shuffle_module.SHUFFLE_ELEMS  # a column of this many rows is a block of its own
    assert shuffle_module.column_blocks(big, [2, 1]) == [
        [(0, slice(0, 1))],
        [(0, slice(1, 2))],
        [(1, slice(0, 1))],
    ]
