"""DP statistics inside MPC against plaintext: exact without noise (the test-only path), the
noise's variance as the mechanism's over many released numbers, the ledger charged for every
owner, and a release over an owner's cap refused at every party before anything is computed."""

from __future__ import annotations

import math

import numpy as np
import pytest

import covault
from covault.errors import PrivacyBudgetError
from covault.privacy import mechanisms
from covault.privacy.ledger import Ledger, ledger_path
from covault.privacy.statistics import Budget, PrivateStatistics
from tests.helpers import run_both

ROWS = np.random.default_rng(7).uniform(-20, 120, size=(40, 2)).round(2)  # test data, not secret
A, B = np.round(ROWS[:25] * 4) / 4, np.round(ROWS[25:] * 4) / 4  # on the fixed-point grid


def _budgets(tmp_path, cap=None):
    return {p: Budget(Ledger(ledger_path(tmp_path, p)), cap, "job-1") for p in ("p0", "p1")}


def _pooled(s):
    """Rows of owner p0 above those of owner p1, secret-shared."""
    a = s.input(A if s.party == "p0" else None, owner="p0", bound=200.0)
    b = s.input(B if s.party == "p1" else None, owner="p1", bound=200.0)
    return covault.concatenate([a, b])


def test_without_noise_the_statistics_are_the_plaintext_ones(proto, tmp_path):
    budgets = _budgets(tmp_path)
    lo, hi = 0.0, 100.0
    edges = [0.0, 25.0, 50.0, 75.0, 100.0]

    def prog(s):
        x = _pooled(s)
        dp = PrivateStatistics(
            s, owners=("p0", "p1"), budget=budgets.get(s.party), testing_without_noise=True
        )
        total = dp.sum(x, (lo, hi), epsilon=0.5, what="sum")
        mean = dp.mean(x[:, 0], (lo, hi), epsilon=0.5, mechanism="gaussian", delta=1e-6)
        count = dp.count(x[:, 1] > 50.0, epsilon=0.25)
        hist = dp.histogram(x[:, 0], edges, epsilon=0.25)
        return total.value, mean.value, count.value, hist.value

    total, mean, count, hist = run_both(prog, proto)
    rows = np.vstack([A, B])
    clipped = np.clip(rows, lo, hi)
    np.testing.assert_allclose(total, clipped.sum(axis=0), atol=1e-9)
    np.testing.assert_allclose(mean, clipped[:, 0].mean(), atol=1e-9)
    assert count == pytest.approx((rows[:, 1] > 50).sum())
    inner = np.clip(np.digitize(rows[:, 0], edges) - 1, 0, len(edges) - 2)
    np.testing.assert_allclose(hist, np.bincount(inner, minlength=len(edges) - 1))
    for p, budget in budgets.items():
        charges = budget.ledger.charges(p)
        assert [(c.epsilon, c.delta, c.what, c.job) for c in charges] == [
            (0.5, 0.0, "sum", "job-1"),
            (0.5, 1e-6, "noisy mean", "job-1"),
            (0.25, 0.0, "noisy count", "job-1"),
            (0.25, 0.0, "noisy histogram", "job-1"),
        ]
        assert budget.ledger.spent(p) == pytest.approx((1.5, 1e-6))


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_noise_variance_is_the_mechanisms(proto, mechanism, tmp_path):
    """2,000 columns released at once, each with its own noise: the empirical variance of
    released - exact is within 25 % of the mechanism's (about 5 standard errors of a sample
    variance of 2,000 draws of these distributions) and the mean within 5 standard errors."""
    name, m = proto
    d, epsilon, delta = 2000, 400.0, 1e-5
    values = np.round(np.random.default_rng(3).uniform(0, 1, size=(6, d)) * 64) / 64
    budgets = _budgets(tmp_path)

    def prog(s):
        x = s.input(values if s.party == "p0" else None, owner="p0", bound=2.0)
        dp = PrivateStatistics(s, owners=("p0",), budget=budgets.get(s.party))
        out = dp.sum(
            x,
            (0.0, 1.0),
            epsilon=epsilon,
            delta=delta if mechanism == "gaussian" else 0.0,
            mechanism=mechanism,
        )
        return out.value, out.scale, out.noise_std

    value, scale, noise_std = run_both(prog, proto)
    noise = value - values.sum(axis=0)
    if mechanism == "laplace":
        assert scale == pytest.approx(d / epsilon)
        expected = m * 2 * scale**2  # a full Laplace(b) part at every compute party
    else:
        assert scale == pytest.approx(mechanisms.gaussian_sigma(math.sqrt(d), epsilon, delta))
        expected = m * scale**2 / (m - 1)  # parts of sigma^2 / (m - t), t = 1
    assert noise_std**2 == pytest.approx(expected)
    assert abs(noise.var() / expected - 1) < 0.25
    assert abs(noise.mean()) < 5 * math.sqrt(expected / d)
    assert budgets["p0"].ledger.spent("p0")[0] == pytest.approx(epsilon)


def test_over_the_cap_refused_naming_the_owner(tmp_path):
    budgets = _budgets(tmp_path, cap=1.0)
    budgets["p1"].ledger.charge("p1", 0.8, 0.0, "job-0", "an earlier release")

    def prog(s):
        x = _pooled(s)
        return PrivateStatistics(s, owners=("p0", "p1"), budget=budgets.get(s.party)).sum(
            x, (0, 100), epsilon=0.5
        )

    with pytest.raises(PrivacyBudgetError) as info:
        covault.run(prog, 2, "2pc")
    err = info.value
    assert (err.owner, err.cap, err.requested) == ("p1", 1.0, 0.5)
    assert err.spent == pytest.approx(0.8) and err.remaining == pytest.approx(0.2)
    assert "'p1'" in str(err) and "0.2 remains" in str(err)
    assert budgets["p0"].ledger.charges() == [], "an owner was charged for a refused release"
    assert len(budgets["p1"].ledger.charges()) == 1


def test_a_data_party_owner_and_the_dealer_take_part(tmp_path):
    ledger = Ledger(tmp_path / "bank.privacy.sqlite")

    def prog(s):
        x = s.input(A[:, 0] if s.party == "bank" else None, owner="bank", bound=200.0)
        budget = Budget(ledger, 5.0, "job-2") if s.party == "bank" else None
        out = PrivateStatistics(s, owners=("bank",), budget=budget, to="bank").mean(x, (0, 100), epsilon=1.0)
        return out.value

    res = covault.run(prog, 2, "2pc", data_parties=["bank"])
    assert res["p0"] is None and res["dealer"] is None
    assert abs(res["bank"] - np.clip(A[:, 0], 0, 100).mean()) < 40 * 100 / 25  # within 40 noise scales
    assert ledger.spent("bank") == (1.0, 0.0)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=1.0, mechanism="gaussian"), "delta"),
        (dict(epsilon=1.0, delta=1e-5), "laplace mechanism is"),
        (dict(epsilon=1.0, mechanism="exponential"), "mechanism"),
        (dict(epsilon=1.0, colluders=2), "colluders"),
        (dict(epsilon=1.0, owners=()), "owners"),
        (dict(epsilon=1.0, bounds=(5, 5)), "lo < hi"),
    ],
)
def test_bad_requests_refused(kw, fragment, tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")

    def prog(s):
        x = s.input(A[:, 0] if s.party == "p0" else None, owner="p0", bound=200.0)
        setup = {"owners": ("p0",), "budget": Budget(ledger, None, "j") if s.party == "p0" else None}
        setup |= {k: kw[k] for k in ("owners", "colluders") if k in kw}
        release = {k: v for k, v in kw.items() if k not in setup}
        return PrivateStatistics(s, **setup).sum(x, release.pop("bounds", (0, 100)), **release)

    with pytest.raises(ValueError, match=fragment):
        covault.run(prog, 2, "2pc")
    assert ledger.charges() == []


def test_analytic_gaussian_calibration():
    sigma = mechanisms.gaussian_sigma(1.0, 1.0, 1e-5)
    assert (
        mechanisms.gaussian_delta(sigma, 1.0, 1.0)
        <= 1e-5
        < mechanisms.gaussian_delta(sigma * 0.999, 1.0, 1.0)
    )
    classical = math.sqrt(2 * math.log(1.25 / 1e-5))
    assert 3.5 < sigma < classical  # tighter than the classical bound (4.84) at epsilon = 1
    assert mechanisms.laplace_scale(2.0, 0.5) == 4.0


def test_bounds_beyond_the_public_operand_range(tmp_path):
    """Incomes clipped to [0, 200000]: bounds above 2^15 enter as shared constants."""
    income = np.array([52000.0, 61000.0, 250000.0, 38000.0, -5.0])
    ledger = Ledger(tmp_path / "l.sqlite")

    def prog(s):
        x = s.input(income if s.party == "p0" else None, owner="p0", bound=1e6)
        budget = Budget(ledger, None, "j") if s.party == "p0" else None
        dp = PrivateStatistics(s, owners=("p0",), budget=budget, testing_without_noise=True)
        hist = dp.histogram(x, [0, 50000, 100000, 200000], epsilon=1.0)
        return dp.sum(x, (0, 200000), epsilon=1.0).value, hist.value

    total, hist = run_both(prog, ("2pc", 2))
    assert total == pytest.approx(np.clip(income, 0, 200000).sum(), abs=1e-6)
    np.testing.assert_array_equal(hist, [2, 2, 1])  # -5 counts in the first bin, 250000 in the last


class _RaceLostLedger(Ledger):
    """A ledger where another job charges 1.0 just before this release's own charge."""

    def charge_within(self, owner, epsilon, delta, job, what, cap):
        Ledger(self.path).charge(owner, 1.0, 0.0, "other-job", "a job that won the race")
        return super().charge_within(owner, epsilon, delta, job, what, cap)


def test_nothing_is_released_unless_every_owner_charged_it(tmp_path):
    """The check and the charge are one transaction, before the verdict goes out: an owner
    whose charge fails refuses, and no party computes or reveals anything."""
    ledger = _RaceLostLedger(tmp_path / "bank.privacy.sqlite")
    released = []

    def prog(s):
        x = s.input(A[:, 0] if s.party == "bank" else None, owner="bank", bound=200.0)
        budget = Budget(ledger, 1.5, "job-3") if s.party == "bank" else None
        out = PrivateStatistics(s, owners=("bank",), budget=budget, to="p0").mean(x, (0, 100), epsilon=1.0)
        released.append((s.party, out.value))
        return out.value

    with pytest.raises(PrivacyBudgetError) as info:
        covault.run(prog, 2, "2pc", data_parties=["bank"])
    assert info.value.owner == "bank" and info.value.spent == pytest.approx(1.0)
    assert released == [], "a release was made that its owner's ledger did not charge"
    assert [c.job for c in ledger.charges()] == ["other-job"]
