"""Certificate revocation: the CA's revocation list and its check at every party.

The CA revokes a certificate in its index (:mod:`covault.deploy.issued`) and writes every
revoked serial into ``CA_DIR/revoked.crl.pem``, an X.509 CRL signed by the CA key, valid until
its next update (``days`` from now). The consortium copies that file to every party, beside
``ca.pem`` in the party's ``[tls] certs`` folder. A party with the file checks, at start, that it
is signed by its ``ca.pem``, is current (now is before its next update) and does not list the
party's own certificate; at every TLS connection, on both sides, it looks the peer's
certificate up in it (:class:`RevocationWatch` re-reads the file when it changes, so a new list
applies to the next connection without a restart). A list that is not the CA's, or is out of
date, stops the party (fail closed); so does, for every new connection, a list removed while the
party runs, or replaced by one with a lower CRL number than the list it replaced. A party
without the file at start checks nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from covault.deploy.certs import (
    CA_CERT,
    CertificateError,
    check_days,
    load_ca,
    load_certificate,
    utc_now,
)
from covault.deploy.issued import Index, Issued

CRL_FILE = "revoked.crl.pem"
CRL_DAYS = 30  # default validity of a revocation list (its next update is due then)
REASONS = (
    "unspecified",
    "key_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "privilege_withdrawn",
)
CLOCK_SKEW = dt.timedelta(minutes=5)


# -- the CA's side -------------------------------------------------------------------------------
def write_crl(ca_dir: str | Path, *, days: int = CRL_DAYS) -> Path:
    """Write ``CA_DIR/revoked.crl.pem``: every certificate revoked in the CA's index, signed by
    the CA, next update in ``days`` days; the CRL number counts up from the index's last one."""
    check_days(days, "the revocation list's validity")
    d = Path(ca_dir)
    ca_cert, ca_key = load_ca(d)
    index = Index.load(d)
    index.crl_number += 1
    now = utc_now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(index.crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    for e in index.revoked():
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(e.serial, 16))
            .revocation_date(dt.datetime.fromisoformat(e.revoked_at or now.isoformat()))
        )
        if e.reason and e.reason != "unspecified":
            entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags[e.reason]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    tmp = d / (CRL_FILE + ".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, d / CRL_FILE)
    index.save()
    return d / CRL_FILE


def revoke(
    ca_dir: str | Path,
    *,
    party: str | None = None,
    serial: str | None = None,
    cert: str | Path | None = None,
    reason: str = "unspecified",
    days: int = CRL_DAYS,
) -> tuple[Path, list[Issued]]:
    """Revoke every valid certificate of ``party``, or the one with ``serial`` (hex), or the
    certificate file ``cert`` (one the index may lack), and write the revocation list
    (:func:`write_crl`); returns its path and the entries revoked."""
    if sum(x is not None for x in (party, serial, cert)) != 1:
        raise CertificateError("revoke takes exactly one of a party name, a serial or a certificate file")
    if reason not in REASONS:
        raise CertificateError(f"unknown revocation reason {reason!r} (one of {', '.join(REASONS)})")
    check_days(days, "the revocation list's validity")  # before the index records anything
    d = Path(ca_dir)
    ca_cert, _ = load_ca(d)
    index = Index.load(d)
    now = utc_now()
    if cert is not None:
        c = load_certificate(cert, "the certificate to revoke")
        try:
            c.verify_directly_issued_by(ca_cert)
        except Exception as exc:  # InvalidSignature, ValueError, TypeError
            raise CertificateError(
                f"{cert} is not a certificate of the consortium CA in {d} ({exc})"
            ) from None
        serial = f"{c.serial_number:x}"
        if serial not in {e.serial for e in index.entries}:
            index.add(c)
    if party is not None:
        targets = index.valid(party, now)
        if not targets:
            known = [e.serial for e in index.entries if e.party == party]
            raise CertificateError(
                f"party {party!r} has no valid certificate in {index.path} to revoke"
                + (f" (its certificates {known} are revoked or expired)" if known else " (none was issued)")
            )
    else:
        want = serial_hex(serial or "")
        targets = [e for e in index.entries if e.serial == want]
        if not targets:
            raise CertificateError(f"no certificate with serial {serial} in {index.path}")
        if targets[0].revoked_at is not None:
            raise CertificateError(
                f"the certificate of party {targets[0].party!r} (serial {want}) is already revoked "
                f"(since {targets[0].revoked_at})"
            )
    for e in targets:
        e.revoked_at, e.reason = now.isoformat(), reason
    index.save()
    return write_crl(d, days=days), targets


def serial_hex(serial: str) -> str:
    """``serial`` as the index writes it (lower-case hex, no leading zeros), from hex with or
    without ``0x``, colons or leading zeros, in either case (as ``openssl`` prints it)."""
    text = serial.strip().replace(":", "").lower().removeprefix("0x")
    try:
        return f"{int(text, 16):x}"
    except ValueError:
        raise CertificateError(f"the serial {serial!r} is not a hexadecimal number") from None


# -- every party's side -----------------------------------------------------------------------------
def load_crl(
    path: str | Path, ca: x509.Certificate, who: str, now: dt.datetime | None = None
) -> x509.CertificateRevocationList:
    """The revocation list in ``path``, checked: valid PEM, issued and signed by ``ca``, and
    current (:func:`check_current`). CertificateError naming ``who`` and the file otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(
            f"{who}: cannot read the revocation list {path}: {exc.strerror or exc}"
        ) from None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise CertificateError(f"{who}: {path} is not a valid PEM revocation list: {exc}") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):
        raise CertificateError(
            f"{who}: the revocation list {path} is not signed by the consortium CA ({ca.subject.rfc4514_string()})"
        )
    check_current(crl, path, who, now)
    return crl


def check_current(
    crl: x509.CertificateRevocationList, path: Path, who: str, now: dt.datetime | None = None
) -> None:
    """The list must have been issued (allowing five minutes of clock skew) and its next update
    must not be due yet; CertificateError naming ``who`` and the file otherwise."""
    now = now or utc_now()
    if crl.last_update_utc > now + CLOCK_SKEW:
        raise CertificateError(
            f"{who}: the revocation list {path} is issued in the future ({crl.last_update_utc:%Y-%m-%d %H:%M} UTC)"
        )
    due = crl.next_update_utc
    if due is None or now > due:
        when = "it has no next update" if due is None else f"its next update was due {due:%Y-%m-%d %H:%M} UTC"
        raise CertificateError(
            f"{who}: the revocation list {path} is out of date ({when}): get the current one from the consortium"
        )


def crl_number(crl: x509.CertificateRevocationList) -> int:
    """The list's CRL number (0 if it has none)."""
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def describe(party: str, revoked: x509.RevokedCertificate) -> str:
    """``the certificate of party 'z' (serial 3f..) is revoked since ... (reason: ...)``."""
    try:
        reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except x509.ExtensionNotFound:
        reason = "unspecified"
    return (
        f"the certificate of party {party!r} (serial {revoked.serial_number:x}) is revoked since "
        f"{revoked.revocation_date_utc:%Y-%m-%d %H:%M} UTC (reason: {reason})"
    )


class RevocationWatch:
    """The revocation list at ``path`` (optional), re-read and re-checked whenever the file
    changes; thread-safe (connections are checked from several threads)."""

    def __init__(self, path: str | Path, ca: x509.Certificate, who: str):
        self.path, self.ca, self.who = Path(path), ca, who
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._crl: x509.CertificateRevocationList | None = None
        self._by_serial: dict[int, x509.RevokedCertificate] = {}

    def current(self) -> x509.CertificateRevocationList | None:
        """The checked list, None if there has never been a file; CertificateError if it is not
        the CA's, is out of date, was removed after it was read, or is older (a lower CRL number)
        than the list it replaced."""
        return self._current()[0]

    def _current(self) -> tuple[x509.CertificateRevocationList | None, dict[int, x509.RevokedCertificate]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            with self._lock:
                if self._crl is None:
                    return None, {}
            raise CertificateError(
                f"{self.who}: the revocation list {self.path} was removed while the party runs: "
                "restore the consortium's current list (a party without one checks nothing only "
                "if it started without one)"
            ) from None
        except OSError as exc:
            raise CertificateError(
                f"{self.who}: cannot read the revocation list {self.path}: {exc}"
            ) from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stamp != self._stamp or self._crl is None:
                crl = load_crl(self.path, self.ca, self.who)
                if self._crl is not None and crl_number(crl) < crl_number(self._crl):
                    raise CertificateError(
                        f"{self.who}: the revocation list {self.path} is older (CRL number "
                        f"{crl_number(crl)}) than the one it replaced (CRL number "
                        f"{crl_number(self._crl)}): restore the consortium's current list"
                    )
                self._crl, self._by_serial = crl, {r.serial_number: r for r in crl}
                self._stamp = stamp
            else:
                check_current(self._crl, self.path, self.who)
            return self._crl, self._by_serial

    def lookup(self, cert: x509.Certificate) -> x509.RevokedCertificate | None:
        """``cert``'s entry in the current list (None: not revoked, or no list)."""
        return self._current()[1].get(cert.serial_number)


def party_watch(directory: str | Path, party: str, cert: x509.Certificate) -> RevocationWatch:
    """The revocation watch of ``party``'s folder, checked now: if ``DIR/revoked.crl.pem``
    exists it must be the CA's, current, and must not list ``cert`` (the party's own)."""
    d = Path(directory)
    who = f"party {party!r}"
    watch = RevocationWatch(d / CRL_FILE, load_certificate(d / CA_CERT, who), who)
    revoked = watch.lookup(cert)
    if revoked is not None:
        raise CertificateError(
            f"{who}: its own certificate is revoked by the consortium: {describe(party, revoked)} "
            f"({watch.path}); request a new one"
        )
    return watch
