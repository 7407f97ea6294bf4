"""Log heads, signed by their party and countersigned by the others.

At the end of a job every party signs the head of its audit log: ``(party, seq, hash,
fingerprint, time)`` under the domain ``covault audit head v1``, where ``hash`` is the hash of
its entry ``seq`` (which covers every entry before it through the chain). Every other party
checks that signature and countersigns the signed head under ``covault audit countersignature
v1``. A party keeps the countersignatures of its own head and the heads of the others it
countersigned: a party that later edits, deletes or truncates its history no longer matches
the head another party holds (:mod:`covault.governance.verify`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509

from covault.governance.errors import GovernanceError
from covault.governance.signing import Identity, check_signed, now

HEAD_DOMAIN = "covault audit head v1"
COUNTER_DOMAIN = "covault audit countersignature v1"


@dataclass(frozen=True)
class SignedHead:
    """Party ``party``'s log head: entry ``seq`` has hash ``hash``; signed at ``time``."""

    party: str
    seq: int
    hash: str
    fingerprint: str | None
    time: str
    key: str
    certificate: str
    signature: str

    def statement(self) -> dict[str, Any]:
        """What the party signs."""
        return {k: v for k, v in asdict(self).items() if k not in ("certificate", "signature")}


@dataclass(frozen=True)
class Countersignature:
    """Party ``witness``'s signature of ``head`` (and of the head's own signature)."""

    head: SignedHead
    witness: str
    time: str
    key: str
    certificate: str
    signature: str

    def statement(self) -> dict[str, Any]:
        """What the witness signs."""
        return {
            "head": self.head.statement(),
            "head_signature": self.head.signature,
            "witness": self.witness,
            "time": self.time,
            "key": self.key,
        }

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "head": asdict(self.head)}


def sign_head(identity: Identity, seq: int, hash_: str, fingerprint: str | None) -> SignedHead:
    """``identity``'s signature of its log head (entry ``seq`` with hash ``hash_``)."""
    unsigned = SignedHead(
        identity.party, seq, hash_, fingerprint, now(), identity.key_id, identity.cert_pem, ""
    )
    return SignedHead(**{**asdict(unsigned), "signature": identity.sign(HEAD_DOMAIN, unsigned.statement())})


def countersign(identity: Identity, head: SignedHead) -> Countersignature:
    """``identity``'s countersignature of another party's signed ``head``."""
    unsigned = Countersignature(head, identity.party, now(), identity.key_id, identity.cert_pem, "")
    sig = identity.sign(COUNTER_DOMAIN, unsigned.statement())
    return Countersignature(head, identity.party, unsigned.time, identity.key_id, identity.cert_pem, sig)


def check_head(head: SignedHead, ca: x509.Certificate) -> str | None:
    """None if ``head`` is validly signed by its party (certificate of the CA ``ca``)."""
    return check_signed(
        head.party, head.certificate, head.key, head.time, ca, HEAD_DOMAIN, head.statement(), head.signature
    )


def check_countersignature(c: Countersignature, ca: x509.Certificate) -> str | None:
    """None if both the head's signature and ``c.witness``'s countersignature are valid."""
    problem = check_head(c.head, ca)
    if problem is not None:
        return f"head of {c.head.party!r}: {problem}"
    if c.witness == c.head.party:
        return f"{c.witness!r} countersigned its own head"
    return check_signed(
        c.witness, c.certificate, c.key, c.time, ca, COUNTER_DOMAIN, c.statement(), c.signature
    )


def head_from_json(obj: Any, who: str) -> SignedHead:
    """A :class:`SignedHead` from JSON (GovernanceError naming ``who`` if malformed)."""
    fields = SignedHead.__dataclass_fields__
    if not isinstance(obj, dict) or set(obj) != set(fields):
        raise GovernanceError(f"{who}: malformed signed log head")
    if not isinstance(obj["seq"], int) or isinstance(obj["seq"], bool) or obj["seq"] < 0:
        raise GovernanceError(f"{who}: malformed signed log head (seq)")
    if any(not isinstance(obj[k], str) for k in fields if k not in ("seq", "fingerprint")):
        raise GovernanceError(f"{who}: malformed signed log head")
    if obj["fingerprint"] is not None and not isinstance(obj["fingerprint"], str):
        raise GovernanceError(f"{who}: malformed signed log head (fingerprint)")
    return SignedHead(**obj)


def countersignature_from_json(obj: Any, who: str) -> Countersignature:
    """A :class:`Countersignature` from JSON (GovernanceError naming ``who`` if malformed)."""
    fields = Countersignature.__dataclass_fields__
    if not isinstance(obj, dict) or set(obj) != set(fields):
        raise GovernanceError(f"{who}: malformed countersignature")
    if any(not isinstance(obj[k], str) for k in fields if k != "head"):
        raise GovernanceError(f"{who}: malformed countersignature")
    return Countersignature(**{**obj, "head": head_from_json(obj["head"], who)})
