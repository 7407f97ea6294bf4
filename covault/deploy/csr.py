"""Own keys: a party creates its key and a certificate signing request on its own host
(:func:`request`); the consortium CA signs the request (:func:`sign`). Only the request and the
certificate travel; the party's key never leaves its folder, the CA's key never leaves the CA's.

A request names exactly one party, as subject CN and as the one DNS subject-alternative name
(the encoding of :func:`covault.deploy.certs.party_name`), with an ECDSA P-256 key; the CA
refuses anything else rather than signing less than was asked.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from covault.deploy.certs import (
    CA_CERT,
    CA_KEY,
    CertificateError,
    check_name,
    load_ca,
    load_private_key,
    party_certificate,
    utc_now,
    write_key,
)
from covault.deploy.issued import Index

CSR_SUFFIX = ".csr"


def request(directory: str | Path, party: str, *, reuse_key: bool = False) -> tuple[Path, Path]:
    """Create ``DIR/NAME.key`` (ECDSA P-256, mode 0600, ``O_EXCL``: an existing key is never
    overwritten) and ``DIR/NAME.csr`` naming exactly ``party``; returns (csr, key).

    ``reuse_key``: request a certificate for the existing ``DIR/NAME.key`` (renewal) instead."""
    check_name(party)
    if party == "ca":
        raise CertificateError("'ca' is reserved for the consortium CA")
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path, csr_path = d / f"{party}.key", d / f"{party}{CSR_SUFFIX}"
    who = f"party {party!r}"
    if reuse_key:
        key = load_private_key(key_path, who)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise CertificateError(f"{who}: {key_path} is not an ECDSA P-256 key")
    else:
        if key_path.exists():
            raise CertificateError(
                f"{who}: {key_path} already exists: refusing to overwrite a private key "
                "(--reuse-key requests a certificate for it; remove it yourself to start over)"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        write_key(key_path, key, exclusive=True)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(party)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return csr_path, key_path


def load_request(path: str | Path) -> x509.CertificateSigningRequest:
    """The PEM request in ``path``, its self-signature checked; CertificateError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read the request {path}: {exc.strerror or exc}") from None
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CertificateError(f"{path} is not a valid PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise CertificateError(
            f"{path}: the request's signature does not verify (altered or not made with its key)"
        )
    return csr


def request_name(csr: x509.CertificateSigningRequest, where: str) -> str:
    """The one party ``csr`` names; CertificateError (led by ``where``) if it names none or
    several, asks for other subject attributes or extensions, or has a key other than P-256."""
    others = sorted({a.rfc4514_attribute_name for a in csr.subject if a.oid != NameOID.COMMON_NAME})
    if others:
        raise CertificateError(
            f"{where}: the request's subject holds {others}; a party request holds only its CN"
        )
    names = {str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    for ext in csr.extensions:
        if not isinstance(ext.value, x509.SubjectAlternativeName):
            raise CertificateError(
                f"{where}: the request asks for extension {type(ext.value).__name__}; a party request holds only "
                "its DNS subject-alternative name"
            )
        if any(not isinstance(n, x509.DNSName) for n in ext.value):
            raise CertificateError(f"{where}: the request's subject-alternative names must be DNS names only")
        names |= set(ext.value.get_values_for_type(x509.DNSName))
    found = sorted(names)
    if len(found) != 1:
        raise CertificateError(
            f"{where}: the request names {len(found)} parties {found} (subject CN and DNS "
            "subject-alternative names); a party certificate must name exactly one party"
        )
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateError(f"{where}: the request's key is not an ECDSA P-256 key")
    return check_name(found[0])


@dataclass(frozen=True)
class Signed:
    """What :func:`sign` wrote: the certificate file, its party, serial and expiry, and the
    serials of the party's earlier certificates that stay valid (after ``renew``)."""

    path: Path
    party: str
    serial: int
    not_after: dt.datetime
    still_valid: tuple[str, ...]


def sign(
    ca_dir: str | Path,
    csr_path: str | Path,
    *,
    days: int,
    out: str | Path | None = None,
    name: str | None = None,
    renew: bool = False,
) -> Signed:
    """Sign the request ``csr_path`` with the CA in ``ca_dir`` for ``days`` days and record it in
    the CA's index; the certificate goes to ``out`` (default: ``NAME.pem`` beside the request).

    The request must verify, name exactly one party and that party must be ``name`` (default:
    the request's file name without ``.csr``). A party with a valid certificate already (neither
    revoked nor expired) is refused unless ``renew``; its earlier certificates stay valid
    until they expire or are revoked (:attr:`Signed.still_valid`)."""
    d, csr_path = Path(ca_dir), Path(csr_path)
    ca_cert, ca_key = load_ca(d)
    csr = load_request(csr_path)
    party = request_name(csr, str(csr_path))
    expected = name if name is not None else csr_path.name.removesuffix(CSR_SUFFIX)
    if party != expected:
        via = "--name" if name is not None else "its file name"
        raise CertificateError(f"{csr_path}: the request names {party!r}, not {expected!r} ({via})")
    index = Index.load(d)
    now = utc_now()
    earlier = tuple(e.serial for e in index.valid(party, now))
    if earlier and not renew:
        raise CertificateError(
            f"party {party!r} already has a valid certificate (serial {', '.join(earlier)}): "
            "sign with --renew to issue another, or revoke it first"
        )
    target = Path(out) if out is not None else csr_path.with_name(f"{party}.pem")
    if target.resolve() in {(d / CA_CERT).resolve(), (d / CA_KEY).resolve()}:
        raise CertificateError(f"refusing to write a party certificate over the CA's {target}")
    taken = index.serials()
    serial = x509.random_serial_number()
    while serial in taken:
        serial = x509.random_serial_number()
    cert = party_certificate(ca_cert, ca_key, party, csr.public_key(), days=days, serial=serial)
    _write_no_link(target, cert.public_bytes(serialization.Encoding.PEM))
    index.add(cert)
    index.save()
    return Signed(target, party, serial, cert.not_valid_after_utc, earlier)


def _write_no_link(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (created 0644 or truncated), refusing a symbolic link there (an
    inbox others can write to must not make the CA overwrite another file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise CertificateError(
                f"{path} is a symbolic link: refusing to write the certificate through it"
            ) from None
        raise CertificateError(f"cannot write the certificate {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
