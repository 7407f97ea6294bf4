"""One private query in a long-lived session (covault.serving.online): only the client gets
the answer, equal to the plaintext model's; the model owner takes no part in queries."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault.errors import ProtocolError, ShapeError
from covault.serving.online import Query, affine
from covault.transport.transcript import read_transcript
from tests.helpers import ULP

OWNER, CLIENT = "owner", "client"
G = np.random.default_rng(77)  # test data only
W1, B1 = G.uniform(-1, 1, (4, 5)), G.uniform(-1, 1, 5)
W2, B2 = G.uniform(-1, 1, (5, 2)), G.uniform(-1, 1, 2)
ROWS = [G.uniform(-3, 3, (1, 4)), G.uniform(-3, 3, (3, 4)), np.zeros((1, 4)), G.uniform(-3, 3, (1, 4))]
ROWS += [G.uniform(-3, 3, (2, 4))]  # row counts 1, 3, 1, 1, 2: dealt ahead, used up, in line


def plain_logits(x):
    return np.maximum(x @ W1 + B1, 0) @ W2 + B2


def serve(s):
    mine = s.party == OWNER
    m = [s.input(v if mine else None, owner=OWNER, bound=2.0) for v in (W1, B1, W2, B2)]

    def logits(x, exact=False):
        return affine(affine(x, m[0], m[1]).relu(), m[2], m[3], exact=exact)

    client = s.party == CLIENT
    logits_out, argmax_out = [], []
    with Query(s, CLIENT, 4, logits, bound=4.0, pool=True) as q:
        for rows in ROWS:
            with s.scope() as cost:
                z = q(rows if client else None)
            logits_out.append((z, cost.as_dict()["bytes_sent"] + cost.as_dict()["bytes_received"]))
    with Query(s, CLIENT, 4, lambda x: logits(x, exact=True).argmax(axis=-1), bound=4.0) as q:
        argmax_out = [q(rows if client else None) for rows in ROWS]
    after = (m[0] * m[0]).reveal(to=CLIENT)  # the dealer stream is the session's again
    return [(z, k, moved) for (z, moved), k in zip(logits_out, argmax_out)], after


@pytest.mark.parametrize("transport", ["local", "tcp"])
@pytest.mark.parametrize("protocol,n", [("2pc", 2), ("rep3", 3)])
def test_only_the_client_gets_the_plaintext_answer(protocol, n, transport):
    res = covault.run(serve, n, protocol, transport=transport, data_parties=[OWNER, CLIENT])
    for party, (out, after) in res.items():
        if party == CLIENT:
            np.testing.assert_allclose(after, W1 * W1, atol=4 * ULP)
        for rows, (z, k, moved) in zip(ROWS, out):
            if party != CLIENT:
                assert z is None and k is None
                if party == OWNER:
                    assert moved == 0  # the owner takes no part in queries
                continue
            want = plain_logits(rows)
            np.testing.assert_allclose(z, want, atol=64 * ULP)
            np.testing.assert_array_equal(k, np.eye(2, dtype=np.int64)[np.argmax(want, axis=-1)])


def test_affine_exact_keeps_the_product_bits_and_falls_back():
    """``exact=True``: the product's 2f bits, the plaintext value exactly; without tight
    bounds it truncates like ``exact=False``."""
    x0, w0, b0 = G.uniform(-2, 2, (3, 4)), G.uniform(-2, 2, (4, 2)), G.uniform(-2, 2, 2)

    def prog(s):
        a = s.compute_parties[0]
        x, w, b = (s.input(v if s.party == a else None, owner=a, bound=2.0) for v in (x0, w0, b0))
        wx, ww = (s.input(v if s.party == a else None, owner=a) for v in (x0, w0))  # default bounds
        e, t, f = affine(x, w, b, exact=True), affine(x, w, b), affine(wx, ww, b, exact=True)
        return (e.frac, t.frac, f.frac), e.reveal(), t.reveal(), f.reveal()

    for name, n in (("2pc", 2), ("rep3", 3)):
        res = covault.run(prog, n, name)
        fracs, e, t, f = res["p0"]
        assert fracs == (32, 16, 16)
        enc = [np.round(v * 2**16) / 2**16 for v in (x0, w0, b0)]
        want = enc[0] @ enc[1] + enc[2]
        np.testing.assert_allclose(e, want, atol=1e-9)
        np.testing.assert_allclose(t, want, atol=4 * ULP)
        np.testing.assert_allclose(f, want, atol=4 * ULP)


def test_malformed_rows_and_a_compute_client_are_refused():
    def bad_rows(s):
        q = Query(s, CLIENT, 4, lambda x: x)
        return q(np.zeros((2, 3)) if s.party == CLIENT else None)

    with pytest.raises(ShapeError, match=r"query of client 'client'.*shape \(n, 4\).*\(2, 3\)"):
        covault.run(bad_rows, 2, "2pc", data_parties=[CLIENT], timeout=10)

    def compute_client(s):
        Query(s, "p0", 4, lambda x: x)

    with pytest.raises(ProtocolError, match="'p0' must be a data party"):
        covault.run(compute_client, 3, "rep3", timeout=10)


def test_a_dealt_query_holds_the_dealer_stream():
    """While the next query is dealt ahead, a step that needs dealt randomness raises (it would
    take the query's tuples out of order); after the with-block it runs."""

    def prog(s):
        x = s.input(np.ones(3) if s.party == "p0" else None, owner="p0")
        with Query(s, CLIENT, 3, lambda r: r * r, pool=True) as q:
            q(np.ones((1, 3)) if s.party == CLIENT else None)
            if s.party in ("p0", "p1", "dealer"):
                with pytest.raises(ProtocolError, match="dealt ahead: leave the query's with-block"):
                    x * x
        return (x * x).reveal()

    res = covault.run(prog, 2, "2pc", data_parties=[CLIENT])
    np.testing.assert_allclose(res["p0"], np.ones(3), atol=4 * ULP)


@pytest.mark.parametrize("protocol,n", [("2pc", 2), ("rep3", 3)])
def test_the_transcripts_hold_neither_the_query_nor_the_answer(protocol, n, tmp_path):
    """Every message a compute party or the dealer receives, read from all parties' transcripts:
    none holds a word of the encoded query row or of the answer the client opens."""
    row = np.array([[1.2345, -2.5, 0.75, 2.875]])

    def prog(s):
        m = [s.input(v if s.party == OWNER else None, owner=OWNER, bound=2.0) for v in (W1, B1, W2, B2)]
        fn = lambda x: affine(affine(x, m[0], m[1]).relu(), m[2], m[3])  # noqa: E731
        with Query(s, CLIENT, 4, fn, bound=4.0, pool=True) as q:
            return [q(row if s.party == CLIENT else None) for _ in range(2)]

    res = covault.run(prog, n, protocol, transcript_dir=tmp_path, data_parties=[OWNER, CLIENT])
    answer = res[CLIENT][0]
    np.testing.assert_allclose(answer, plain_logits(row), atol=64 * ULP)
    secret = set(np.round(row * 2**16).astype(np.int64).ravel()) | set(
        np.round(answer * 2**16).astype(np.int64).ravel()
    )
    servers = {f"p{i}" for i in range(n)} | ({"dealer"} if protocol == "2pc" else set())
    seen = 0
    for path in tmp_path.glob("*.transcript"):
        _, messages = read_transcript(path)
        for msg in messages:
            if msg["to"] not in servers:
                continue
            for a in msg["arrays"]:
                if a.dtype == np.int64:
                    seen += a.size
                    assert not secret & set(a.ravel().tolist()), f"{path.name} -> {msg['to']}"
    assert seen > 200  # the shares of the model and the rows, and every round


@pytest.mark.parametrize("protocol,n", [("2pc", 2), ("rep3", 3)])
def test_a_query_shares_its_rows_in_one_round(protocol, n):
    """The row count travels with the shares: sharing and opening, two rounds in all."""

    def prog(s):
        with Query(s, CLIENT, 4, lambda x: x * 2) as q, s.scope() as cost:
            out = q(ROWS[1] if s.party == CLIENT else None)
        return out, cost.as_dict()["rounds"]

    res = covault.run(prog, n, protocol, data_parties=[CLIENT])
    np.testing.assert_allclose(res[CLIENT][0], ROWS[1] * 2, atol=4 * ULP)
    for party in res:
        if party.startswith("p"):
            assert res[party][1] == 2, party
