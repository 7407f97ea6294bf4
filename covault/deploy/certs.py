"""Consortium certificates: a CA, and a key and certificate per party (mutual TLS).

Each party's certificate is signed by the consortium CA and names the party twice: as subject
common name and as a DNS subject-alternative name, which is what peers check. Keys are ECDSA
P-256 from the ``cryptography`` package (keys come from the OS CSPRNG). Validity is explicit.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from covault.errors import CovaultError

CA_CERT, CA_KEY = "ca.pem", "ca.key"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class CertificateError(CovaultError):
    """A certificate is missing, invalid, expired, not yet valid, or names the wrong party."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CertificateError(
            f"invalid party name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    return name


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def init_ca(directory: str | Path, *, days: int = 365, name: str = "covault consortium CA") -> Path:
    """Create ``DIR/ca.pem`` and ``DIR/ca.key``; refuse to overwrite an existing CA."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if (d / CA_KEY).exists() or (d / CA_CERT).exists():
        raise CertificateError(f"{d / CA_CERT} already exists; refusing to overwrite a consortium CA")
    if days <= 0:
        raise CertificateError(f"validity must be a positive number of days, got {days}")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(d / CA_KEY, key)
    (d / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / CA_CERT


def issue(
    directory: str | Path,
    party: str,
    *,
    days: int = 365,
    not_before: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Create ``DIR/NAME.key`` and ``DIR/NAME.pem`` signed by the CA in ``DIR``."""
    check_name(party)
    d = Path(directory)
    if party in ("ca",):
        raise CertificateError("'ca' is reserved for the consortium CA")
    try:
        ca_cert = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
        ca_key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as e:
        raise CertificateError(f"no consortium CA in {d} (run 'covault certs init {d}' first): {e}") from None
    if days <= 0:
        raise CertificateError(f"validity must be a positive number of days, got {days}")
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (_now() - dt.timedelta(minutes=5))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(party)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(d / f"{party}.key", key)
    (d / f"{party}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / f"{party}.pem", d / f"{party}.key"


def check_party_files(
    directory: str | Path, party: str, *, now: dt.datetime | None = None
) -> x509.Certificate:
    """Load and check ``DIR/NAME.pem`` (and that ``NAME.key`` exists): it must name the party,
    be signed by ``DIR/ca.pem`` and be valid now. Raises CertificateError naming the party."""
    d = Path(directory)
    for f in (d / CA_CERT, d / f"{party}.pem", d / f"{party}.key"):
        if not f.exists():
            raise CertificateError(f"party {party!r}: missing certificate file {f}")
    cert = x509.load_pem_x509_certificate((d / f"{party}.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
    check_validity(ca, "the consortium CA", now)
    check_validity(cert, f"party {party!r}", now)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as e:  # InvalidSignature, ValueError, TypeError
        raise CertificateError(
            f"party {party!r}: certificate is not signed by the consortium CA ({e})"
        ) from None
    names = cert_party_names(cert)
    if party not in names:
        raise CertificateError(f"party {party!r}: certificate names {sorted(names)}, not {party!r}")
    return cert


def check_validity(cert: x509.Certificate, who: str, now: dt.datetime | None = None) -> None:
    now = now or _now()
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            f"certificate of {who} is not valid yet: valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate of {who} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def cert_party_names(cert: x509.Certificate) -> set[str]:
    """Party names a certificate asserts: its DNS subject-alternative names (and CN)."""
    names = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return {str(n) for n in names}
