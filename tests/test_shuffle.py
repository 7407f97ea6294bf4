"""Oblivious shuffle: the output is a permutation of the rows, different each call, uniform, and
no party sees anything but uniformly masked messages."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

import covault
from covault.errors import ProtocolError, ShapeError
from covault.ops import benes
from covault.ops import shuffle as shuffle_module
from covault.ops.shuffle import shuffle_rows, shuffle_together
from tests.helpers import IDS, PROTOCOLS, VARIANTS, bit_balance_z, owner_value, run_both

ROWS = np.arange(60.0).reshape(20, 3) + 0.25  # distinct rows


def prog_perm(s):
    x = s.input(owner_value(s, ROWS), owner=s.compute_parties[0])
    with s.scope() as cost:
        a = shuffle_rows(x)
    b = shuffle_rows(x)
    cube = shuffle_rows(x.reshape(20, 3, 1))
    return a.reveal(), b.reveal(), cube.reveal(), cost.as_dict()


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
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


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
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


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_messages_and_new_shares_look_uniform(proto):
    name, n = proto
    res = covault.run(prog_transcript, n, name)  # with the variant's provider (conftest)
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


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
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


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_column_blocks_in_place_keep_rows_aligned(proto, monkeypatch):
    """Columns reshared in blocks (2 columns of 20 rows per block: x's first two columns,
    then its third with the label), written into the tensors' own arrays."""
    monkeypatch.setattr(shuffle_module, "SHUFFLE_ELEMS", 40)
    monkeypatch.setattr(shuffle_module, "OT_WORDS", 2 * 72)  # 72 switches on 20 wires
    name, n = proto
    provider = proto.provider
    res = covault.run(prog_blocks, n, name)
    flights = 2 if provider == "ot" else 1  # an OT call: the holder's u, the other's reply
    for party, (xs, ls, same, cost) in res.items():
        assert same, party
        if party != "dealer":
            assert cost["rounds"] >= 2 * 2 * flights, party  # two blocks per step
            if provider is None:
                assert cost["rounds"] == 2 * 2, party
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


# -- 2pc without a dealer: Beneš networks over correlated OT ------------------------------------


@pytest.mark.parametrize("n", [*range(0, 40), 64, 100, 127, 128, 129, 1000])
def test_benes_routing_realises_every_permutation(n):
    """The switch bits, applied in the clear, give ``x[perm]`` for random permutations and for
    the extreme ones (identity, reversal, the perfect shuffle); the structure is the same for
    every permutation, no slot twice in a layer, and as many switches as the recursion says."""
    rng = np.random.default_rng(n)  # test permutations, not secret
    x = np.arange(n)
    public = benes.network(n)
    perms = [rng.permutation(n) for _ in range(100 if n <= 64 else 10)]
    perms += [x, x[::-1], np.concatenate([x[0::2], x[1::2]])]
    for perm in perms:
        net, bits = benes.route(perm)
        assert (
            len(bits)
            == len(net.lo)
            == benes.layer_count(n)
            == max(0, 2 * int(np.ceil(np.log2(max(n, 1)))) - 1)
        )
        for lo, hi, b, plo, phi in zip(net.lo, net.hi, bits, public.lo, public.hi):
            assert np.array_equal(lo, plo) and np.array_equal(hi, phi)
            slots = np.concatenate([lo, hi])
            assert np.unique(slots).size == slots.size and b.shape == lo.shape and set(np.unique(b)) <= {0, 1}
        np.testing.assert_array_equal(net.out, public.out)
        np.testing.assert_array_equal(benes.apply(x, net, bits), x[perm])
        np.testing.assert_array_equal(benes.apply(x[:, None] * 2, net, bits)[:, 0], x[perm] * 2)
    assert public.switches == _switches(n)
    if n >= 4:  # distinct permutations route to distinct settings
        settings = {tuple(np.concatenate(benes.route(p)[1])) for p in perms}
        assert len(settings) == len({tuple(p) for p in perms})


def _switches(m: int) -> int:
    return 0 if m < 2 else 1 if m == 2 else 2 * (m // 2) + _switches(m // 2) + _switches(m - m // 2)


def test_benes_sizes_and_bad_input():
    assert [benes.layer_count(n) for n in (0, 1, 2, 3, 4, 5, 1000, 1024, 1025)] == [
        0,
        0,
        1,
        3,
        3,
        5,
        19,
        19,
        21,
    ]
    assert benes.network(16384).switches == 14 * 16384 - 8192  # n log2 n - n/2
    assert benes.network(10_000).switches == 125_120
    with pytest.raises(ShapeError, match="not a permutation"):
        benes.route(np.array([0, 0, 1, 2]))
    net, bits = benes.route(np.arange(4))
    with pytest.raises(ShapeError, match="layers"):
        benes.apply(np.arange(4), net, bits[:1])


def prog_sizes(s, rows):
    a = s.compute_parties[0]
    data = np.arange(rows * 2, dtype=float).reshape(rows, 2) * 0.5 - 3.0
    x = s.input(owner_value(s, data), owner=a)
    label = s.input(owner_value(s, np.arange(rows)), owner=a, integer=True)
    xs, ls = shuffle_together([x, label])
    return data, xs.reveal(), ls.reveal(), shuffle_rows(label).reveal()


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 1000])
def test_ot_shuffle_any_row_count(rows):
    """Any row count (the network has ``n`` wires): the result is the multiset of input rows,
    rows intact, labels aligned."""
    data, xs, ls, again = run_both(functools.partial(prog_sizes, rows=rows), ("2pc", 2), provider="ot")
    assert sorted(ls.tolist()) == list(range(rows))
    np.testing.assert_array_equal(xs, data[ls])
    assert sorted(map(tuple, xs)) == sorted(map(tuple, data))
    assert sorted(again.tolist()) == list(range(rows))
    if rows == 1000:  # two draws coincide with probability 1/1000!
        assert ls.tolist() != list(range(rows)) and ls.tolist() != again.tolist()


def prog_ot_cost(s):
    a = s.compute_parties[0]
    x = s.input(owner_value(s, ROWS), owner=a)
    label = s.input(owner_value(s, np.arange(20)), owner=a, integer=True)
    (x[:2] * x[:2]).reveal()  # the OT extensions' base OTs, outside the measured scope
    with s.scope() as cost:
        xs, ls = shuffle_together([x, label])
    return xs.reveal(), ls.reveal(), cost.as_dict()


@pytest.mark.parametrize("words", [None, 2 * 72])
def test_ot_shuffle_cost(words, monkeypatch):
    """Per step and column block: one OT call of one correlated OT per switch (72 on 20 wires),
    the holder's ``u`` (16 bytes per OT, whole 64-OT tiles, and a 24-byte header) and the
    other's reply (8 bytes per word), one flight each way."""
    if words is not None:
        monkeypatch.setattr(shuffle_module, "OT_WORDS", words)  # blocks of 2 columns, then 2
    res = covault.run(prog_ot_cost, 2, "2pc", provider="ot")
    ots = 72
    blocks = [4] if words is None else [2, 2]
    u = 24 + 128 * (-(-ots // 64) * 8)
    for party, (xs, ls, cost) in res.items():
        np.testing.assert_array_equal(xs, ROWS[ls])
        # each party holds one step (sends u) and answers the other (sends the reply)
        assert cost["bytes_sent"] == sum(u + ots * w * 8 for w in blocks), party
        assert cost["rounds"] == 2 * 2 * len(blocks), party


@pytest.mark.processes
def test_tcp_ot_shuffle():
    got = run_both(prog_tcp, ("2pc", 2), provider="ot", transport="tcp")
    assert sorted(map(tuple, got)) == sorted(map(tuple, ROWS))


def test_ot_permutation_refuses_a_holder_outside_the_computation_and_missing_bits():
    """``permute_2pc`` names the problem at once instead of both parties waiting as senders."""

    def prog(s):
        net = benes.network(4)
        z = np.zeros((4, 2), np.int64)
        with pytest.raises(ProtocolError, match="holder 'nobody' is not a compute party"):
            benes.permute_2pc(s.protocol, z, "nobody", net, None)
        if s.party == s.compute_parties[0]:
            with pytest.raises(ProtocolError, match="switch bits for"):
                benes.permute_2pc(s.protocol, z, s.party, net, None)
        return True

    assert all(covault.run(prog, 2, "2pc", provider="ot").values())


def test_variants_survive_copy_and_pickle():
    import copy
    import pickle

    from tests.helpers import Variant

    v = Variant("2pc", 2, "ot")
    for w in (copy.copy(v), copy.deepcopy(v), pickle.loads(pickle.dumps(v))):
        assert tuple(w) == ("2pc", 2) and w.provider == "ot" and w.id == "2pc-ot"
