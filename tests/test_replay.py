"""The dealer's provider calls of a single-row query, recorded once and replayed."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault import ring
from covault.randomness.prg import PRG
from covault.randomness.replay import Recorder, _plain, replay
from covault.serving.online import Query, affine

CLIENT = "client"
G = np.random.default_rng(5)  # test data only
W1, B1 = G.uniform(-1, 1, (4, 6)), G.uniform(-1, 1, 6)
W2, B2 = G.uniform(-1, 1, (6, 2)), G.uniform(-1, 1, 2)
ROWS = G.uniform(-3, 3, (6, 4))


def plain_decision(x):
    z = np.maximum(x @ W1 + B1, 0) @ W2 + B2
    return np.eye(2, dtype=np.int64)[np.argmax(z, axis=-1)]


def run(fn_of_session, protocol="2pc", n=2):
    def prog(s):
        weights = [s.input(v if s.party == "p0" else None, owner="p0", bound=2.0) for v in (W1, B1, W2, B2)]
        fn = fn_of_session(s, weights)
        out = []
        with Query(s, CLIENT, 4, fn, bound=4.0, pool=True) as q:
            for i in range(len(ROWS)):
                out.append(q(ROWS[i : i + 1] if s.party == CLIENT else None))
            traced = q._trace is not None
        return out, traced

    return covault.run(prog, n, protocol, data_parties=[CLIENT])


def mlp(s, m):
    return lambda x: affine(affine(x, m[0], m[1]).relu(), m[2], m[3], exact=True).argmax(axis=-1)


def test_the_dealer_replays_a_query_and_the_answers_stay_right():
    res = run(mlp)
    assert res["dealer"][1]  # recorded at the first query, replayed since
    assert not res["p0"][1] and not res["client"][1]  # only the dealer records
    for i, got in enumerate(res[CLIENT][0]):
        np.testing.assert_array_equal(got, plain_decision(ROWS[i : i + 1]))


def test_fss_gates_replay_too():
    def sig(s, m):
        return lambda x: (x @ m[0][:, :1] + m[1][:1]).sigmoid()  # the FSS sigmoid of one element

    res = run(sig)
    assert res["dealer"][1]
    for i, got in enumerate(res[CLIENT][0]):
        want = 1 / (1 + np.exp(-(ROWS[i : i + 1] @ W1[:, :1] + B1[:1])))
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_a_draw_outside_the_provider_is_never_replayed():
    """A program that draws from the dealer's streams itself: a replay would skip that draw and
    put the dealer out of step with P0 (wrong answers); it runs the program each time."""

    def drawing(s, m):
        def fn(x):
            if s.party == s.dealer:
                s.protocol.prg["p0"].words(3, np.int64)
            elif s.party == "p0":
                s.protocol.prg[s.dealer].words(3, np.int64)
            return mlp(s, m)(x)

        return fn

    res = run(drawing)
    assert not res["dealer"][1]
    for i, got in enumerate(res[CLIENT][0]):
        np.testing.assert_array_equal(got, plain_decision(ROWS[i : i + 1]))


def test_rep3_has_no_dealer_to_replay():
    res = run(mlp, "rep3", 3)
    assert not any(traced for _, traced in res.values())
    for i, got in enumerate(res[CLIENT][0]):
        np.testing.assert_array_equal(got, plain_decision(ROWS[i : i + 1]))


class _Provider:
    """Draws like a dealer: ``beaver`` from its stream; ``noted`` keeps what it was given."""

    deals_mask_products = True

    def __init__(self, g: PRG):
        self.g, self.noted = g, []

    def beaver(self, sx, sy, sz, op):
        self.noted.append(self.g.words(sx, np.int64).copy())

    def dabit(self, shape):
        self.noted.append(self.g.words(shape, np.int64).copy())

    def ot_triples(self, n):  # a method whose dealer side is not known to be replayable
        self.noted.append(self.g.words(n, np.int64).copy())


def test_a_replay_draws_what_the_recorded_run_drew():
    seed = bytes(range(16))
    live, again = _Provider(PRG(seed)), _Provider(PRG(seed))
    rec = Recorder(live, {"p0": live.g})
    assert rec.deals_mask_products  # attributes read through
    rec.beaver((2,), (2, 3), (3,), ring.matmul)
    rec.dabit((4,))
    assert rec.replayable and [c[0] for c in rec.calls] == ["beaver", "dabit"]
    replay(again, rec.calls)
    again.beaver((2,), (2, 3), (3,), ring.matmul)  # and the streams stay in step
    live.beaver((2,), (2, 3), (3,), ring.matmul)
    for a, b in zip(live.noted, again.noted, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_draw_outside_the_calls_or_a_stateful_argument_is_not_replayable():
    g = PRG(bytes(16))
    rec = Recorder(_Provider(g), {"p0": g})
    rec.dabit((2,))
    g.words(1, np.int64)  # the program drew itself
    assert not rec.replayable

    rec = Recorder(_Provider(g), {"p0": g})
    rec.ot_triples(2)
    assert not rec.replayable

    table = np.zeros(3)
    rec = Recorder(_Provider(g), {"p0": g})
    rec.beaver((1,), (1,), (1,), lambda a, b: a * b + table[0])  # a closure over an array
    assert not rec.replayable


@pytest.mark.parametrize(
    "arg,ok",
    [
        ((1, (2, 3)), True),
        (np.dtype(np.uint32), True),
        (np.uint64(7), True),
        (np.multiply, True),
        (ring.matmul, True),
        ((lambda r: r + np.uint64(3)), True),
        (np.zeros(2), False),
        ([1, 2], False),
        (object(), False),
        (dict, False),
        (np.uint8, True),
    ],
)
def test_plain_arguments(arg, ok):
    assert _plain(arg) is ok


def test_a_closure_over_plain_values_is_plain_and_over_an_object_is_not():
    n, full = 5, np.uint64(31)

    def make(r):
        return r & full, n

    box = {"n": 1}

    def stateful(r):
        return r + box["n"]

    assert _plain(make) and not _plain(stateful)

    count = 0

    def counting(r):
        nonlocal count
        count += 1
        return r

    def unbound(r):
        return r + late

    assert not _plain(counting) and not _plain(unbound)  # it writes its cell; an empty cell
    late = 1
    assert _plain(unbound)


def test_a_query_function_that_changes_is_refused_not_answered_wrongly():
    """``fn`` takes other steps after its first call: the dealer's replay is out of step with
    the compute parties, which find its stream drawn by other amounts and raise."""

    def changing(s, m):
        calls = []

        def fn(x):
            calls.append(1)
            y = x if len(calls) == 1 else x[:, :2]  # a smaller product after the first call
            return y * y

        return fn

    with pytest.raises(covault.ProtocolError, match=r"do not f(ollow|it) this party's"):
        run(changing)

    def same_count(s, m):  # a product of the same size, then a comparison: other draws, no error
        calls = []

        def fn(x):
            calls.append(1)
            return x * x if len(calls) == 1 else (x > 0) * 1

        return fn

    with pytest.raises(covault.ProtocolError, match=r"do not f(ollow|it) this party's"):
        run(same_count)
