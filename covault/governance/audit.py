"""A party's audit log: append-only, hash-chained, signed by the party (SQLite).

Entry ``seq`` (1, 2, ...) holds ``time`` (UTC, ISO 8601), ``kind`` (:data:`KINDS`), the job's
``fingerprint`` (None for entries about no job), ``payload`` (canonical JSON), ``prev`` (the
hash of entry ``seq - 1``; 64 zeros for entry 1), ``hash`` and ``signature``::

    hash = SHA-256("covault audit entry v1" NUL canonical-JSON({party, seq, time, kind,
                   fingerprint, payload, prev, key}))
    signature = ECDSA-P256-SHA256(party's key, "covault audit signature v1" NUL
                                  canonical-JSON({party, seq, hash}))

``key`` is the key id (SHA-256 of the certificate's DER) of the certificate that verifies the
signature; the certificates are kept in the ``certs`` table, so that entries signed before a
certificate was renewed still verify. The ``heads`` table keeps countersigned log heads
(:mod:`covault.governance.heads`): the party's own, countersigned by the others, and the
others', countersigned by the party. Triggers refuse UPDATE and DELETE on both tables (a
slip in a tool); someone with the file can drop them, which :mod:`covault.governance.verify`
detects through the chain, the signatures and the heads the other parties hold.

An append locks the database (``BEGIN IMMEDIATE``), reads the last entry and inserts the next,
so that several processes of one party (a job, ``covault approve``) append in turn.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from covault.governance.errors import AuditError
from covault.governance.heads import Countersignature, countersignature_from_json
from covault.governance.signing import Identity, canonical, digest, now

ENTRY_DOMAIN = "covault audit entry v1"
SIGNATURE_DOMAIN = "covault audit signature v1"
GENESIS = "0" * 64

KINDS = {
    "proposed": "a party first saw this version of the job (its statement and file)",
    "approved": "the party approved this version (its signed approval)",
    "rejected": "the party rejected this version (its signed rejection, the reason)",
    "started": "every party's approval checked; the job starts (parties, roles, approvals)",
    "input": "a data owner's prepared table: SHA-256 of its canonical serialisation, rows, columns",
    "policy": "a data owner's policy decisions: each source column's verdict and the rule",
    "revealed": "what the job revealed, to whom (shape and receivers)",
    "traffic": "bytes and messages sent to and received from each peer",
    "privacy_budget": "differential privacy: the budget a mechanism spent (epsilon, delta)",
    "finished": "the job completed (seconds, roles, digest of the model received)",
    "failed": "the job stopped with an error (type and message)",
    "countersigned": "the log head of the job's end and which parties countersigned it",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certs (key TEXT PRIMARY KEY, pem TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL, fingerprint TEXT,
    payload TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL, key TEXT NOT NULL,
    signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS heads (
    owner TEXT NOT NULL, seq INTEGER NOT NULL, witness TEXT NOT NULL, document TEXT NOT NULL,
    PRIMARY KEY (owner, seq, witness));
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS heads_no_update BEFORE UPDATE ON heads
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS heads_no_delete BEFORE DELETE ON heads
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


@dataclass(frozen=True)
class Entry:
    """One audit entry as stored (``payload`` is its JSON text; :attr:`data` parses it)."""

    seq: int
    time: str
    kind: str
    fingerprint: str | None
    payload: str
    prev: str
    hash: str
    key: str
    signature: str

    @property
    def data(self) -> Any:
        """The payload as JSON (None if it is not JSON: a tampered entry)."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "payload": self.data,
            "prev": self.prev,
            "hash": self.hash,
            "key": self.key,
            "signature": self.signature,
        }


def entry_hash(
    party: str, seq: int, time: str, kind: str, fingerprint, payload: str, prev: str, key: str
) -> str:
    """The hash of an entry (module docstring)."""
    content = {
        "party": party,
        "seq": seq,
        "time": time,
        "kind": kind,
        "fingerprint": fingerprint,
        "payload": payload,
        "prev": prev,
        "key": key,
    }
    return digest(ENTRY_DOMAIN, content)


def signed_part(party: str, seq: int, hash_: str) -> dict[str, Any]:
    """What the party signs of entry ``seq``."""
    return {"party": party, "seq": seq, "hash": hash_}


def audit_path(state: str | Path, party: str) -> Path:
    """The audit database of ``party`` in its governance folder ``state``."""
    return Path(state) / f"{party}.audit.sqlite"


class AuditLog:
    """Party ``party``'s audit log at ``path`` (created if missing, mode 0600). ``identity``
    signs appended entries; without one the log is read-only."""

    def __init__(
        self, path: str | Path, party: str, identity: Identity | None = None, *, readonly: bool = False
    ):
        self.path, self.party, self.identity = Path(path), party, identity
        if identity is not None and identity.party != party:
            raise AuditError(f"audit log of {party!r}: the signing identity is {identity.party!r}")
        try:
            if readonly:
                if not self.path.is_file():
                    raise AuditError(f"audit log of {party!r}: {self.path} not found")
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            else:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.path.touch(mode=0o600, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                self.db.executescript(SCHEMA)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('party', ?)", (party,))
            owner = self.db.execute("SELECT value FROM meta WHERE key = 'party'").fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"audit log of {party!r}: {self.path}: {exc}") from None
        if owner is None or owner[0] != party:
            raise AuditError(f"{self.path} is the audit log of {owner and owner[0]!r}, not of {party!r}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------
    def append(self, kind: str, fingerprint: str | None, payload: Any) -> Entry:
        """Append one entry (module docstring); its stored form."""
        return self.append_many([(kind, fingerprint, payload)])[0]

    def append_many(self, items: Iterable[tuple[str, str | None, Any]]) -> list[Entry]:
        """Append entries ``(kind, fingerprint, payload)`` in order, in one transaction."""
        me = self.identity
        if me is None:
            raise AuditError(f"audit log of {self.party!r} is open read-only (no signing key)")
        out = []
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO certs VALUES (?, ?)", (me.key_id, me.cert_pem))
            seq, prev = self.head()
            for kind, fingerprint, payload in items:
                if kind not in KINDS:
                    raise AuditError(f"unknown audit entry kind {kind!r} (kinds: {', '.join(KINDS)})")
                seq, text, time = seq + 1, canonical(payload).decode(), now()
                h = entry_hash(self.party, seq, time, kind, fingerprint, text, prev, me.key_id)
                sig = me.sign(SIGNATURE_DOMAIN, signed_part(self.party, seq, h))
                entry = Entry(seq, time, kind, fingerprint, text, prev, h, me.key_id, sig)
                self.db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", astuple(entry))
                out.append(entry)
                prev = h
        return out

    def privacy_budget(
        self, fingerprint: str | None, *, epsilon: float, delta: float = 0.0, mechanism: str, **detail: Any
    ) -> Entry:
        """Record the differential-privacy budget a mechanism spent (``privacy_budget`` entry:
        ``epsilon``, ``delta``, ``mechanism`` and any JSON-ready ``detail``)."""
        if not (epsilon >= 0 and delta >= 0):
            raise AuditError(f"privacy budget must be non-negative, got epsilon={epsilon}, delta={delta}")
        payload = {"epsilon": float(epsilon), "delta": float(delta), "mechanism": mechanism, **detail}
        return self.append("privacy_budget", fingerprint, payload)

    def add_countersignatures(self, items: Iterable[Countersignature]) -> None:
        """Keep countersigned heads (this party's own, or others' it countersigned)."""
        rows = [(c.head.party, c.head.seq, c.witness, canonical(c.to_json()).decode()) for c in items]
        with self._transaction():
            self.db.executemany("INSERT OR IGNORE INTO heads VALUES (?, ?, ?, ?)", rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, holding the database lock (errors name the log)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AuditError(f"audit log of {self.party!r}: {self.path}: {exc}") from None

    # -- reading -----------------------------------------------------------------------------
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry; ``(0, GENESIS)`` for an empty log."""
        row = self.db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def entries(self, since: int = 1) -> Iterator[Entry]:
        """The entries from ``since`` on, in order of ``seq``."""
        cur = self.db.execute("SELECT * FROM entries WHERE seq >= ? ORDER BY seq", (since,))
        for row in cur:
            yield Entry(*row)

    def entry(self, seq: int) -> Entry | None:
        row = self.db.execute("SELECT * FROM entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else Entry(*row)

    def seen(self, fingerprint: str) -> bool:
        """Whether any entry is about the job version ``fingerprint``."""
        q = "SELECT 1 FROM entries WHERE fingerprint = ? LIMIT 1"
        return self.db.execute(q, (fingerprint,)).fetchone() is not None

    def certificate(self, key: str) -> str | None:
        """The PEM certificate with key id ``key``, if kept here."""
        row = self.db.execute("SELECT pem FROM certs WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def head_rows(self) -> list[tuple[str, int, str, str]]:
        """The rows of the ``heads`` table as stored: ``(owner, seq, witness, document)``."""
        q = "SELECT owner, seq, witness, document FROM heads ORDER BY owner, seq, witness"
        return [(str(o), int(s), str(w), str(d)) for o, s, w, d in self.db.execute(q)]

    def countersignatures(self, owner: str | None = None) -> list[Countersignature]:
        """The countersigned heads kept here (of ``owner``'s log only, if given)."""
        q, args = "SELECT document FROM heads ORDER BY owner, seq, witness", ()
        if owner is not None:
            q, args = "SELECT document FROM heads WHERE owner = ? ORDER BY seq, witness", (owner,)
        out = []
        for (doc,) in self.db.execute(q, args):
            try:
                obj = json.loads(doc)
            except ValueError:
                raise AuditError(f"{self.path}: a countersigned head is not JSON") from None
            out.append(countersignature_from_json(obj, f"{self.path}: countersigned head"))
        return out


def log_party(path: str | Path) -> str:
    """The party whose audit log ``path`` is (AuditError if it is not one)."""
    try:
        db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'party'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise AuditError(f"{path} is not a covault audit log: {exc}") from None
    if row is None:
        raise AuditError(f"{path} is not a covault audit log (it names no party)")
    return str(row[0])
