"""What a party signs about a job: its fingerprint and one digest per job key.

The fingerprint (:meth:`covault.jobs.spec.Job.fingerprint`) covers the shared job file's
normalised content, without any party's local bindings (data sources, policy files, local
folders); the per-key digests (:meth:`~covault.jobs.spec.Job.fingerprint_parts`: ``task``,
``seed``, ``model.epochs``, ...) let two statements name the keys in which they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobStatement:
    """A job as a party approves it: ``fingerprint``, ``parts`` (key -> hex digest) and ``name``
    (the job file's stem, to find an earlier approval of another version of the same job)."""

    fingerprint: str
    parts: dict[str, str]
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "parts": dict(sorted(self.parts.items())), "job": self.name}


def statement(job) -> JobStatement:
    """The statement of a :class:`~covault.jobs.spec.Job` (or anything with ``fingerprint()``,
    ``fingerprint_parts()`` and ``name``)."""
    return JobStatement(job.fingerprint(), dict(job.fingerprint_parts()), job.name)


def differing_keys(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """The job keys whose digests differ between two ``parts`` mappings (or that only one has),
    sorted."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
