"""Signatures of governance records: a party signs with its TLS key (ECDSA P-256, SHA-256);
anyone checks with the party's certificate, which must be signed by the consortium CA and
name that party.

Everything signed is canonical JSON (sorted keys, no spaces, UTF-8) behind a domain prefix
(``covault approval v1\\0``, ...), so that a signature of one kind of record is never valid
for another. A certificate is identified by its key id, the SHA-256 of its DER encoding.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from covault.deploy.certs import CA_CERT, CertificateError, load_certificate, load_private_key, party_name

SIGNATURE = ec.ECDSA(hashes.SHA256())


def canonical(obj: Any) -> bytes:
    """The canonical JSON bytes of ``obj`` (sorted keys, no spaces, no NaN)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def digest(domain: str, obj: Any) -> str:
    """Hex SHA-256 of ``domain``, a NUL byte and the canonical JSON of ``obj``."""
    return hashlib.sha256(domain.encode() + b"\0" + canonical(obj)).hexdigest()


def now() -> str:
    """The current UTC time, ISO 8601 with microseconds (``2026-12-04T10:00:00.123456+00:00``)."""
    return dt.datetime.now(dt.UTC).isoformat()


def key_id(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def parse_cert(pem: str, who: str) -> x509.Certificate:
    """The certificate in the PEM text ``pem``; CertificateError naming ``who`` otherwise."""
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError, AttributeError) as exc:
        raise CertificateError(f"{who}: not a valid PEM certificate: {exc}") from None


@dataclass(frozen=True, eq=False)
class Identity:
    """A party's signing identity: its name, private key and certificate (from its key folder)."""

    party: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def key_id(self) -> str:
        return key_id(self.cert)

    @property
    def cert_pem(self) -> str:
        return cert_pem(self.cert)

    def sign(self, domain: str, obj: Any) -> str:
        """Base64 of the DER ECDSA signature of ``domain``, NUL, canonical JSON of ``obj``."""
        sig = self.key.sign(domain.encode() + b"\0" + canonical(obj), SIGNATURE)
        return base64.b64encode(sig).decode()


def load_identity(keys: str | Path, party: str) -> Identity:
    """``party``'s key and certificate from ``keys/NAME.key`` and ``keys/NAME.pem`` (the TLS
    identity of :mod:`covault.deploy.certs`); CertificateError naming the party and the file if
    either is missing or invalid, the key is not P-256 or does not match the certificate."""
    d = Path(keys)
    who = f"party {party!r}"
    cert = load_certificate(d / f"{party}.pem", who)
    key = load_private_key(d / f"{party}.key", who)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateError(f"{who}: {d / f'{party}.key'} is not an ECDSA P-256 key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise CertificateError(f"{who}: {d / f'{party}.key'} is not the key of {d / f'{party}.pem'}")
    return Identity(party, key, cert)


def load_ca(keys: str | Path, who: str) -> x509.Certificate:
    """The consortium CA certificate ``keys/ca.pem`` (CertificateError naming ``who``)."""
    return load_certificate(Path(keys) / CA_CERT, who)


def parse_time(text: str, who: str) -> dt.datetime:
    """The ISO 8601 time ``text`` of a signed record, which must name its time zone;
    CertificateError naming ``who`` otherwise (a naive time cannot be compared with a
    certificate's validity)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise CertificateError(f"{who}: the signed time {text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise CertificateError(f"{who}: the signed time {text!r} has no time zone")
    return when


def check_cert(cert: x509.Certificate, ca: x509.Certificate, party: str, at: str | None = None) -> None:
    """``cert`` must be signed by ``ca``, name exactly ``party`` and be valid at the ISO time
    ``at`` (default: now); CertificateError saying which check failed."""
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CertificateError(
            f"certificate of {party!r} is not signed by the consortium CA ({exc})"
        ) from None
    name = party_name(cert, f"certificate of {party!r}")
    if name != party:
        raise CertificateError(f"the certificate names {name!r}, not {party!r}")
    when = parse_time(at, f"certificate of {party!r}") if at else dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate of {party!r} is not valid at {when:%Y-%m-%d %H:%M} UTC (valid "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M})"
        )


def check_signature(cert: x509.Certificate, domain: str, obj: Any, signature: str) -> bool:
    """Whether ``signature`` (base64 DER) is ``cert``'s key's signature of ``domain`` and ``obj``."""
    try:
        sig = base64.b64decode(signature, validate=True)
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            return False
        public.verify(sig, domain.encode() + b"\0" + canonical(obj), SIGNATURE)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def check_signed(
    party: str, pem: str, key: str, at: str, ca: x509.Certificate, domain: str, obj: Any, signature: str
) -> str | None:
    """None if ``signature`` is ``party``'s signature of ``domain`` and ``obj`` under the PEM
    certificate ``pem``, which must have key id ``key``, be signed by ``ca``, name ``party`` and
    be valid at ``at``; else why not."""
    try:
        cert = parse_cert(pem, f"certificate of {party!r}")
        if key_id(cert) != key:
            return f"the certificate of {party!r} is not the one the signature names"
        check_cert(cert, ca, party, at=at)
    except (CertificateError, ValueError) as exc:
        return str(exc)
    if not check_signature(cert, domain, obj, signature):
        return f"the signature of {party!r} is invalid (altered after signing, or signed with another key)"
    return None
