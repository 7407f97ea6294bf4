"""The privacy budget ledger: basic composition per owner, append-only, persisted across
ledger objects and processes, and a cap that refuses a release naming the owner."""

from __future__ import annotations

import multiprocessing
import pickle
import sqlite3
import threading

import pytest

from covault.errors import PrivacyBudgetError
from covault.privacy.ledger import Ledger, LedgerError, ledger_path


def test_charges_compose_by_sum_per_owner(tmp_path):
    ledger = Ledger(tmp_path / "bank_a.privacy.sqlite")
    ledger.charge("bank_a", 0.5, 1e-6, "job1", "noisy sum of income")
    ledger.charge("bank_a", 0.25, 0.0, "job2", "noisy count")
    ledger.charge("bank_b", 1.0, 1e-5, "job2", "noisy count")
    assert ledger.spent("bank_a") == pytest.approx((0.75, 1e-6))
    assert ledger.spent("bank_b") == pytest.approx((1.0, 1e-5))
    assert ledger.spent("nobody") == (0.0, 0.0)
    assert ledger.remaining("bank_a", 2.0) == pytest.approx(1.25)
    rows = ledger.charges("bank_a")
    assert [(r.epsilon, r.job, r.what) for r in rows] == [
        (0.5, "job1", "noisy sum of income"),
        (0.25, "job2", "noisy count"),
    ]
    assert rows[0].seq < rows[1].seq and rows[0].time <= rows[1].time


def test_persisted_across_ledger_objects(tmp_path):
    path = ledger_path(tmp_path, "bank_a")
    assert path.name == "bank_a.privacy.sqlite"
    Ledger(path).charge("bank_a", 0.3, 0.0, "job1", "histogram")
    assert Ledger(path).spent("bank_a")[0] == pytest.approx(0.3)
    assert path.stat().st_mode & 0o077 == 0


def test_append_only(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger(path).charge("bank_a", 0.3, 0.0, "job1", "histogram")
    db = sqlite3.connect(path)
    for sql in ("UPDATE charges SET epsilon = 0", "DELETE FROM charges"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()
    assert Ledger(path).spent("bank_a")[0] == pytest.approx(0.3)


def test_check_names_owner_cap_spent_and_remaining(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.charge("bank_a", 0.75, 0.0, "job1", "noisy mean")
    ledger.check("bank_a", 0.25, cap=1.0)  # exactly the cap: allowed
    ledger.check("bank_a", 100.0, cap=None)  # no cap
    with pytest.raises(PrivacyBudgetError) as info:
        ledger.check("bank_a", 0.5, cap=1.0, what="job train.toml")
    err = info.value
    assert (err.owner, err.cap, err.spent, err.requested) == ("bank_a", 1.0, 0.75, 0.5)
    assert err.remaining == pytest.approx(0.25)
    text = str(err)
    assert "'bank_a'" in text and "cap is 1" in text and "0.75 is spent" in text and "0.25 remains" in text
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == text and again.remaining == err.remaining


def test_charge_within_refuses_and_appends_nothing(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.charge_within("bank_a", 0.9, 0.0, "job1", "noisy sum", cap=1.0)
    with pytest.raises(PrivacyBudgetError, match="bank_a"):
        ledger.charge_within("bank_a", 0.2, 0.0, "job2", "noisy sum", cap=1.0)
    assert len(ledger.charges("bank_a")) == 1
    # Many small charges that add up to the cap exactly are not refused by float rounding.
    for _ in range(10):
        ledger.charge_within("bank_c", 0.1, 0.0, "job", "count", cap=1.0)
    assert ledger.spent("bank_c")[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("epsilon", "delta", "cap", "fragment"),
    [
        (-1.0, 0.0, None, "epsilon"),
        (float("nan"), 0.0, None, "epsilon"),
        (float("inf"), 0.0, None, "epsilon"),
        (1.0, 1.0, None, "delta"),
        (1.0, -0.1, None, "delta"),
        (1.0, 0.0, -1.0, "cap"),
        ("x", 0.0, None, "numbers"),
    ],
)
def test_malformed_charges_refused(tmp_path, epsilon, delta, cap, fragment):
    ledger = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(LedgerError, match=fragment):
        ledger.charge_within("bank_a", epsilon, delta, "job", "sum", cap=cap)
    with pytest.raises(LedgerError, match="owner"):
        ledger.charge("", 1.0, 0.0, "job", "sum")
    assert ledger.charges() == []


def test_not_a_ledger(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match=r"bad\.sqlite"):
        Ledger(bad)


def test_threads_racing_for_the_last_budget(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger(path)
    outcomes: list[str] = []

    def spend():
        try:
            Ledger(path).charge_within("bank_a", 0.3, 0.0, "job", "sum", cap=1.0)
            outcomes.append("charged")
        except PrivacyBudgetError:
            outcomes.append("refused")

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["charged"] * 3 + ["refused"] * 5
    assert Ledger(path).spent("bank_a")[0] == pytest.approx(0.9)


def _spend_in_process(path: str, results) -> None:
    try:
        Ledger(path).charge_within("bank_a", 0.4, 0.0, "job", "sum", cap=1.0)
        results.put("charged")
    except PrivacyBudgetError:
        results.put("refused")


def test_processes_racing_for_the_last_budget(tmp_path):
    path = str(tmp_path / "l.sqlite")
    Ledger(path)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_spend_in_process, args=(path, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    outcomes = sorted(results.get(timeout=10) for _ in procs)
    assert outcomes == ["charged", "charged", "refused", "refused"]
