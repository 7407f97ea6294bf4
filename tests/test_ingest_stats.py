"""Secure pooled statistics of the transforms against the plaintext, under every protocol and
transport, with owners that are compute parties and owners that are data-only parties."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault.ingest.errors import DataError
from covault.ingest.stats import fit_preprocessing, pooled_max_exponents, pooled_means
from covault.ingest.table import Column, Table
from covault.ingest.transforms import EMPTY_EXPONENT, fit_plain, local_statistics, parse_transforms
from tests.helpers import IDS, VARIANTS

NAN = float("nan")
DATA_ONLY = ("bank_d", "bank_e")
OWNERS = ("p0", *DATA_ONLY)  # a compute party and two data-only parties
INPUTS = (("amount", "number"), ("rate", "number"), ("score", "number"), ("kind", "text"), ("vip", "bool"))
TRANSFORMS = parse_transforms(
    {
        "amount": {"impute": "mean"},
        "rate": {"impute": "mean"},
        "score": {"log1p": True, "impute": 1.0},
        "kind": {"categories": ["a", "b"]},
        "vip": {"impute": "mean"},
    }
)


def _table(owner: str) -> Table:
    i = OWNERS.index(owner)
    gen = np.random.default_rng(7 + i)
    n = 5 + 3 * i
    amount = gen.uniform(-1, 1, n) * 10.0 ** (6 + i / 3)  # millions, up to ~4.6e6
    amount[1] = NAN
    rate = gen.uniform(0, 1e-3, n)  # tiny values
    if owner == "bank_d":
        rate[:] = NAN  # all missing at one owner
    score = gen.normal(0, 50, n)
    vip = (gen.uniform(0, 1, n) > 0.5).astype(np.float64)
    vip[0] = NAN
    kind = np.array(["a", "b", None, "c", "a"] * 3, dtype=object)[:n]
    cols = [
        Column("amount", "number", amount),
        Column("rate", "number", rate),
        Column("score", "number", score),
        Column("kind", "text", kind),
        Column("vip", "bool", vip),
    ]
    return Table(cols, f"data file {owner}.csv")


def fit_program(s):
    table = _table(s.party) if s.party in OWNERS else None
    with s.scope() as cost:
        pre = fit_preprocessing(s, OWNERS, table, INPUTS, TRANSFORMS)
    return pre.to_json(), cost.as_dict()


def _every_party_agrees(res):
    first = next(iter(res.values()))[0]
    for party, (pre, _) in res.items():
        assert pre == first, party
    return first


@pytest.mark.parametrize("transport", ["local", "tcp"])
@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_fit_preprocessing_matches_the_plaintext(proto, transport):
    name, n = proto
    res = covault.run(fit_program, n, name, transport=transport, data_parties=DATA_ONLY)
    assert set(OWNERS) <= set(res) and "p1" in res
    got = _every_party_agrees(res)  # compute parties, dealer and data-only parties alike
    want = fit_plain([_table(o) for o in OWNERS], INPUTS, TRANSFORMS).to_json()
    assert got["factors"] == want["factors"]
    assert got["factors"]["amount"] == 2.0**-13  # |amount| < 2^23
    assert got["factors"]["rate"] == 1.0 and got["factors"]["kind=a"] == 1.0
    for col, mean in want["means"].items():
        peak = max(np.nanmax(np.abs(_table(o)[col].values), initial=0) for o in OWNERS)
        assert got["means"][col] == pytest.approx(mean, abs=peak * 2.0**-22), col
    assert 0 < got["means"]["rate"] < 1e-3


def exponent_program(s):
    i = OWNERS.index(s.party) if s.party in OWNERS else None
    local = None
    if i is not None:
        local = np.array([i, -i, EMPTY_EXPONENT, 1024 - i, 10 * i - 10, EMPTY_EXPONENT + i], dtype=np.int64)
    with s.scope() as c1:
        e = pooled_max_exponents(s, OWNERS, local, 6)
    sums = None if i is None else np.array([-3.5e6 * (i + 1), 0.0, 2.0**-20])
    counts = None if i is None else np.array([10, 0 if i else 3, 1])
    with s.scope() as c2:
        m = pooled_means(s, OWNERS, sums, counts, np.array([23, EMPTY_EXPONENT, -19]))
    return e, m, c1.as_dict(), c2.as_dict()


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_max_exponents_and_means_are_opened_to_every_party(proto):
    name, n = proto
    res = covault.run(exponent_program, n, name, data_parties=DATA_ONLY)
    for party, (e, m, c1, _) in res.items():
        np.testing.assert_array_equal(e, [2, 0, EMPTY_EXPONENT, 1024, 10, EMPTY_EXPONENT + 2])
        np.testing.assert_allclose(m, [-3.5e6 * 6 / 30, 0.0, 3 * 2.0**-20 / 3], rtol=1e-12)
        if party in DATA_ONLY:
            assert c1["bytes_sent"] > 0 and c1["bytes_received"] > 0  # its input, then the max


def _ragged(s):
    return pooled_max_exponents(s, OWNERS, np.zeros(2, np.int64) if s.party in OWNERS else None, 3)


def _all_missing(s):
    table = Table([Column("v", "number", np.array([NAN, NAN]))], f"data file {s.party}.csv")
    inputs, t = (("v", "number"),), parse_transforms({"v": {"impute": "mean"}})
    return fit_preprocessing(s, OWNERS, table if s.party in OWNERS else None, inputs, t)


def _too_big(s):
    sums = np.array([3000.0]) if s.party in OWNERS else None
    counts = np.array([2]) if s.party in OWNERS else None
    return pooled_means(s, OWNERS, sums, counts, np.array([10]), names=["amount"])


def test_refusals_name_the_column():
    with pytest.raises(DataError, match=r"exponents of shape \(2,\), expected \(3,\)"):
        covault.run(_ragged, 3, "rep3", data_parties=DATA_ONLY)
    with pytest.raises(DataError, match=r"column 'v': no data owner has a value in it"):
        covault.run(_all_missing, 3, "rep3", data_parties=DATA_ONLY)
    with pytest.raises(DataError, match=r"column 'amount': its values exceed the pooled maximum 2\^10"):
        covault.run(_too_big, 2, "2pc", data_parties=DATA_ONLY)


def test_local_statistics_of_an_all_missing_column():
    st = local_statistics(_table("bank_d"), INPUTS, TRANSFORMS)
    assert st.mean_columns == ("amount", "rate", "vip")
    assert st.scaled_columns == ("amount", "rate", "score")
    rate = st.mean_columns.index("rate")
    assert st.exponents[rate] == EMPTY_EXPONENT and st.counts[rate] == 0 and st.sums[rate] == 0.0
