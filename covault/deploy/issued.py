"""The consortium CA's index of issued certificates: ``CA_DIR/issued.json``.

One entry per certificate the CA signed (``covault certs sign``, and ``covault certs issue`` for
local tests): its serial (hex), party, validity, SHA-256 fingerprint and, once revoked, when and
why. The index is what ``covault certs sign`` consults to refuse a second valid certificate for
a name, and what ``covault certs revoke`` turns into the revocation list. It is written
atomically (a temporary file, then a rename) and holds nothing secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from covault.deploy.certs import CertificateError, party_name

INDEX = "issued.json"


@dataclass
class Issued:
    """One certificate the CA signed."""

    serial: str  # lower-case hex, no prefix
    party: str
    not_before: str  # ISO 8601 UTC
    not_after: str
    sha256: str  # of the DER certificate
    revoked_at: str | None = None
    reason: str | None = None

    def valid_at(self, when: dt.datetime) -> bool:
        """Not revoked and within its validity dates at ``when``."""
        return self.revoked_at is None and dt.datetime.fromisoformat(
            self.not_before
        ) <= when <= dt.datetime.fromisoformat(self.not_after)


@dataclass
class Index:
    """The index of ``CA_DIR``: its entries and the number of the last revocation list."""

    path: Path
    entries: list[Issued]
    crl_number: int = 0

    @classmethod
    def load(cls, ca_dir: str | Path) -> Index:
        """The index of ``ca_dir`` (empty if it has none yet); CertificateError naming the file
        if it is not a valid index."""
        path = Path(ca_dir) / INDEX
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path, [])
        except (OSError, ValueError) as exc:
            raise CertificateError(f"the consortium CA: cannot read its index {path}: {exc}") from None
        try:
            entries = [Issued(**e) for e in raw["certificates"]]
            number = int(raw["crl_number"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CertificateError(f"the consortium CA: {path} is not a covault index ({exc!r})") from None
        return cls(path, entries, number)

    def save(self) -> None:
        data = {
            "version": 1,
            "crl_number": self.crl_number,
            "certificates": [asdict(e) for e in self.entries],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, cert: x509.Certificate) -> Issued:
        """Record ``cert`` (not saved until :meth:`save`)."""
        entry = Issued(
            serial=f"{cert.serial_number:x}",
            party=party_name(cert, "the certificate to record"),
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        )
        self.entries = [e for e in self.entries if e.serial != entry.serial]
        self.entries.append(entry)
        return entry

    def serials(self) -> set[int]:
        return {int(e.serial, 16) for e in self.entries}

    def valid(self, party: str, when: dt.datetime) -> list[Issued]:
        """``party``'s certificates that are neither revoked nor expired at ``when``."""
        return [e for e in self.entries if e.party == party and e.valid_at(when)]

    def revoked(self) -> list[Issued]:
        return [e for e in self.entries if e.revoked_at is not None]


def record(ca_dir: str | Path, cert: x509.Certificate) -> Issued:
    """Add ``cert`` to the index of ``ca_dir`` and save it."""
    index = Index.load(ca_dir)
    entry = index.add(cert)
    index.save()
    return entry
