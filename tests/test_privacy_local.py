"""Local DP at the owner: the policy's [privacy] table, the noise of each column kind against
the mechanism's distribution, and refusals naming the owner, the column or the key."""

from __future__ import annotations

import math

import numpy as np
import pytest

from covault.ingest.errors import PolicyError
from covault.ingest.local_dp import LocalDP, apply_local_dp, local_epsilon
from covault.ingest.policy import parse_policy
from covault.ingest.table import Column, Table
from covault.privacy import mechanisms

N = 20000


def _table(**cols) -> Table:
    out = []
    for name, values in cols.items():
        if values.dtype == object:
            out.append(Column(name, "text", values))
        else:
            kind = "bool" if name.startswith("is_") else "number"
            out.append(Column(name, kind, values.astype(np.float64)))
    return Table(out, "test table")


def test_policy_privacy_table(tmp_path):
    path = tmp_path / "bank_a.policy.toml"
    raw = {
        "privacy": {
            "max_epsilon": 3,
            "local_dp": {
                "income": {"epsilon": 1.0, "bounds": [0, 200000]},
                "is_smoker": {"epsilon": 2.0},
                "country": {"epsilon": 0.5, "categories": ["DE", "FR"]},
            },
        }
    }
    policy = parse_policy(raw, path)
    assert policy.max_epsilon == 3.0
    assert policy.ledger_file("bank_a") == tmp_path / "bank_a.privacy.sqlite"
    assert policy.local_dp["income"] == LocalDP(1.0, (0.0, 200000.0))
    assert local_epsilon(policy.local_dp, ["income", "is_smoker", "age"]) == 3.0
    moved = parse_policy({"privacy": {"ledger": "state/ledger.sqlite"}}, path)
    assert moved.ledger_file("bank_a") == tmp_path / "state" / "ledger.sqlite" and moved.max_epsilon is None
    assert parse_policy({}, None).ledger_file("bank_a") is None


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"max_epsilon": -1}, "privacy.max_epsilon"),
        ({"max_epsilon": "lots"}, "privacy.max_epsilon"),
        ({"max_epsilon": True}, "privacy.max_epsilon"),
        ({"cap": 1}, "privacy.cap"),
        ({"ledger": ""}, "privacy.ledger"),
        ({"local_dp": {"income": {"epsilon": 0}}}, "privacy.local_dp.income.epsilon"),
        ({"local_dp": {"income": {"epsilon": 1, "bounds": [5, 1]}}}, "privacy.local_dp.income.bounds"),
        ({"local_dp": {"income": {"epsilon": 1, "noise": "lots"}}}, "privacy.local_dp.income.noise"),
        ({"local_dp": {"c": {"epsilon": 1, "categories": ["a"]}}}, "privacy.local_dp.c.categories"),
    ],
)
def test_bad_privacy_keys_named(raw, key):
    with pytest.raises(PolicyError, match=f"key {key}") as info:
        parse_policy({"privacy": raw}, None)
    assert info.value.rule == "file"


def test_numbers_get_bounded_laplace_noise():
    values = np.random.default_rng(1).uniform(-50, 150, N)  # test data, not secret
    rules = {"income": LocalDP(0.5, (0.0, 100.0))}
    noisy = apply_local_dp(_table(income=values, age=values), rules, "bank_a")
    assert np.array_equal(noisy["age"].values, values)  # a column without a rule is untouched
    noise = noisy["income"].values - np.clip(values, 0, 100)
    b = mechanisms.laplace_scale(100.0, 0.5)
    # mean and variance of 20,000 Laplace(b) draws: within 5 standard errors
    assert abs(noise.mean()) < 5 * b * math.sqrt(2 / N)
    assert abs(noise.var() / (2 * b * b) - 1) < 5 * math.sqrt(5 / N)
    assert np.all(noisy["income"].values * 2**16 == np.rint(noisy["income"].values * 2**16))  # on the grid


def test_missing_numbers_stay_missing():
    values = np.array([1.0, np.nan, 3.0])
    noisy = apply_local_dp(_table(x=values), {"x": LocalDP(1.0, (0.0, 5.0))}, "bank_a")
    assert np.isnan(noisy["x"].values[1]) and not np.isnan(noisy["x"].values[[0, 2]]).any()


def test_bools_and_text_get_randomized_response():
    rng = np.random.default_rng(2)  # test data, not secret
    flags = (rng.uniform(size=N) < 0.3).astype(np.float64)
    cats = np.array(["DE", "FR", "NL"], dtype=object)[rng.integers(0, 3, N)]
    eps = 1.0
    noisy = apply_local_dp(
        _table(is_x=flags, country=cats),
        {"is_x": LocalDP(eps), "country": LocalDP(eps, categories=("DE", "FR", "NL"))},
        "bank_a",
    )
    keep2 = math.exp(eps) / (math.exp(eps) + 1)
    kept = (noisy["is_x"].values == flags).mean()
    assert abs(kept - keep2) < 5 * math.sqrt(keep2 * (1 - keep2) / N)
    keep3 = mechanisms.keep_probability(eps, 3)
    kept3 = (noisy["country"].values == cats).mean()
    assert abs(kept3 - keep3) < 5 * math.sqrt(keep3 * (1 - keep3) / N)
    counts = np.array([(noisy["country"].values == c).sum() for c in ("DE", "FR", "NL")])
    truth = np.array([(cats == c).sum() for c in ("DE", "FR", "NL")])
    assert np.all(np.abs(mechanisms.unbiased_frequencies(counts, eps) - truth) < 0.05 * N)


@pytest.mark.parametrize(
    ("column", "rule", "fragment"),
    [
        ("income", LocalDP(1.0), "give bounds"),
        ("is_x", LocalDP(1.0, (0.0, 1.0)), "epsilon alone"),
        ("country", LocalDP(1.0), "give categories"),
    ],
)
def test_a_rule_that_does_not_fit_the_kind(column, rule, fragment):
    table = _table(income=np.ones(3), is_x=np.ones(3), country=np.array(["DE"] * 3, dtype=object))
    with pytest.raises(PolicyError, match=fragment) as info:
        apply_local_dp(table, {column: rule}, "bank_a")
    assert "bank_a" in str(info.value) and column in str(info.value)
    assert info.value.rule == "privacy.local_dp"
