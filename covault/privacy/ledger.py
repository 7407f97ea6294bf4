"""A data owner's differential-privacy budget ledger: SQLite, persisted across jobs.

One row per release charged: the owner, its ``epsilon`` and ``delta``, the job's fingerprint,
what was released and the time (UTC). Rows are never changed or removed (triggers refuse
``UPDATE`` and ``DELETE``): the ledger is append-only.

**Composition.** The ledger composes by basic (sequential) composition: releases that are
``(eps_i, delta_i)``-DP about an owner's rows are together ``(sum eps_i, sum delta_i)``-DP
(Dwork & Roth 2014, Theorem 3.16), whatever each mechanism was. Privacy-loss-distribution
composition is tighter for many Gaussian releases, and the DP-SGD accountant uses it *within* a
job (its steps are one mechanism, composed as PLDs and converted once to ``(epsilon, delta)``);
*across* jobs
the releases are heterogeneous (pure-epsilon Laplace, randomized response, Gaussian sums,
DP-SGD totals already converted), their RDP curves are not all defined (pure epsilon) or not
kept, and an ``(epsilon, delta)`` pair cannot be turned back into an RDP curve without loss.
Basic composition is valid for every mix, monotone, and is what an owner's cap
(``[privacy] max_epsilon`` of its policy) bounds: the sum of the epsilons charged to it.

**Where.** The owner keeps it. For jobs, its policy names the file (``[privacy] ledger``;
default ``NAME.privacy.sqlite`` beside the policy file, so cap and ledger stay together);
:func:`ledger_path` names ``STATE/NAME.privacy.sqlite`` beside the audit log in a governance
folder ``STATE`` (``docs/privacy.md``). One file may hold several owners (each row names its
owner).

**Concurrency.** Every call opens its own connection; :meth:`Ledger.charge_within` runs the
check and the charge in one ``BEGIN IMMEDIATE`` transaction, so two jobs (threads or processes)
racing for the last of a budget cannot both pass.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from covault.errors import CovaultError, PrivacyBudgetError

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, epsilon REAL NOT NULL,
    delta REAL NOT NULL, job TEXT NOT NULL, what TEXT NOT NULL, time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS charges_owner ON charges (owner);
CREATE TRIGGER IF NOT EXISTS charges_no_update BEFORE UPDATE ON charges
    BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS charges_no_delete BEFORE DELETE ON charges
    BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
"""

TOLERANCE = 1e-9  # relative slack of the cap test, for the rounding of a float sum


class LedgerError(CovaultError, ValueError):
    """The ledger cannot be read or written, or a charge is malformed (names the file, the owner
    and the value)."""


@dataclass(frozen=True)
class Charge:
    """One release charged to ``owner``."""

    seq: int
    owner: str
    epsilon: float
    delta: float
    job: str
    what: str
    time: str


def ledger_path(state: str | Path, party: str) -> Path:
    """The privacy ledger of ``party`` in its governance folder ``state`` (beside its audit log)."""
    return Path(state) / f"{party}.privacy.sqlite"


def within(spent: float, epsilon: float, cap: float) -> bool:
    """Whether spending ``epsilon`` more on top of ``spent`` stays within ``cap``."""
    return spent + epsilon <= cap + TOLERANCE * max(1.0, cap)


class Ledger:
    """The privacy budget ledger at ``path`` (created if missing, mode 0600; module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            with self._connect() as db:
                db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"privacy ledger {self.path}: {exc}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    def _fail(self, exc: sqlite3.Error, owner: str) -> LedgerError:
        return LedgerError(f"privacy ledger {self.path}, owner {owner!r}: {exc}")

    def charge(self, owner: str, epsilon: float, delta: float, job: str, what: str) -> Charge:
        """Append one release of ``(epsilon, delta)`` about ``owner``'s rows; no cap is checked."""
        return self.charge_within(owner, epsilon, delta, job, what, cap=None)

    def charge_within(
        self, owner: str, epsilon: float, delta: float, job: str, what: str, cap: float | None
    ) -> Charge:
        """Check ``owner``'s budget against ``cap`` (None: no cap) and append the charge, in one
        transaction; :class:`PrivacyBudgetError` (nothing appended) if it would exceed the cap."""
        epsilon, delta, cap = _checked(self.path, owner, epsilon, delta, cap)
        if not isinstance(job, str) or not isinstance(what, str) or not what:
            raise LedgerError(
                f"privacy ledger {self.path}: charge of {owner!r} needs a job (str) and what (text)"
            )
        time = datetime.now(UTC).isoformat(timespec="microseconds")
        try:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    spent = _sum(db, owner)[0]
                    if cap is not None and not within(spent, epsilon, cap):
                        raise PrivacyBudgetError(owner, cap, spent, epsilon, what)
                    cur = db.execute(
                        "INSERT INTO charges (owner, epsilon, delta, job, what, time) VALUES (?, ?, ?, ?, ?, ?)",
                        (owner, epsilon, delta, job, what, time),
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise self._fail(exc, owner) from None
        return Charge(int(cur.lastrowid or 0), owner, epsilon, delta, job, what, time)

    def spent(self, owner: str) -> tuple[float, float]:
        """``(epsilon, delta)`` spent on ``owner`` so far, by basic composition (module docstring)."""
        try:
            with self._connect() as db:
                return _sum(db, owner)
        except sqlite3.Error as exc:
            raise self._fail(exc, owner) from None

    def remaining(self, owner: str, cap: float) -> float:
        """The epsilon ``owner`` may still spend under ``cap`` (0 when spent)."""
        return max(float(cap) - self.spent(owner)[0], 0.0)

    def check(self, owner: str, epsilon: float, cap: float | None, what: str = "this release") -> None:
        """:class:`PrivacyBudgetError` naming the owner, the cap, the spent and the remaining
        epsilon if spending ``epsilon`` more would exceed ``cap`` (None: no cap); charges nothing."""
        epsilon, _, cap = _checked(self.path, owner, epsilon, 0.0, cap)
        if cap is None:
            return
        spent = self.spent(owner)[0]
        if not within(spent, epsilon, cap):
            raise PrivacyBudgetError(owner, cap, spent, epsilon, what)

    def charges(self, owner: str | None = None) -> list[Charge]:
        """Every charge (of ``owner`` alone if given), oldest first."""
        query = "SELECT seq, owner, epsilon, delta, job, what, time FROM charges"
        args: tuple = ()
        if owner is not None:
            query, args = query + " WHERE owner = ?", (owner,)
        try:
            with self._connect() as db:
                rows = db.execute(query + " ORDER BY seq", args).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc, owner or "*") from None
        return [Charge(*row) for row in rows]


def _sum(db: sqlite3.Connection, owner: str) -> tuple[float, float]:
    rows = db.execute("SELECT epsilon, delta FROM charges WHERE owner = ?", (owner,)).fetchall()
    return math.fsum(r[0] for r in rows), math.fsum(r[1] for r in rows)


def _checked(path: Path, owner: str, epsilon: float, delta: float, cap: float | None):
    where = f"privacy ledger {path}, owner {owner!r}"
    if not isinstance(owner, str) or not owner:
        raise LedgerError(f"privacy ledger {path}: the owner must be a non-empty name, got {owner!r}")
    try:
        epsilon, delta = float(epsilon), float(delta)
        cap = None if cap is None else float(cap)
    except (TypeError, ValueError):
        raise LedgerError(f"{where}: epsilon, delta and cap must be numbers") from None
    if not math.isfinite(epsilon) or epsilon < 0:
        raise LedgerError(f"{where}: epsilon must be finite and >= 0, got {epsilon!r}")
    if not 0.0 <= delta < 1.0:
        raise LedgerError(f"{where}: delta must be in [0, 1), got {delta!r}")
    if cap is not None and (not math.isfinite(cap) or cap < 0):
        raise LedgerError(f"{where}: the cap must be finite and >= 0, got {cap!r}")
    return epsilon, delta, cap
