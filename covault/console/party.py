"""What the console shows of one party: the job files of its folder with their fingerprints and
this party's status, its runs, its audit logs with their verification, its certificate. Every
function reads the party's own files through :mod:`covault.jobs.approvals`; nothing is sent."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covault.governance.folder import PartyFolder
from covault.jobs.approvals import JobStatus, audit_entries, known_jobs, party_folder, verify

EXPIRY_WARNING_DAYS = 30
RUN_KINDS = ("started", "finished", "failed")


@dataclass(frozen=True)
class JobFile:
    """A TOML file of the jobs folder: its ``job`` (None with ``error``), this party's ``folder``,
    the job's ``fingerprint`` and its ``status`` at this party (``pending`` if never seen)."""

    name: str
    path: Path
    job: Any = None
    folder: PartyFolder | None = None
    fingerprint: str | None = None
    status: str | None = None
    since: str | None = None
    error: str | None = None


class PartyView:
    """Party ``party``'s jobs in ``jobs`` (its local file ``local`` and governance folder
    ``governance`` as for ``covault approve``)."""

    def __init__(
        self,
        party: str,
        jobs: str | Path,
        *,
        local: str | Path | None = None,
        governance: str | Path | None = None,
    ):
        self.party = party
        self.jobs = Path(jobs)
        self.local = None if local is None else Path(local)
        self.governance = None if governance is None else Path(governance)
        if not self.jobs.is_dir():
            raise FileNotFoundError(f"jobs folder {self.jobs} not found")

    def job_files(self) -> list[JobFile]:
        """Every job file of the folder (a TOML file with a ``task``) that names this party."""
        from covault.deploy.config import read_toml
        from covault.jobs.errors import JobError

        out = []
        for path in sorted(self.jobs.glob("*.toml")):
            try:
                raw = read_toml(path, "job file", JobError)
            except JobError as exc:
                out.append(JobFile(path.name, path, error=str(exc)))
                continue
            if "task" not in raw or self.party not in (raw.get("parties") or {}):
                continue  # a local file, a consortium config, another consortium's job
            out.append(self._load(path))
        return out

    def job_file(self, name: str) -> JobFile:
        """The job file called ``name`` (LookupError if the folder lists no such job)."""
        for f in self.job_files():
            if f.name == name:
                return f
        raise LookupError(f"no job file {name!r} of party {self.party!r} in {self.jobs}")

    def _load(self, path: Path) -> JobFile:
        from covault.errors import CovaultError
        from covault.jobs.spec import bind_local, load_job

        try:
            job = load_job(path)
            if self.local is not None and self.party in job.data_parties:
                job = bind_local(job, self.party, self.local)
            folder = party_folder(job, self.party, local=self.local, governance=self.governance)
            fp = job.fingerprint()
            seen = next((s for s in known_jobs(folder) if s.fingerprint == fp), None)
        except (CovaultError, OSError) as exc:
            return JobFile(path.name, path, error=str(exc))
        status, since = ("pending", None) if seen is None else (seen.status, seen.since)
        return JobFile(path.name, path, job, folder, fp, status, since)

    def folders(self) -> list[PartyFolder]:
        """This party's folders named by the job files (one per audit log), in order."""
        out: dict[Path, PartyFolder] = {}
        for f in self.job_files():
            if f.folder is not None:
                out.setdefault(f.folder.audit_path.absolute(), f.folder)
        return list(out.values())

    def runs(self) -> list[tuple[PartyFolder, JobStatus]]:
        """Every job version this party started, finished or failed, newest first."""
        found = [
            (folder, s) for folder in self.folders() for s in known_jobs(folder) if s.status in RUN_KINDS
        ]
        return sorted(found, key=lambda fs: fs[1].since, reverse=True)

    def run(self, fingerprint: str) -> tuple[PartyFolder, JobStatus, list]:
        """The run of job version ``fingerprint``: its folder, status and audit entries
        (LookupError if this party never ran it)."""
        for folder, s in self.runs():
            if s.fingerprint == fingerprint:
                return folder, s, audit_entries(folder, fingerprint=fingerprint)
        raise LookupError(f"party {self.party!r} has no run of job version {fingerprint!r}")

    def audit(self) -> list[dict[str, Any]]:
        """Per audit log: its folder, its verification report (the other logs of its folder
        are witnesses, as for ``covault audit verify``) and its entries."""
        out = []
        for folder in self.folders():
            path = folder.audit_path
            if not path.is_file():
                out.append({"folder": folder, "report": None, "entries": []})
                continue
            others = sorted(set(path.parent.glob("*.audit.sqlite")) - {path})
            (report,) = verify([path], folder.ca(), witnesses=others)
            out.append({"folder": folder, "report": report, "entries": audit_entries(folder)})
        return out

    def identities(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Per key folder: this party's certificate (subject, issuer, serial, validity, days
        left, ``warn`` when under :data:`EXPIRY_WARNING_DAYS`), or the error loading it."""
        now = now or dt.datetime.now(dt.UTC)
        out, seen = [], set()
        for folder in self.folders():
            if folder.keys.absolute() in seen:
                continue
            seen.add(folder.keys.absolute())
            try:
                cert = folder.identity().cert
            except Exception as exc:  # shown on the page: a missing or invalid key or certificate
                out.append({"key_folder": folder.keys, "error": f"{type(exc).__name__}: {exc}"})
                continue
            end = cert.not_valid_after_utc
            days = (end - now).total_seconds() / 86400
            out.append(
                {
                    "key_folder": folder.keys,
                    "error": None,
                    "subject": cert.subject.rfc4514_string(),
                    "issuer": cert.issuer.rfc4514_string(),
                    "serial": f"{cert.serial_number:x}",
                    "not_before": cert.not_valid_before_utc.isoformat(),
                    "not_after": end.isoformat(),
                    "days_left": int(days) if days >= 0 else -1,
                    "expired": days < 0,
                    "warn": days < EXPIRY_WARNING_DAYS,
                }
            )
        return out
