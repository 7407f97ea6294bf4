"""Where a party keeps its key and its governance files.

``keys``: the folder of its TLS identity (``ca.pem``, ``NAME.pem``, ``NAME.key``: the job's
``[tls] certs``); ``state``: its governance folder (``approvals/``, ``NAME.audit.sqlite``), by
default the same folder. File names carry the party's name, so parties that share a folder
(every party on one test machine) keep apart. Nothing here is ever sent: a party's peers get
its signed approvals and log heads, never its key or its log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from covault.governance.audit import AuditLog, audit_path
from covault.governance.signing import Identity, load_ca, load_identity


@dataclass(frozen=True)
class PartyFolder:
    """Party ``party``'s key folder and governance folder (module docstring)."""

    party: str
    keys: Path
    state: Path

    def identity(self) -> Identity:
        """Its signing identity (CertificateError naming the party and the file)."""
        return load_identity(self.keys, self.party)

    def ca(self) -> x509.Certificate:
        """The consortium CA certificate it trusts."""
        return load_ca(self.keys, f"party {self.party!r}")

    @property
    def audit_path(self) -> Path:
        return audit_path(self.state, self.party)

    def audit(self, identity: Identity | None = None, *, readonly: bool = False) -> AuditLog:
        """Its audit log; appended entries are signed by ``identity`` (default: loaded here)."""
        if readonly:
            return AuditLog(self.audit_path, self.party, readonly=True)
        return AuditLog(self.audit_path, self.party, identity or self.identity())
