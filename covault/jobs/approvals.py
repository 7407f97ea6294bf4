"""Approving jobs and reading the audit trail: the functions behind ``covault approve``,
``covault reject`` and ``covault audit``, and the API of a console (``docs/governance.md``).

    folder = party_folder(job, "bank_b", local="bank_b.local.toml")
    r = review(job, "bank_b", folder)          # the plan (what it sends and learns), its status
    approve(job, "bank_b", folder)             # or reject(job, "bank_b", folder, reason="...")
    known_jobs(folder)                         # every version of a job it has seen, with status
    audit_entries(folder)                      # its audit log
    verify([folder.audit_path])                # chain, signatures, countersigned heads

Every function acts at one party, on its own files; nothing is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from covault.governance.approval import Approval, decide, load_approval, save_approval
from covault.governance.audit import Entry
from covault.governance.fingerprint import JobStatement, statement
from covault.governance.folder import PartyFolder
from covault.governance.verify import Report, verify_log, witness_heads
from covault.jobs.errors import JobError, RefusedError

STATUSES = ("pending", "approved", "rejected", "started", "finished", "failed")


def party_folder(
    job, party: str, *, local: str | Path | None = None, governance: str | Path | None = None
) -> PartyFolder:
    """``party``'s folders for ``job``: its key folder is the job's ``[tls] certs``; its
    governance folder ``governance`` if given, else the ``governance`` key of its local file
    ``local`` (relative to that file), else the key folder."""
    if party not in job.config.parties:
        raise JobError(f"party {party!r} is not in the job (parties: {sorted(job.config.parties)})")
    keys = job.config.certs
    if keys is None:
        raise JobError(
            "approvals are signed with each party's key: the job needs [tls] certs = 'DIR' "
            "(DIR/ca.pem, DIR/NAME.pem, DIR/NAME.key; covault certs creates them)"
        )
    state = Path(governance) if governance is not None else _local_state(local) or Path(keys)
    return PartyFolder(party, Path(keys), state)


def _local_state(local: str | Path | None) -> Path | None:
    if local is None:
        return None
    from covault.deploy.config import read_toml

    path = Path(local)
    value = read_toml(path, "local file", JobError).get("governance")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise JobError(f"local file {path}: governance must be a folder path, got {value!r}")
    p = Path(value)
    return p if p.is_absolute() else path.absolute().parent / p


@dataclass(frozen=True)
class Review:
    """What ``party`` is asked to approve: the job's ``statement`` (fingerprint and per-key
    digests), its ``plan`` (:func:`covault.jobs.plan.plan`: what it sends and learns, its
    policy's verdicts), its current ``decision`` (None: none yet) and ``status``."""

    party: str
    path: str | None
    statement: JobStatement
    plan: dict[str, Any]
    decision: Approval | None
    status: str

    def to_json(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "path": self.path,
            **self.statement.to_json(),
            "plan": self.plan,
            "decision": None if self.decision is None else self.decision.to_json(),
            "status": self.status,
        }


@dataclass(frozen=True)
class JobStatus:
    """A version of a job a party has seen: ``status`` one of :data:`STATUSES` (from its
    audit log; ``error`` for a failed run), ``since`` the time of that entry."""

    fingerprint: str
    name: str | None
    path: str | None
    status: str
    since: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def review(job, party: str, folder: PartyFolder, *, record: bool = True) -> Review:
    """The plan and status of ``job`` at ``party``; with ``record``, the first time the party
    sees this version its audit log records ``proposed``."""
    from covault.jobs.plan import plan

    st = statement(job)
    if record:
        with folder.audit() as log:
            record_proposed(job, party, st, log)
    decision = load_approval(folder.state, st.fingerprint, party)
    status = next((s.status for s in known_jobs(folder) if s.fingerprint == st.fingerprint), "pending")
    return Review(party, _path(job), st, plan(job, party), decision, status)


def approve(job, party: str, folder: PartyFolder, *, plan: dict[str, Any] | None = None) -> Approval:
    """Sign ``party``'s approval of ``job``, keep it in its folder and record ``approved``.
    RefusedError, nothing signed, if its policy refuses the job (``plan``: the plan already
    made by :func:`review`, else made here)."""
    from covault.jobs.plan import plan as make_plan

    p = plan if plan is not None else make_plan(job, party)
    if p["refusals"]:
        first = p["refusals"][0]
        raise RefusedError(
            first["message"], party=party, rule=first["rule"], subject=first["subject"], key=first["key"]
        )
    return _decide(job, party, folder, "approved", None)


def reject(job, party: str, folder: PartyFolder, reason: str | None = None) -> Approval:
    """Sign ``party``'s rejection of ``job`` (with ``reason``), keep it and record ``rejected``."""
    return _decide(job, party, folder, "rejected", reason)


def _decide(job, party: str, folder: PartyFolder, decision: str, reason: str | None) -> Approval:
    from covault.jobs.spec import roles

    identity = folder.identity()
    st = statement(job)
    a = decide(identity, st, decision, roles=roles(job, party), reason=reason)
    with folder.audit(identity) as log:
        record_proposed(job, party, st, log)
        save_approval(folder.state, a)
        payload = {k: v for k, v in a.to_json().items() if k != "certificate"}
        log.append(decision, st.fingerprint, {**payload, "sha256": a.sha256()})
    return a


def _path(job) -> str | None:
    return None if job.path is None else str(Path(job.path).absolute())


def record_proposed(job, party: str, st: JobStatement, log) -> None:
    """Record ``proposed`` in ``party``'s open audit ``log`` unless it has an entry about this
    version of the job already."""
    from covault.jobs.spec import roles

    if not log.seen(st.fingerprint):
        log.append(
            "proposed", st.fingerprint, {**st.to_json(), "path": _path(job), "roles": roles(job, party)}
        )


def known_jobs(folder: PartyFolder) -> list[JobStatus]:
    """Every version of a job ``folder.party`` has seen, with its latest status, oldest first."""
    if not folder.audit_path.is_file():
        return []
    jobs: dict[str, JobStatus] = {}
    for e in audit_entries(folder):
        if e.fingerprint is None:
            continue
        data = e.data if isinstance(e.data, dict) else {}
        old = jobs.get(e.fingerprint)
        name, path = (old.name, old.path) if old else (data.get("job"), data.get("path"))
        kind = {"proposed": "pending"}.get(e.kind, e.kind)
        if kind in STATUSES:
            error = data.get("error") if kind == "failed" else None
            jobs[e.fingerprint] = JobStatus(e.fingerprint, name, path, kind, e.time, error)
    return list(jobs.values())


def audit_entries(
    folder: PartyFolder, *, fingerprint: str | None = None, kind: str | None = None
) -> list[Entry]:
    """``folder.party``'s audit entries, in order (only those about ``fingerprint`` / of
    ``kind``, if given); none if it has no log yet."""
    if not folder.audit_path.is_file():
        return []
    with folder.audit(readonly=True) as log:
        return [
            e
            for e in log.entries()
            if (fingerprint is None or e.fingerprint == fingerprint) and (kind is None or e.kind == kind)
        ]


def verify(
    logs: Iterable[str | Path], ca: x509.Certificate, *, witnesses: Iterable[str | Path] = ()
) -> list[Report]:
    """Verify each audit log of ``logs`` against the CA certificate ``ca``
    (:func:`covault.governance.verify.verify_log`); the logs themselves and ``witnesses``
    (other parties' logs, or heads they exported) serve as witnesses of each other."""
    logs = [Path(p) for p in logs]
    held = witness_heads([*logs, *witnesses])
    return [verify_log(p, ca, held) for p in logs]
