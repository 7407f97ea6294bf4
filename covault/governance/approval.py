"""Signed approvals and rejections of a job, and their files.

A party's decision about one version of a job (one fingerprint) is a JSON document::

    {"type": "covault-approval/1", "party": "bank_b", "decision": "approved",
     "fingerprint": "<hex>", "parts": {"task": "<hex>", "model.epochs": "<hex>", ...},
     "job": "fraud", "roles": ["compute", "data"], "time": "2026-12-04T10:00:00+00:00",
     "reason": null, "key": "<key id>", "certificate": "-----BEGIN CERTIFICATE-----...",
     "signature": "<base64 DER ECDSA>"}

The signature covers every field but ``certificate`` and ``signature`` (``key``, the
certificate's SHA-256, binds the certificate) under the domain ``covault approval v1``. It is
valid when the certificate is signed by the consortium CA, names ``party`` and was valid at
``time``. Files: ``STATE/approvals/<fingerprint>.<party>.json`` (the party's latest decision on
that version; a new decision replaces it, the audit log keeps both) and the approvals received
from the other parties when a job ran, ``STATE/approvals/peers/<fingerprint>.<party>.json``.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from covault.governance.errors import GovernanceError
from covault.governance.fingerprint import JobStatement
from covault.governance.signing import Identity, check_signed, digest, now

FORMAT = "covault-approval/1"
DOMAIN = "covault approval v1"
DECISIONS = ("approved", "rejected")


@dataclass(frozen=True)
class Approval:
    """One party's signed decision about one version of a job (module docstring)."""

    party: str
    decision: str
    fingerprint: str
    parts: dict[str, str]
    job: str
    roles: list[str]
    time: str
    reason: str | None
    key: str
    certificate: str
    signature: str

    @property
    def approved(self) -> bool:
        return self.decision == "approved"

    def signed_part(self) -> dict[str, Any]:
        """The fields the signature covers."""
        out = {"type": FORMAT, **asdict(self)}
        del out["certificate"], out["signature"]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"type": FORMAT, **asdict(self)}

    def sha256(self) -> str:
        """Hex digest of the whole signed document (what audit entries cite)."""
        return digest(DOMAIN, self.to_json())


def decide(
    identity: Identity, job: JobStatement, decision: str, *, roles: list[str], reason: str | None = None
) -> Approval:
    """``identity``'s signed ``decision`` (``"approved"`` or ``"rejected"``) about ``job``."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    unsigned = Approval(
        identity.party, decision, job.fingerprint, dict(sorted(job.parts.items())), job.name,
        list(roles), now(), reason, identity.key_id, identity.cert_pem, "",
    )  # fmt: skip
    return _with_signature(unsigned, identity.sign(DOMAIN, unsigned.signed_part()))


def _with_signature(a: Approval, signature: str) -> Approval:
    return Approval(**{**asdict(a), "signature": signature})


def from_json(obj: Any, who: str) -> Approval:
    """An :class:`Approval` from its JSON document; GovernanceError naming ``who`` if malformed."""
    fields = set(Approval.__dataclass_fields__)
    if not isinstance(obj, dict) or obj.get("type") != FORMAT or set(obj) - {"type"} != fields:
        raise GovernanceError(f"{who}: not a covault approval ({FORMAT})")
    strings = fields - {"parts", "roles", "reason"}
    if any(not isinstance(obj[k], str) for k in strings) or obj["decision"] not in DECISIONS:
        raise GovernanceError(f"{who}: malformed approval")
    if not isinstance(obj["parts"], dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj["parts"].items()
    ):
        raise GovernanceError(f"{who}: malformed approval (parts)")
    if not isinstance(obj["roles"], list) or not (obj["reason"] is None or isinstance(obj["reason"], str)):
        raise GovernanceError(f"{who}: malformed approval")
    return Approval(**{k: obj[k] for k in fields})


def check_approval(a: Approval, ca: x509.Certificate, party: str) -> str | None:
    """None if ``a`` is a valid decision of ``party`` (signature by a certificate of the
    consortium CA ``ca`` that names ``party`` and was valid when it was signed); else why not."""
    if a.party != party:
        return f"it is signed as party {a.party!r}"
    return check_signed(party, a.certificate, a.key, a.time, ca, DOMAIN, a.signed_part(), a.signature)


def approval_path(state: str | Path, fingerprint: str, party: str, *, peer: bool = False) -> Path:
    """Where ``party``'s decision about ``fingerprint`` is kept (``peer``: a copy received)."""
    base = Path(state) / "approvals"
    return (base / "peers" if peer else base) / f"{fingerprint}.{party}.json"


def save_approval(state: str | Path, a: Approval, *, peer: bool = False) -> Path:
    """Write ``a`` to its file (atomically; the folder is created with mode 0700)."""
    path = approval_path(state, a.fingerprint, a.party, peer=peer)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
    tmp.write_text(json.dumps(a.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_approval(path: str | Path) -> Approval:
    """The approval in the file ``path`` (GovernanceError naming the file if it is malformed)."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GovernanceError(f"approval file {p}: cannot be read: {exc}") from None
    return from_json(obj, f"approval file {p}")


def load_approval(state: str | Path, fingerprint: str, party: str) -> Approval | None:
    """``party``'s own decision about ``fingerprint``, or None if it has made none."""
    path = approval_path(state, fingerprint, party)
    return read_approval(path) if path.is_file() else None


def list_approvals(state: str | Path, party: str | None = None) -> list[Approval]:
    """Every decision kept in ``state`` (of ``party`` only, if given), oldest first."""
    folder = Path(state) / "approvals"
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        _, _, rest = path.name.partition(".")
        if party is not None and rest != f"{party}.json":
            continue
        out.append(read_approval(path))
    return sorted(out, key=lambda a: a.time)


def latest_for_job(state: str | Path, party: str, name: str) -> Approval | None:
    """``party``'s most recent decision about any version of the job called ``name``."""
    found = [a for a in list_approvals(state, party) if a.job == name]
    return found[-1] if found else None
