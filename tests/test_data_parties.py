"""Data owners outside the compute set: they input and receive reveals, and hold no shares."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import covault
from tests.helpers import ULP

BANKS = ("bank_d", "bank_e")
ROWS = {b: np.arange(6.0).reshape(3, 2) * (i + 1) - 2 for i, b in enumerate(BANKS)}


def prog(s):
    parts = [s.input(ROWS[b] if s.party == b else None, owner=b) for b in BANKS]
    x = covault.concatenate(parts, axis=0)
    total = (x * x).sum(axis=0)
    flag = (x > 1.0).sum()
    with s.scope() as cost:
        mine = total.reveal(to=s.data_parties[0])
    return mine, flag.reveal(to=list(s.parties)), x.shares.shape[0], cost.as_dict(), s.parties


@pytest.mark.parametrize("transport", ["local", "tcp"])
@pytest.mark.parametrize("protocol,n", [("2pc", 2), ("rep3", 3)])
def test_data_parties_input_and_receive(protocol, n, transport):
    res = covault.run(prog, n, protocol, transport=transport, data_parties=BANKS)
    pooled = np.concatenate([ROWS[b] for b in BANKS])
    want_total, want_flag = (pooled**2).sum(0), (pooled > 1).sum()
    order = (*(f"p{i}" for i in range(n)), *(("dealer",) if protocol == "2pc" else ()), *BANKS)
    assert tuple(res) == order
    for party, (mine, flag, ncomp, cost, parties) in res.items():
        assert parties == order  # every party, data parties included, sees the same order
        assert flag == want_flag
        if party == BANKS[0]:
            np.testing.assert_allclose(mine, want_total, atol=20 * ULP)
            assert cost["bytes_received"] == n * 2 * 8  # one component from each compute party
        else:
            assert mine is None
        if party in BANKS or party == "dealer":
            assert ncomp == 0  # no shares outside the compute parties
        if party == BANKS[1]:
            assert cost["bytes_sent"] == 0 and cost["bytes_received"] == 0


def rows_prog(s):
    """bank_d shares 3 rows whose count only it knows (``share_rows``), in one round."""
    rows = s.fxp.encode(ROWS["bank_d"]) if s.party == "bank_d" else None
    with s.scope() as cost:  # bank_e takes no part (it would raise PartyError)
        shares = (
            s.protocol.empty((0, 2)) if s.party == "bank_e" else s.protocol.share_rows(rows, "bank_d", 2, 8)
        )
    x = covault.SecretTensor(s, shares, s.frac_bits, s.fxp.max_abs)
    return x.reveal(to="bank_e"), shares.shape, cost.as_dict()


@pytest.mark.parametrize("transport", ["local", "tcp"])
@pytest.mark.parametrize("protocol,n", [("2pc", 2), ("rep3", 3)])
def test_rows_of_unknown_count_are_shared_in_one_round(protocol, n, transport):
    res = covault.run(rows_prog, n, protocol, transport=transport, data_parties=BANKS)
    ncomp = {"2pc": 1, "rep3": 2}[protocol]
    for party, (seen, shape, cost) in res.items():
        if party == "bank_e":
            np.testing.assert_allclose(seen, ROWS["bank_d"], atol=ULP)
            assert cost["rounds"] == 0 and cost["bytes_received"] == 0  # takes no part
            continue
        assert seen is None and shape[1:] == (3, 2)
        assert shape[0] == (ncomp if party.startswith("p") else 0)
        assert cost["rounds"] == 1
        if party == "bank_d":  # the count to each receiver, the components it cannot draw
            receivers = n + (protocol == "2pc")
            comps = {"2pc": 1, "rep3": 4}[protocol]
            assert cost["bytes_sent"] == 8 * receivers + 3 * 2 * 8 * comps


@pytest.mark.parametrize("protocol,n", [("2pc", 2), ("rep3", 3)])
@pytest.mark.parametrize(
    "message,match",
    [
        ([np.array([0])], "announced 0 rows"),
        ([np.array([9])], "announced 9 rows"),
        ([np.array([1.0])], "sent no row count"),
        ([np.array([-1])], "announced -1 rows"),
        ("float", r"expected .* int64 component.*got \['float64\(3, 2\)'"),
        ([], "sent no row count"),
        ("wrong", "expected .* component"),
    ],
)
def test_a_bad_row_count_or_component_is_refused_by_every_receiver(protocol, n, message, match):
    def prog(s):
        if s.party == "bank_d":  # a client that does not follow share_rows
            sends = {}
            for p in (*s.compute_parties, *((s.dealer,) if s.dealer else ())):
                if message == "wrong":
                    sends[p] = [np.array([3]), np.zeros((3, 5), np.int64)]
                elif message == "float":
                    sends[p] = [np.array([3]), *[np.zeros((3, 2))] * (2 if p == "p2" else 1)]
                else:
                    sends[p] = message
            s.net.exchange(sends)
            return "sent"
        if s.party == "bank_e":
            return None
        try:
            s.protocol.share_rows(None, "bank_d", 2, 8)
        except covault.ShapeError as exc:
            return str(exc)
        return "accepted"

    res = covault.run(prog, n, protocol, data_parties=BANKS, timeout=10)
    for party, out in res.items():
        if party in BANKS:
            continue
        if message in ("wrong", "float") and party in ("p0", "dealer") and protocol == "2pc":
            assert (
                out
                == f"input of 'bank_d' at {party!r}: expected 0 int64 component(s) of shape (3, 2), got "
                + ("['int64(3, 5)']" if message == "wrong" else "['float64(3, 2)']")
            )
            continue
        assert out != "accepted" and "bank_d" in out
        assert re.search(match, out), out


def test_a_party_outside_the_rows_takes_no_part():
    def prog(s):
        if s.party == "bank_e":
            with pytest.raises(covault.PartyError, match="party 'bank_e' takes no part in 'bank_d''s rows"):
                s.protocol.share_rows(None, "bank_d", 2, 8)
        elif s.party != "bank_d":
            s.protocol.share_rows(None, "bank_d", 2, 8)
        else:
            s.protocol.share_rows(np.zeros((1, 2), np.int64), "bank_d", 2, 8)
        return True

    assert all(covault.run(prog, 3, "rep3", data_parties=BANKS).values())


def test_rows_are_checked_at_their_owner():
    def prog(s):
        rows = np.zeros((9, 2), np.int64) if s.party == "bank_d" else None
        if s.party == "bank_d":
            with pytest.raises(
                covault.ShapeError,
                match=r"'bank_d' must be ring words \(int64\) of shape \(n, 2\), 1 <= n <= 8, got int64\(9, 2\)",
            ):
                s.protocol.share_rows(rows, "bank_d", 2, 8)
            with pytest.raises(covault.PartyError, match="'p0' must be a data party"):
                s.protocol.share_rows(rows, "p0", 2, 8)
        return True

    assert all(covault.run(prog, 2, "2pc", data_parties=BANKS).values())


def test_data_party_shares_look_uniform_and_names_are_checked():
    with pytest.raises(covault.PartyError, match="data party 'p0'"):
        covault.run(prog, 3, "rep3", data_parties=("p0",))


def dying_data_party(s):
    """bank_e's process dies without a word; everyone else waits for its input."""
    if s.party == "bank_e":
        os._exit(3)
    try:
        return s.input(None, owner="bank_e").reveal()
    except covault.PeerError as exc:
        (Path(os.environ["COVAULT_TEST_OUT"]) / s.party).write_text(str(exc))
        raise


@pytest.mark.processes
def test_data_party_process_dying_stops_everyone_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COVAULT_TEST_OUT", str(tmp_path))  # inherited by the party processes
    with pytest.raises(covault.CovaultError, match=r"party 'bank_e': process exited \(code 3\)"):
        covault.run(dying_data_party, 3, "rep3", transport="tcp", data_parties=BANKS, timeout=60.0)
    for p in ("p0", "p1", "p2", "bank_d"):  # each stopped at once with an error naming bank_e
        assert (tmp_path / p).read_text().startswith("party 'bank_e': connection "), p
