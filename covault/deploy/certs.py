"""Consortium certificates: a CA, and a key and certificate per party (mutual TLS).

Each party's certificate is signed by the consortium CA and names the party twice: as subject
common name and as a DNS subject-alternative name. A consortium makes them from each party's own
key (:mod:`covault.deploy.csr`); :func:`issue` makes key and certificate at the CA, for local
tests only. Revocation: :mod:`covault.deploy.revocation`. A party certificate must name exactly one
party (:func:`party_name`, the one check of the name that both ends of a connection and a
party loading its own identity use). Keys are ECDSA P-256 from the ``cryptography`` package
(keys come from the OS CSPRNG). Validity is explicit. Files that are missing, unreadable or not
valid PEM raise :class:`CertificateError` naming the file and the party.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from covault.errors import CovaultError

CA_CERT, CA_KEY = "ca.pem", "ca.key"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_DAYS = 36500  # the longest validity of a certificate or revocation list (100 years)


class CertificateError(CovaultError):
    """A certificate is missing, invalid, expired, not yet valid, or names the wrong party."""


def utc_now() -> dt.datetime:
    """The current UTC time."""
    return dt.datetime.now(dt.UTC)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CertificateError(
            f"invalid party name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    return name


def check_days(days: int, what: str) -> int:
    """``days`` if it is a whole number from 1 to :data:`MAX_DAYS`; CertificateError naming
    ``what`` (e.g. "the CA's validity") and the bound otherwise."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"{what} must be a whole number of days from 1 to {MAX_DAYS}, got {days!r}")
    return days


def _read(path: Path, who: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{who}: missing certificate file {path}") from None
    except OSError as e:
        raise CertificateError(f"{who}: cannot read {path}: {e.strerror or e}") from None


def load_certificate(path: str | Path, who: str) -> x509.Certificate:
    """The PEM certificate in ``path``; CertificateError naming ``who`` and the file otherwise."""
    path = Path(path)
    data = _read(path, who)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertificateError(
            f"{who}: {path} is not a valid PEM certificate: no '-----BEGIN CERTIFICATE-----' block"
        )
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise CertificateError(f"{who}: {path} is not a valid PEM certificate: {e}") from None


def load_private_key(path: str | Path, who: str) -> PrivateKeyTypes:
    """The unencrypted PEM private key in ``path``; CertificateError naming ``who`` and the file
    otherwise."""
    path = Path(path)
    data = _read(path, who)
    if b"PRIVATE KEY-----" not in data:
        raise CertificateError(
            f"{who}: {path} is not a valid PEM private key: no '-----BEGIN PRIVATE KEY-----' block"
        )
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateError(
            f"{who}: {path} is an encrypted private key; covault needs it unencrypted (protect it by mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertificateError(f"{who}: {path} is not a valid PEM private key: {e}") from None


def write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, exclusive: bool = False) -> None:
    """Write ``key`` (PKCS#8 PEM, unencrypted) to ``path`` with mode 0600 from its creation on.

    ``exclusive``: create the file with ``O_CREAT|O_EXCL`` and raise CertificateError naming it
    if it exists (a private key is never overwritten); otherwise an existing file is truncated
    (and set to 0600 before anything is written)."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CertificateError(
            f"{path} already exists: refusing to overwrite a private key (remove it yourself to start over)"
        ) from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def init_ca(directory: str | Path, *, days: int = 365, name: str = "covault consortium CA") -> Path:
    """Create ``DIR/ca.pem`` and ``DIR/ca.key``; refuse to overwrite an existing CA. A new
    ``DIR`` is made with mode 0700 (its index and lists are the CA's to change)."""
    check_days(days, "the CA's validity")
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (d / CA_KEY).exists() or (d / CA_CERT).exists():
        raise CertificateError(f"{d / CA_CERT} already exists; refusing to overwrite a consortium CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = utc_now()
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
    write_key(d / CA_KEY, key, exclusive=True)
    (d / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / CA_CERT


def load_ca(directory: str | Path) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """The consortium CA's certificate and key from ``DIR/ca.pem`` and ``DIR/ca.key``."""
    d = Path(directory)
    for f in (d / CA_CERT, d / CA_KEY):
        if not f.exists():
            raise CertificateError(
                f"no consortium CA in {d} (run 'covault certs init {d}' first): {f} is missing"
            )
    return load_certificate(d / CA_CERT, "the consortium CA"), load_private_key(
        d / CA_KEY, "the consortium CA"
    )


def party_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKeyTypes,
    party: str,
    public_key: PublicKeyTypes,
    *,
    days: int,
    not_before: dt.datetime | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """A certificate for ``party``'s ``public_key`` signed by the CA: ``party`` as subject CN and
    as the only DNS subject-alternative name, TLS client and server use, valid for ``days`` days
    from ``not_before`` (default: five minutes ago)."""
    check_name(party)
    if party == "ca":
        raise CertificateError("'ca' is reserved for the consortium CA")
    check_days(days, f"the validity of party {party!r}'s certificate")
    start = not_before or (utc_now() - dt.timedelta(minutes=5))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
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


def issue(
    directory: str | Path,
    party: str,
    *,
    days: int = 365,
    not_before: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Create ``DIR/NAME.key`` and ``DIR/NAME.pem`` signed by the CA in ``DIR``: every key at
    one desk, for local tests only (a consortium uses :mod:`covault.deploy.csr`)."""
    check_name(party)
    d = Path(directory)
    if party == "ca":
        raise CertificateError("'ca' is reserved for the consortium CA")
    check_days(days, f"the validity of party {party!r}'s certificate")
    ca_cert, ca_key = load_ca(d)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = party_certificate(ca_cert, ca_key, party, key.public_key(), days=days, not_before=not_before)
    write_key(d / f"{party}.key", key)
    (d / f"{party}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / f"{party}.pem", d / f"{party}.key"


def check_party_files(
    directory: str | Path, party: str, *, now: dt.datetime | None = None
) -> x509.Certificate:
    """Load and check ``DIR/NAME.pem`` and ``DIR/NAME.key``: valid PEM, the key matches the
    certificate, which names exactly the party, is signed by ``DIR/ca.pem`` and is valid now.
    Raises CertificateError naming the party (and the file)."""
    d = Path(directory)
    who = f"party {party!r}"
    for f in (d / CA_CERT, d / f"{party}.pem", d / f"{party}.key"):
        if not f.exists():
            raise CertificateError(f"{who}: missing certificate file {f}")
    ca = load_certificate(d / CA_CERT, who)
    cert = load_certificate(d / f"{party}.pem", who)
    key = load_private_key(d / f"{party}.key", who)
    check_validity(ca, "the consortium CA", now)
    check_validity(cert, who, now)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as e:  # InvalidSignature, ValueError, TypeError
        raise CertificateError(f"{who}: certificate is not signed by the consortium CA ({e})") from None
    name = party_name(cert, f"{who}: {d / f'{party}.pem'}")
    if name != party:
        raise CertificateError(f"{who}: certificate names [{name!r}], not {party!r}")
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise CertificateError(f"{who}: {d / f'{party}.key'} is not the key of {d / f'{party}.pem'}")
    return cert


def _public_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_validity(cert: x509.Certificate, who: str, now: dt.datetime | None = None) -> None:
    now = now or utc_now()
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            f"certificate of {who} is not valid yet: valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate of {who} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def party_name(cert: x509.Certificate, who: str = "") -> str:
    """The one party name ``cert`` asserts: its subject CN and DNS subject-alternative names must
    all be that name. CertificateError (message led by ``who``, if given) otherwise."""
    names = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    found = sorted(str(n) for n in names)
    if len(found) == 1:
        return found[0]
    if found:
        problem = (
            f"certificate names {len(found)} parties {found} (subject CN and DNS subject-alternative "
            "names); a party certificate must name exactly one party"
        )
    else:
        problem = "certificate names no party (no subject CN or DNS subject-alternative name)"
    raise CertificateError(f"{who}: {problem}" if who else problem)
