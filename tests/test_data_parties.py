"""Data owners outside the compute set: they input and receive reveals, and hold no shares."""

from __future__ import annotations

import os
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
