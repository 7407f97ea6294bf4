"""Data owners outside the compute set: they input and receive reveals, and hold no shares."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from tests.conftest import ULP

BANKS = ("bank_d", "bank_e")
ROWS = {b: np.arange(6.0).reshape(3, 2) * (i + 1) - 2 for i, b in enumerate(BANKS)}


def prog(s):
    parts = [s.input(ROWS[b] if s.party == b else None, owner=b) for b in BANKS]
    x = covault.concatenate(parts, axis=0)
    total = (x * x).sum(axis=0)
    flag = (x > 1.0).sum()
    with s.scope() as cost:
        mine = total.reveal(to=s.data_parties[0])
    return mine, flag.reveal(to=list(s.parties)), x.shares.shape[0], cost.as_dict()


@pytest.mark.parametrize("protocol,n", [("2pc", 2), ("rep3", 3)])
def test_data_parties_input_and_receive(protocol, n):
    res = covault.run(prog, n, protocol, data_parties=BANKS)
    pooled = np.concatenate([ROWS[b] for b in BANKS])
    want_total, want_flag = (pooled**2).sum(0), (pooled > 1).sum()
    for party, (mine, flag, ncomp, cost) in res.items():
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
