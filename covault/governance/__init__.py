"""Governance: signed approvals of a job and each party's tamper-evident audit log.

Pure functions and small files, below the jobs (which call them while a job runs) and above
the data owners; nothing here opens a connection (``docs/governance.md``).

- :mod:`~covault.governance.signing`: a party's signing identity (its TLS key and
  certificate), canonical JSON, ECDSA P-256 / SHA-256 signatures with domain separation,
  certificates checked against the consortium CA.
- :mod:`~covault.governance.fingerprint`: the statement a party signs about a job (its
  fingerprint and one digest per job key, so that a mismatch names the keys).
- :mod:`~covault.governance.approval`: signed approvals and rejections, their files.
- :mod:`~covault.governance.audit`: the append-only, hash-chained, signed audit log (SQLite).
- :mod:`~covault.governance.heads`: log heads, signed by their party and countersigned by the
  others at the end of a job.
- :mod:`~covault.governance.verify`: checks a log (chain, signatures, countersigned heads,
  the copies other parties hold) and names the first bad entry.
- :mod:`~covault.governance.folder`: where a party keeps its key and its governance files.
"""
