"""Verify a party's audit log and name the first bad entry.

Checks, in order of ``seq``: every entry is there (1, 2, ... without gaps), its hash matches
its content, it follows the previous entry (``prev``), and its signature verifies with a
certificate of the consortium CA that names the party and was valid at the entry's time. Then
every countersigned head of this log, the ones it keeps and the copies other parties hold
(``witnesses``: their audit logs, or the heads they exported), must be validly signed by the
party and countersigned by the witness, and must match the entry at its ``seq``, and a later
``countersigned`` entry must record that head: an entry edited, deleted or reordered breaks the
chain; a log truncated after its last countersigned head (its own copies of the heads deleted
with it) is caught by the copies the others hold. Entries after the last head a witness holds
are covered by the chain and the signatures only: deleting them from the end goes unnoticed
until the next job's heads (``docs/governance.md``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from covault.deploy.certs import CertificateError
from covault.governance.audit import (
    GENESIS,
    SIGNATURE_DOMAIN,
    AuditLog,
    Entry,
    entry_hash,
    log_party,
    signed_part,
)
from covault.governance.errors import AuditError, GovernanceError
from covault.governance.heads import Countersignature, check_countersignature, countersignature_from_json
from covault.governance.signing import check_cert, check_signature, key_id, parse_cert

HEADS_FORMAT = "covault-heads/1"


@dataclass(frozen=True)
class Finding:
    """A problem with entry ``seq`` (None: with a kept record that is not an entry)."""

    seq: int | None
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "problem": self.problem}


@dataclass(frozen=True)
class Report:
    """The verification of one party's log: ``entries`` read, ``heads`` checked (``witnesses``:
    the parties whose countersignatures were checked), ``findings`` in order of ``seq``."""

    party: str
    path: Path
    entries: int
    last: int
    heads: int
    witnesses: tuple[str, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad(self) -> Finding | None:
        """The finding about the lowest entry (entries first, then other records)."""
        return self.findings[0] if self.findings else None

    def summary(self) -> str:
        """One line: OK with the counts, or the first bad entry."""
        if self.ok:
            by = f" countersigned by {', '.join(self.witnesses)}" if self.witnesses else ""
            return f"{self.party}: OK: {self.entries} entries, {self.heads} heads{by} ({self.path})"
        return f"{self.party}: BAD: {self.first_bad.problem} ({self.path})"

    def to_json(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "path": str(self.path),
            "ok": self.ok,
            "entries": self.entries,
            "last": self.last,
            "heads": self.heads,
            "witnesses": list(self.witnesses),
            "first_bad": None if self.ok else self.first_bad.to_json(),
            "findings": [f.to_json() for f in self.findings],
        }


class _Certs:
    """Certificates of one party's log, checked once each against the CA."""

    def __init__(self, log: AuditLog, ca, party: str):
        self.log, self.ca, self.party = log, ca, party
        self.known: dict[str, Any] = {}

    def problem(self, key: str, at: str) -> tuple[Any, str | None]:
        if key not in self.known:
            pem = self.log.certificate(key)
            try:
                if pem is None:
                    raise CertificateError(f"no certificate with key id {key[:16]}... is kept in the log")
                cert = parse_cert(pem, f"certificate of {self.party!r}")
                if key_id(cert) != key:
                    raise CertificateError("the kept certificate does not have the key id it is stored under")
                self.known[key] = (cert, None)
            except CertificateError as exc:
                self.known[key] = (None, str(exc))
        cert, problem = self.known[key]
        if problem is None:
            try:
                check_cert(cert, self.ca, self.party, at=at)
            except (CertificateError, ValueError) as exc:
                problem = str(exc)
        return cert, problem


def verify_log(
    path: str | Path,
    ca: x509.Certificate,
    witnesses: Iterable[Countersignature] = (),
    *,
    party: str | None = None,
) -> Report:
    """Verify the audit log at ``path`` (module docstring) against the consortium CA
    certificate ``ca``; ``witnesses``: countersigned heads other parties hold (those of other
    logs are ignored). ``party``: whose log it must be (AuditError if it names another party)."""
    owner = log_party(path)
    if party is not None and owner != party:
        raise AuditError(f"{path} is the audit log of {owner!r}, not of {party!r}")
    party = owner
    findings: list[Finding] = []
    hashes: dict[int, str] = {}
    recorded: set[tuple[int, str]] = set()  # the heads that countersigned entries record
    with AuditLog(path, party, readonly=True) as log:
        certs = _Certs(log, ca, party)
        expected, prev, count = 1, GENESIS, 0
        for e in log.entries():
            count += 1
            what = f"entry {e.seq} ({e.kind})"
            wrong = _wrong_type(e)
            if wrong is not None:
                findings.append(Finding(e.seq, f"{what}: a field has the wrong type ({wrong})"))
            elif e.seq != expected:
                gap = (
                    f"entry {expected} is" if e.seq == expected + 1 else f"entries {expected}-{e.seq - 1} are"
                )
                findings.append(Finding(expected, f"{gap} missing (deleted)"))
            elif entry_hash(party, e.seq, e.time, e.kind, e.fingerprint, e.payload, e.prev, e.key) != e.hash:
                findings.append(
                    Finding(
                        e.seq,
                        f"{what}: its content does not match its hash (edited, or moved from another position)",
                    )
                )
            elif e.prev != prev:
                findings.append(
                    Finding(
                        e.seq, f"{what}: it does not follow entry {e.seq - 1} (entries reordered or replaced)"
                    )
                )
            else:
                cert, problem = certs.problem(e.key, e.time)
                if problem is None and not check_signature(
                    cert, SIGNATURE_DOMAIN, signed_part(party, e.seq, e.hash), e.signature
                ):
                    problem = "the signature is invalid (re-hashed after an edit, or signed by another key)"
                if problem is not None:
                    findings.append(Finding(e.seq, f"{what}: {problem}"))
            hashes[e.seq] = e.hash
            expected, prev = e.seq + 1, e.hash
            data = e.data
            if e.kind == "countersigned" and isinstance(data, dict):
                at, head_hash = data.get("seq"), data.get("hash")
                if isinstance(at, int) and isinstance(head_hash, str):
                    recorded.add((at, head_hash))
        last = expected - 1
        kept, broken = _kept_heads(log)
        own = [c for c in kept if c.head.party == party]
        others = [c for c in kept if c.head.party != party]
    findings += broken
    seen: set[str] = set()
    heads: dict[tuple[int, str], str] = {}  # valid heads of this log that match it -> a witness
    checked = 0
    for c, where in [
        *((c, "kept in this log") for c in own),
        *((w, f"copy held by {w.witness}") for w in witnesses),
    ]:
        if c.head.party != party:
            continue
        checked += 1
        problem = check_countersignature(c, ca)
        head = f"the head at entry {c.head.seq} countersigned by {c.witness} on {c.time[:19]} ({where})"
        if problem is not None:
            findings.append(Finding(c.head.seq, f"{head} is invalid: {problem}"))
        elif c.head.seq > last:
            gap = f"entry {last + 1} is" if c.head.seq == last + 1 else f"entries {last + 1}-{c.head.seq} are"
            findings.append(Finding(last + 1, f"{gap} missing (log truncated): {head}"))
        elif hashes.get(c.head.seq) != c.head.hash:
            findings.append(
                Finding(c.head.seq, f"entry {c.head.seq} differs from {head} (history rewritten)")
            )
        else:
            seen.add(c.witness)
            heads.setdefault((c.head.seq, c.head.hash), c.witness)
    for (seq, hash_), witness in sorted(heads.items()):
        if (seq, hash_) not in recorded:
            what = (
                f"the head at entry {seq}, countersigned by {witness}, is recorded by no countersigned entry"
            )
            cause = "log truncated" if seq == last else "deleted"
            findings.append(Finding(seq + 1, f"entry {seq + 1}: {what} ({cause})"))
    for c in others:
        problem = check_countersignature(c, ca)
        if problem is not None:
            findings.append(
                Finding(None, f"the head of {c.head.party} at its entry {c.head.seq} kept here: {problem}")
            )
    order = sorted(findings, key=lambda f: (f.seq is None, f.seq or 0))
    return Report(party, Path(path), count, last, checked, tuple(sorted(seen)), tuple(order))


def _wrong_type(e: Entry) -> str | None:
    """``"FIELD: TYPE"`` for the first field of a stored entry that is not text (the
    fingerprint may be null), None if every field has its type."""
    for name in ("time", "kind", "fingerprint", "payload", "prev", "hash", "key", "signature"):
        value = getattr(e, name)
        if not isinstance(value, str) and not (name == "fingerprint" and value is None):
            return f"{name}: {type(value).__name__}"
    return None


def _kept_heads(log: AuditLog) -> tuple[list[Countersignature], list[Finding]]:
    """The countersigned heads kept in ``log``, and a finding for each that cannot be read."""
    out, bad = [], []
    for owner, seq, witness, doc in log.head_rows():
        try:
            out.append(countersignature_from_json(json.loads(doc), "countersigned head"))
        except (ValueError, GovernanceError) as exc:
            where = f"the head of {owner} at its entry {seq} countersigned by {witness} kept here"
            bad.append(Finding(seq if owner == log.party else None, f"{where} is malformed: {exc}"))
    return out, bad


def witness_heads(sources: Iterable[str | Path]) -> list[Countersignature]:
    """The countersigned heads of other parties' logs that ``sources`` hold: audit logs (the
    heads their party countersigned) or files written by :func:`export_heads`."""
    out: list[Countersignature] = []
    for src in sources:
        p = Path(src)
        if p.suffix == ".json":
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise GovernanceError(f"heads file {p} cannot be read: {exc}") from None
            if (
                not isinstance(doc, dict)
                or doc.get("type") != HEADS_FORMAT
                or not isinstance(doc.get("heads"), list)
            ):
                raise GovernanceError(f"{p} is not a covault heads file ({HEADS_FORMAT})")
            out += [countersignature_from_json(h, f"heads file {p}") for h in doc["heads"]]
            continue
        party = log_party(p)
        with AuditLog(p, party, readonly=True) as log:
            kept, _ = _kept_heads(log)  # a malformed one is a finding when that log is verified
            out += [c for c in kept if c.witness == party and c.head.party != party]
    return out


def export_heads(path: str | Path) -> dict[str, Any]:
    """The heads of other parties that the log at ``path`` countersigned, as a JSON document
    (``covault-heads/1``) another party's auditor passes to :func:`witness_heads`."""
    party = log_party(path)
    with AuditLog(path, party, readonly=True) as log:
        heads = [c.to_json() for c in log.countersignatures() if c.witness == party and c.head.party != party]
    return {"type": HEADS_FORMAT, "witness": party, "heads": heads}
