"""What a party signs about a job: its fingerprint and one digest per job key.

The fingerprint (:meth:`covault.jobs.spec.Job.fingerprint`) covers the shared job file's
normalised content, without any party's local bindings (data sources, policy files, local
folders); the per-key digests (:meth:`~covault.jobs.spec.Job.fingerprint_parts`: ``task``,
``seed``, ``model.epochs``, ...) let two statements name the keys in which they differ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from covault.governance.signing import canonical


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


def table_digest(table) -> str:
    """Hex SHA-256 of the canonical serialisation of a data owner's table
    (:class:`covault.ingest.table.Table`): per column its name, kind and number of rows, then
    its cells (numbers and booleans: little-endian float64, every missing cell the same NaN;
    text: a 0 byte for a missing cell, else a 1 byte, the UTF-8 length as 8 bytes and the text).
    It identifies the rows a party put into a job without revealing them; the digest of a
    table with few possible values can be found by trying them, so it stays in the owner's log."""
    h = hashlib.sha256(b"covault table v1\0")
    for c in table.columns:
        h.update(canonical({"name": c.name, "kind": c.kind, "rows": len(c.values)}))
        if c.kind == "text":
            for v in c.values:
                if v is None:
                    h.update(b"\0")
                else:
                    b = str(v).encode()
                    h.update(b"\1" + len(b).to_bytes(8, "little") + b)
        else:
            v = np.asarray(c.values, dtype="<f8")
            h.update(np.where(np.isnan(v), np.nan, v).tobytes())
    return h.hexdigest()


def array_digest(columns: list[str], ids: list[str], values) -> str:
    """Hex SHA-256 of a vertical job's rows: column names, row ids and float64 values."""
    h = hashlib.sha256(b"covault rows v1\0")
    h.update(canonical({"columns": list(columns), "ids": [str(i) for i in ids]}))
    v = np.ascontiguousarray(values, dtype="<f8")
    h.update(canonical(list(v.shape)))
    h.update(np.where(np.isnan(v), np.nan, v).tobytes())
    return h.hexdigest()
