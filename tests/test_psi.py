"""Private set intersection: results against Python sets, consistent errors, what goes on the wire."""

from __future__ import annotations

import functools
import hashlib
import os
import random

import numpy as np
import pytest

import covault
from covault.errors import CovaultError, PartyError, PeerError, ProtocolError, PsiError
from covault.protocols.psi import PsiResult, group, intersect, protocol
from covault.protocols.psi.ids import canonical_ids

P = 2**255 - 19
A = 486662


# -- programs (module level: the tcp test pickles them) -----------------------------------------
def psi_program(session, data, leader=None, record=False):
    """Run PSI at the parties named in ``data`` (in that order); others return None."""
    if session.party not in data:
        return None
    sent: list[tuple[str, list[np.ndarray]]] = []
    if record:
        session.net.add_recorder(
            lambda d, peer, msg: sent.append((peer, [a.copy() for a in msg])) if d == "sent" else None
        )
    try:
        with session.net.scope() as cost:
            res = intersect(session.net, list(data), data[session.party], leader=leader)
    except CovaultError as e:
        res = e
    return (res, sent, cost.rounds) if record else res


def run_psi(data, leader=None, record=False, transport="local"):
    n = len(data)
    protocol_name = "2pc" if n == 2 else "rep3"
    prog = functools.partial(psi_program, data=data, leader=leader, record=record)
    return covault.run(prog, parties=list(data), protocol=protocol_name, transport=transport)


def canon(v) -> str:
    return v if isinstance(v, str) else str(int(v))


def check_against_sets(data, res):
    want = sorted(set.intersection(*({canon(v) for v in ids} for ids in data.values())))
    for p, ids in data.items():
        r = res[p]
        assert isinstance(r, PsiResult), r
        assert r.ids == want
        assert r.intersection == len(want)
        assert r.sizes == {q: len(v) for q, v in data.items()}
        assert r.index.dtype == np.int64
        assert [canon(ids[j]) for j in r.index] == want


def make_data(rng: random.Random, names, common, extra, kind):
    def ident(k):
        if kind == "str":
            return f"id-{k}"
        if kind == "int":
            return k
        return [k, np.int64(k), f"s{k}"][k % 3]  # mixed int / numpy int / str

    shared = rng.sample(range(10**6), common)
    data = {}
    for j, name in enumerate(names):
        own = [10**7 * (j + 1) + k for k in rng.sample(range(10**6), extra[j])]
        ids = [ident(k) for k in shared + own]
        rng.shuffle(ids)
        data[name] = ids
    return data


# -- correctness ------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "kind"), [(0, "str"), (1, "int"), (2, "mixed"), (3, "mixed")])
def test_two_parties_match_python_sets(seed, kind):
    rng = random.Random(seed)
    data = make_data(rng, ["p0", "p1"], rng.randint(1, 40), [rng.randint(0, 60), rng.randint(0, 60)], kind)
    res = run_psi(data)
    assert res["dealer"] is None
    check_against_sets(data, res)


@pytest.mark.parametrize(("seed", "kind"), [(4, "str"), (5, "mixed")])
def test_three_parties_match_python_sets(seed, kind):
    rng = random.Random(seed)
    names = ["clinic_a", "clinic_b", "clinic_c"]
    data = make_data(rng, names, rng.randint(1, 30), [rng.randint(0, 40) for _ in names], kind)
    # pairwise overlaps outside the common part must not show up
    data["clinic_a"] += ["only-ab", 123456789]
    data["clinic_b"] += ["only-ab", np.int64(123456789)]
    res = run_psi(data)
    check_against_sets(data, res)
    assert "only-ab" not in res["clinic_a"].ids


def test_numpy_and_pandas_like_inputs():
    class Column:  # what a pandas Series offers
        def __init__(self, values):
            self.values = values

        def to_numpy(self):
            return np.asarray(self.values, dtype=object)

    data = {
        "p0": np.array([5, 3, 8, 13], dtype=np.int64),
        "p1": np.array(["13", "8", "21", "x"]),
        "p2": Column(["8", 13, np.int32(1), "y"]),
    }
    res = run_psi(data)
    for p in data:
        assert res[p].ids == ["13", "8"]
    assert res["p0"].index.tolist() == [3, 2]
    assert res["p1"].index.tolist() == [0, 1]
    assert res["p2"].index.tolist() == [1, 0]


def test_result_does_not_depend_on_input_order_or_leader():
    rng = random.Random(7)
    data = make_data(rng, ["p0", "p1", "p2"], 15, [10, 20, 5], "str")
    base = run_psi(data)
    shuffled = {p: rng.sample(v, len(v)) for p, v in data.items()}
    for leader in ["p0", "p1", "p2"]:
        res = run_psi(shuffled, leader=leader)
        check_against_sets(shuffled, res)
        for p in data:
            assert res[p].ids == base[p].ids
            assert res[p] != base[p]  # same ids, other positions
    assert run_psi(data, leader="p1")["p2"] == base["p2"]


@pytest.mark.parametrize("leader", ["p0", "p2"])
def test_leader_receives_the_tags(leader):
    data = {"p0": ["a", "b", "c"], "p1": ["b", "c", "d"], "p2": ["c", "b", "e", "f"]}
    res = run_psi(data, leader=leader, record=True)
    for p in data:
        r, sent, rounds = res[p]
        assert r.ids == ["b", "c"]
        assert rounds == len(data) + 3
        tag_msgs = [peer for peer, msg in sent if msg[0].ndim == 2 and msg[0].shape[1] == protocol.TAG_BYTES]
        assert tag_msgs == ([] if p == leader else [leader])


def test_large_and_unusual_ids():
    data = {"p0": [2**80, -5, "", "é→漢", 0], "p1": [0, str(2**80), "é→漢", "-5", " "]}
    res = run_psi(data)
    for p in data:
        assert res[p].ids == sorted(["0", str(2**80), "é→漢", "-5"])


# -- errors: the same at every party --------------------------------------------------------------
def all_errors(res, data, kind=PsiError):
    errs = {p: res[p] for p in data}
    for p, e in errs.items():
        assert isinstance(e, kind), (p, e)
    return {p: str(e) for p, e in errs.items()}


def test_duplicates_are_reported_at_every_party_without_leaking_the_id():
    data = {
        "clinic_a": ["1", "2", "3"],
        "clinic_b": ["7", "1042", "9", "1042", 1042, "9"],
        "clinic_c": ["1", "2"],
    }
    msgs = all_errors(run_psi(data), data)
    assert "party 'clinic_b': 3 duplicate ids (first: '1042' at position 3)" in msgs["clinic_b"]
    for p in ["clinic_a", "clinic_c"]:
        assert "party 'clinic_b' has 3 duplicate ids" in msgs[p]
        assert "1042" not in msgs[p]


def test_int_and_its_decimal_string_are_the_same_id():
    data = {"p0": [42, "42"], "p1": ["42"]}
    msgs = all_errors(run_psi(data), data)
    assert "party 'p0'" in msgs["p1"] and "duplicate" in msgs["p1"]


def test_empty_inputs_are_reported_at_every_party():
    data = {"p0": ["a"], "p1": [], "p2": np.array([], dtype=np.int64)}
    msgs = all_errors(run_psi(data), data)
    for m in msgs.values():
        assert "party 'p1' has no ids" in m and "party 'p2' has no ids" in m


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (2.5, "(2.5) is a float"),
        (True, "(True) is a bool"),
        (None, "(None) is None"),
        (b"x", "(b'x') is a bytes"),
    ],
)
def test_unsupported_ids_are_reported_at_every_party(bad, shown):
    data = {"p0": ["a", "b"], "p1": ["a", "c", bad]}
    msgs = all_errors(run_psi(data), data)
    assert f"party 'p1': id at position 2 {shown}" in msgs["p1"]
    assert "party 'p1' has ids of an unsupported type" in msgs["p0"]
    assert repr(bad) not in msgs["p0"]


def test_numpy_float_and_bool_arrays_are_refused():
    for arr in (np.array([1.0, 2.0]), np.array([True, False])):
        data = {"p0": arr, "p1": ["1", "2"]}
        msgs = all_errors(run_psi(data), data)
        assert "party 'p0': id at position 0" in msgs["p0"] and "dtype" in msgs["p0"]


def test_empty_intersection_is_reported_at_every_party():
    data = {"p0": ["a", "b"], "p1": ["c"], "p2": ["a", "c", "d"]}
    msgs = all_errors(run_psi(data, record=False), data)
    for m in msgs.values():
        assert "intersection is empty" in m and "'p0': 2, 'p1': 1, 'p2': 3" in m


def test_bad_party_lists_raise_party_errors():
    def prog(session, parties, leader=None):
        try:
            intersect(session.net, parties, ["a"], leader=leader)
        except PartyError as e:
            return str(e)
        return "no error"

    for parties, leader, text in [
        (["p0", "ghost"], None, "not among its peers"),
        (["p0"], None, "at least 2 parties"),
        (["p0", "p0", "p1"], None, "more than once"),
        (["p0", "p1", "p2"], "p9", "leader 'p9'"),
        (["p1", "p2"], None, "not one of the PSI parties"),
    ]:
        res = covault.run(
            lambda s, parties=parties, leader=leader: prog(s, parties, leader) if s.party == "p0" else None, 3
        )
        assert text in res["p0"], (parties, res["p0"])


def test_parties_disagreeing_on_the_leader_all_stop():
    def prog(session):
        if session.party == "dealer":
            return None
        try:
            intersect(session.net, ["p0", "p1"], ["a"], leader=session.party)
        except ProtocolError as e:
            return str(e)

    res = covault.run(prog, 2, "2pc")
    for p in ["p0", "p1"]:
        assert "disagree on the PSI parties or leader: ['p0'] vs ['p1']" in res[p]


def test_malformed_peer_message_names_the_peer():
    def prog(session):
        if session.party == "dealer":
            return None
        if session.party == "p1":  # a broken peer: a status of the wrong shape
            session.net.exchange({"p0": [np.zeros(2, np.int64), np.zeros(32, np.uint8)]}, ["p0"])
            return None
        try:
            intersect(session.net, ["p0", "p1"], ["a"])
        except PeerError as e:
            return str(e)

    assert "party 'p1': sent a malformed status" in covault.run(prog, 2, "2pc")["p0"]


def timeout_program(session):
    if session.party == "dealer":
        return None
    seen = []
    exchange = session.net.exchange

    def spy(*args, **kwargs):
        seen.append(session.net.timeout)
        return exchange(*args, **kwargs)

    session.net.exchange = spy
    ids = {"p0": list(range(100)), "p1": list(range(50, 400))}[session.party]
    intersect(session.net, ["p0", "p1"], ids)
    return seen, session.net.timeout


def test_waits_get_more_time_for_larger_sets_and_the_timeout_is_restored():
    res = covault.run(timeout_program, 2, "2pc", timeout=7.0)
    for p in ["p0", "p1"]:
        seen, after = res[p]
        assert after == 7.0
        assert seen[0] == 7.0  # the status round
        assert seen[1:] == [pytest.approx(7.0 + protocol.WAIT_PER_ID * 450)] * (len(seen) - 1)


# -- what goes on the wire --------------------------------------------------------------------
def test_wire_carries_no_id_bytes_and_no_hashes():
    rng = random.Random(11)
    common = [f"patient-{rng.getrandbits(64):016x}" for _ in range(12)]
    data = {
        p: common + [f"patient-{rng.getrandbits(64):016x}" for _ in range(20 + 7 * j)]
        for j, p in enumerate(["p0", "p1", "p2"])
    }
    res = run_psi(data, record=True)
    everything = set().union(*data.values())
    hashes = group.hash_points(sorted(everything))
    assert all(len(h) == 32 for h in hashes)
    for p in data:
        r, sent, _ = res[p]
        assert r.ids == sorted(common)
        wire = b"".join(a.tobytes() for _, msg in sent for a in msg)
        assert len(wire) > 32 * len(data[p])
        for s in everything:
            assert s.encode() not in wire
            assert s[8:].encode() not in wire
        for h in hashes:
            assert h[:16] not in wire and h[16:] not in wire


def test_each_list_leaves_its_owner_in_a_secret_order(monkeypatch):
    key = group.new_key()
    monkeypatch.setattr(protocol, "new_key", lambda: key)  # same key everywhere: only for this test
    ids = [f"row-{k:04d}" for k in range(60)]
    data = {"p0": ids, "p1": ids[::2]}
    res = run_psi(data, record=True)
    in_input_order = group.power(
        key, np.frombuffer(b"".join(group.hash_points(ids)), np.uint8).reshape(-1, 32), "t"
    )
    first_hop = next(msg[0] for peer, msg in res["p0"][1] if msg[0].shape == (60, 32))
    assert sorted(map(bytes, first_hop)) == sorted(map(bytes, in_input_order))  # the same values...
    assert not np.array_equal(first_hop, in_input_order)  # ...not in input order (1/60! by chance)


def tags_of(*rows):
    return np.array(
        [list(hi.to_bytes(8, "little")) + list(lo.to_bytes(8, "little")) for hi, lo in rows], np.uint8
    )


def test_leader_comparison_is_exact_when_8_byte_prefixes_collide():
    cases = [
        # (list a, list b, expected mask a, expected mask b)
        ([(5, 1), (7, 7)], [(5, 2), (7, 7)], [False, True], [False, True]),  # prefix shared across lists
        ([(5, 1), (5, 2), (9, 9)], [(5, 1), (9, 9)], [True, False, True], [True, True]),  # within a list
        ([(5, 1), (5, 2)], [(5, 2), (5, 1)], [True, True], [True, True]),
        ([(1, 1), (2, 2), (3, 3)], [(3, 3), (4, 4), (1, 1)], [True, False, True], [True, False, True]),
    ]
    for a, b, ma, mb in cases:
        masks, count = protocol._compare(
            {"a": tags_of(*a), "b": tags_of(*b), "c": tags_of(*sorted(set(a) | set(b)))}
        )
        assert masks["a"].tolist() == ma and masks["b"].tolist() == mb and count == sum(ma)
        assert masks["c"].sum() == count
    with pytest.raises(ProtocolError, match="tag collision"):
        protocol._compare({"a": tags_of((5, 1), (5, 1)), "b": tags_of((5, 1))})


# -- the group ----------------------------------------------------------------------------------
def reference_point(s: str) -> int:
    """Elligator 2 (RFC 9380, Z = 2) with plain modular arithmetic."""
    r = int.from_bytes(hashlib.sha512(group.DST + s.encode()).digest(), "little") % P
    u1 = (-A * pow(1 + 2 * r * r, -1, P)) % P
    gx = (u1**3 + A * u1 * u1 + u1) % P
    return u1 if pow(gx, (P - 1) // 2, P) == 1 else (-A - u1) % P


def available_backends():
    out = []
    for name in group.BACKENDS:
        try:
            out.append((name, group.load_backend(name)))
        except (OSError, AttributeError):
            continue
    return out


def test_hash_to_curve_matches_reference_on_every_backend():
    ids = [f"x{k}" for k in range(300)] + ["", "é"]
    want = [reference_point(s) for s in ids]
    backends = available_backends()
    assert "python" in [n for n, _ in backends]
    for name, fn in backends:
        got = [int.from_bytes(u, "little") for u in group.hash_points(ids, fn)]
        assert got == want, name
    assert all(group.on_curve(u.to_bytes(32, "little")) for u in want)
    # about half of the first candidates are on the twist: the map really has to choose
    firsts = [
        (
            -A
            * pow(
                1 + 2 * (int.from_bytes(hashlib.sha512(group.DST + s.encode()).digest(), "little") % P) ** 2,
                -1,
                P,
            )
        )
        % P
        for s in ids
    ]
    assert 100 < sum(group.on_curve(u.to_bytes(32, "little")) for u in firsts) < 200


def test_legendre_backend_can_be_forced(monkeypatch):
    monkeypatch.setattr(group, "_chosen", None)
    monkeypatch.setenv("COVAULT_PSI_LEGENDRE", "python")
    assert group.legendre_backend()[0] == "python"
    monkeypatch.setattr(group, "_chosen", None)
    monkeypatch.setenv("COVAULT_PSI_LEGENDRE", "magic")
    with pytest.raises(ProtocolError, match="COVAULT_PSI_LEGENDRE='magic'"):
        group.legendre_backend()


def test_jacobi_matches_euler_criterion():
    for _ in range(200):
        a = int.from_bytes(os.urandom(33), "little")
        e = pow(a, (P - 1) // 2, P)
        assert group.jacobi(a) == (0 if a % P == 0 else (1 if e == 1 else -1))


def test_exponentiation_commutes_and_stays_on_the_curve():
    pts = np.frombuffer(b"".join(group.hash_points([str(k) for k in range(50)])), np.uint8).reshape(-1, 32)
    k1, k2 = group.new_key(), group.new_key()
    a = group.power(k2, group.power(k1, pts, "t"), "t")
    b = group.power(k1, group.power(k2, pts, "t"), "t")
    assert np.array_equal(a, b)
    assert all(group.on_curve(bytes(row)) for row in a)
    assert len({bytes(row) for row in a}) == 50


def test_small_order_point_from_a_peer_is_a_peer_error():
    rows = np.zeros((3, 32), np.uint8)  # u = 0: the point of order 2
    with pytest.raises(PeerError, match=r"party .p1.: .*small order"):
        group.power(group.new_key(), rows, "the list of 'p0' from 'p1'", peer="p1")


def test_canonical_ids_rules():
    assert canonical_ids([7, np.uint64(2**64 - 1), np.str_("a"), "b"]) == ["7", str(2**64 - 1), "a", "b"]
    assert canonical_ids(np.array([3, 1], dtype=np.int32)) == ["3", "1"]
    for bad in ("abc", b"abc", None, 5, np.zeros((2, 2), np.int64), ["\udc80"], [10**5000], [np.float32(1)]):
        assert not isinstance(canonical_ids(bad), list), bad


# -- over real processes ------------------------------------------------------------------------
@pytest.mark.processes
def test_two_parties_over_tcp():
    data = {"p0": [f"u{k}" for k in range(40)], "p1": [f"u{k}" for k in range(30, 90)] + [5]}
    res = run_psi(data, transport="tcp")
    check_against_sets(data, res)
