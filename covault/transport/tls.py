"""Mutual TLS 1.3 between parties: identities, the TLS channel, and readable TLS errors.

Every party holds a key and a certificate signed by the consortium CA
(:mod:`covault.deploy.certs`). Both ends of a connection present their certificate and require
the other's (``CERT_REQUIRED``, TLS 1.3 only, no session tickets); OpenSSL checks the chain to
the consortium CA and the validity dates. Host names are not checked: a peer is identified by
the one party name its certificate asserts (:func:`covault.deploy.certs.party_name`; a
certificate naming several parties is refused by the handshake, at both ends, with
:class:`PeerIdentityError`), which the connection set-up compares with the party it dialled
(:mod:`covault.transport.dial`) and with the name the peer claims in its hello frame
(:mod:`covault.transport.accept`). With a revocation list in the party's folder
(:mod:`covault.deploy.revocation`), the handshake also looks the peer's certificate up in it, at
both ends of every connection: a revoked peer is refused (:class:`PeerRevokedError`, naming the
party and the serial) and told so in a refusal frame, so that it stops too.

:class:`TlsChannel` runs OpenSSL over memory BIOs (the TLS state is touched only under a lock and
never while blocked on the socket) for the handshake, the certificate checks and a refusal frame;
then :meth:`TlsChannel.seal` keys covault's AES-256-GCM records inside the TLS 1.3 session and
hands the connection to :class:`~covault.transport.sealed.SealedChannel`, which carries every
later byte at several times the speed of Python's TLS records (:mod:`covault.transport.sealed`;
docs/deployment.md, "Transport performance").
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography import x509

from covault.deploy.certs import CA_CERT, CA_KEY, CertificateError, check_party_files, party_name
from covault.deploy.revocation import RevocationWatch, describe, party_watch
from covault.errors import CovaultWarning, PeerError
from covault.transport.channel import RecordChannel, SocketChannel
from covault.transport.sealed import (
    CLOSING,
    KEY_MESSAGE_BYTES,
    MAGIC,
    SEED_BYTES,
    RecordError,
    SealedChannel,
    derive_keys,
)

RAW_BUFFER = 1 << 18  # bytes read from the socket per system call
REVOKED_REFUSAL = "revoked certificate: "  # leads the refusal frame sent to a revoked peer


class PlaintextWarning(CovaultWarning):
    """TLS is switched off: messages between parties are neither encrypted nor authenticated."""


class PeerCertificateError(PeerError, CertificateError):
    """A peer's TLS identity was refused (or it refused ours); names the peer."""


class PeerIdentityError(ssl.SSLError):
    """The peer's certificate chains to the consortium CA but does not name exactly one party;
    raised by :meth:`TlsChannel.handshake` like any other TLS refusal."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text

    @property
    def refusal(self) -> str:
        """The reason sent to the peer in a refusal frame."""
        return f"TLS handshake: {self.text}"


class PeerRevokedError(PeerIdentityError):
    """The peer's certificate is on this party's revocation list (or the list cannot be used:
    then ``serial`` is None)."""

    def __init__(self, party: str, serial: int | None, text: str):
        super().__init__(text)
        self.party, self.serial = party, serial

    @property
    def refusal(self) -> str:
        if self.serial is None:
            return "TLS handshake: this party cannot check certificates (its revocation list is unusable)"
        return REVOKED_REFUSAL + self.text


def warn_plaintext(where: str) -> None:
    """Warn loudly (``warnings`` and a line on stderr) that ``where`` runs without TLS."""
    msg = (
        f"TLS is OFF for {where}: messages between parties travel unencrypted and unauthenticated "
        "(plaintext was requested explicitly; use it only for experiments on trusted networks)"
    )
    warnings.warn(msg, PlaintextWarning, stacklevel=4)  # the caller of covault.run / config_session
    print(f"covault: WARNING: {msg}", file=sys.stderr, flush=True)


class TlsIdentity:
    """One party's TLS material: the consortium CA certificate, its certificate and its key, and
    the revocation list every peer certificate is looked up in (if any)."""

    def __init__(
        self,
        party: str,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        revocation: RevocationWatch | None = None,
    ):
        """The files as given, unchecked; :meth:`from_dir` checks them first."""
        self.party = party
        self.ca, self.cert, self.key = Path(ca), Path(cert), Path(key)
        self.revocation = revocation
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, directory: str | Path, party: str) -> TlsIdentity:
        """``DIR/ca.pem``, ``DIR/NAME.pem`` and ``DIR/NAME.key``, checked first (CertificateError
        naming the party and the file if one is missing or not valid PEM, if the key does not
        match, or if the certificate is expired, not from the CA, or does not name exactly the
        party: :func:`~covault.deploy.certs.check_party_files`), and ``DIR/revoked.crl.pem`` if
        present (the CA's, current, and not listing this party's certificate:
        :func:`~covault.deploy.revocation.party_watch`)."""
        d = Path(directory)
        cert = check_party_files(d, party)
        watch = party_watch(d, party, cert)
        return cls(party, d / CA_CERT, d / f"{party}.pem", d / f"{party}.key", watch)

    def context(self, server_side: bool) -> ssl.SSLContext:
        """The (cached) TLS 1.3 context of this party for accepting or for connecting."""
        with self._lock:
            ctx = self._contexts.get(server_side)
            if ctx is None:
                ctx = self._contexts[server_side] = self._make_context(server_side)
            return ctx

    def _make_context(self, server_side: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False  # peers are identified by party name (checked by the handshake)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        if server_side:
            ctx.num_tickets = 0  # no resumption, and nothing sent after the handshake
        try:
            ctx.load_verify_locations(cafile=str(self.ca))
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(
                f"party {self.party!r}: cannot load TLS material ({self.cert}, {self.key}, CA {self.ca}): {exc}"
            ) from None
        return ctx


@contextlib.contextmanager
def throwaway_certificates(parties: Sequence[str], days: int = 1) -> Iterator[Path]:
    """A temporary directory with a fresh CA and a certificate per party, deleted afterwards.

    The CA key is removed as soon as the party certificates are issued.
    """
    from covault.deploy.certs import init_ca, issue

    with tempfile.TemporaryDirectory(prefix="covault-certs-") as tmp:
        d = Path(tmp)
        init_ca(d, days=days, name="covault throw-away CA")
        for name in parties:
            issue(d, name, days=days)
        (d / CA_KEY).unlink()
        yield d


# -- errors ------------------------------------------------------------------------------------------
_UNKNOWN_CA = {2, 18, 19, 20, 21, 24, 27, 28, 30, 32}  # X509_V_ERR_* meaning "not from our CA"
_VERIFY = {
    9: "its certificate is not valid yet",
    10: "its certificate has expired",
    26: "its certificate is not meant for TLS client/server use",
}
_ALERTS = {
    "TLSV1_ALERT_UNKNOWN_CA": "it refused our certificate: not signed by its consortium CA (unknown CA)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "it refused our certificate: expired (or not yet valid)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "it refused our certificate (bad certificate)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "it refused our certificate (certificate unknown)",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "it refused our certificate (unsupported certificate)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "it requires a client certificate and got none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "it presented no certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "TLS version mismatch (covault requires TLS 1.3)",
    "UNSUPPORTED_PROTOCOL": "TLS version mismatch (covault requires TLS 1.3)",
    "NO_PROTOCOLS_AVAILABLE": "TLS version mismatch (covault requires TLS 1.3)",
    "DECRYPTION_FAILED_OR_BAD_RECORD_MAC": "a TLS record failed authentication (corrupted or tampered stream)",
}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"}
_CERT_ALERTS = {k for k in _ALERTS if "CERTIFICATE" in k or k.endswith("_CA")}


def describe_tls_error(exc: ssl.SSLError) -> tuple[str, bool]:
    """``(readable reason, whether it is about certificates)`` for a TLS failure with a peer."""
    if isinstance(exc, PeerIdentityError):
        return exc.text, True
    if isinstance(exc, RecordError):
        return exc.text, False
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _UNKNOWN_CA:
            text = "its certificate is not signed by the consortium CA (unknown CA)"
        else:
            text = _VERIFY.get(code) or f"its certificate failed verification ({exc.verify_message})"
        return text, True
    reason = exc.reason or ""
    if reason in _ALERTS:
        return _ALERTS[reason], reason in _CERT_ALERTS
    if reason in _NOT_TLS:
        return "it does not speak TLS (is TLS off on its side? plaintext must be set for every party)", False
    return f"TLS failure ({reason or exc})", False


def tls_peer_error(peer: str, exc: ssl.SSLError, during: str = "TLS handshake") -> PeerError:
    """A PeerError (PeerCertificateError for certificate problems) naming ``peer``."""
    text, is_cert = describe_tls_error(exc)
    cls = PeerCertificateError if is_cert else PeerError
    return cls(peer, f"{during} failed: {text}")


# -- channel -----------------------------------------------------------------------------------------
class TlsChannel(RecordChannel):
    """TLS over a connected socket, with OpenSSL driven through memory BIOs (see module doc):
    blocking use only. Construct, call :meth:`handshake` (the socket's timeout bounds it), then
    :meth:`seal` for the channel that carries the traffic.
    """

    tls = True

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        server_side: bool,
        revocation: RevocationWatch | None = None,
    ):
        super().__init__(sock)
        self._revocation = revocation
        self.peer_cert: x509.Certificate | None = None  # set by the handshake
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side)
        self._lock = threading.Lock()  # guards _obj and both BIOs
        self._raw = bytearray(RAW_BUFFER)
        self._rawv = memoryview(self._raw)
        self._partial = False  # the last read filled its view: the record may hold more
        self._back = b""  # plaintext read ahead by :meth:`seal` and given back
        self._server_side = server_side

    # -- handshake ------------------------------------------------------------------------------------
    def handshake(self) -> None:
        """Run the TLS handshake and set ``peer_names`` to the peer's one party name; ssl.SSLError
        on refusal (:class:`PeerIdentityError` for a certificate that does not name exactly one
        party, :class:`PeerRevokedError` for a revoked one), OSError/EOFError on a dead socket."""
        try:
            while True:
                try:
                    self._obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    if not self._fill():
                        raise EOFError("connection closed during the TLS handshake") from None
        except ssl.SSLError:
            with contextlib.suppress(OSError):
                self._flush()  # the alert tells the peer why
            raise
        self._flush()
        der = self._obj.getpeercert(binary_form=True)
        try:
            cert = x509.load_der_x509_certificate(der)
            name = party_name(cert)
        except CertificateError as exc:
            raise PeerIdentityError(f"its {exc}") from None
        except ValueError as exc:
            raise PeerIdentityError(f"its certificate cannot be parsed ({exc})") from None
        if self._revocation is not None:
            try:
                revoked = self._revocation.lookup(cert)
            except CertificateError as exc:
                raise PeerRevokedError(name, None, f"cannot check its certificate: {exc}") from None
            if revoked is not None:
                raise PeerRevokedError(name, revoked.serial_number, describe(name, revoked))
        self.peer_names = frozenset({name})
        self.peer_cert = cert

    @property
    def version(self) -> str | None:
        return self._obj.version()

    def seal(self) -> SocketChannel:
        """After :meth:`handshake`: key covault's records (:mod:`covault.transport.sealed`, steps
        1-2) and return the :class:`~covault.transport.sealed.SealedChannel` to use from then on;
        ``self`` if the peer sent something else first (a refusal frame: read next, by the caller)."""
        mine = os.urandom(SEED_BYTES)
        self.send_buffers([MAGIC + mine])
        got = bytearray()
        while len(got) < KEY_MESSAGE_BYTES:
            ask = (len(MAGIC) if len(got) < len(MAGIC) else KEY_MESSAGE_BYTES) - len(got)
            buf = bytearray(ask)
            n = self.recv_into(memoryview(buf))
            got += buf[:n]
            if not MAGIC.startswith(bytes(got[: len(MAGIC)])):  # a refusal frame: the caller reads it
                self._back = bytes(got)
                return self
            if not n:
                raise EOFError("connection closed during the key exchange for covault's records")
        with self._lock:
            if self._obj.pending():
                raise RecordError("the peer sent more inside TLS than its key message")
            leftover = self._in.read()
        if leftover and leftover[0] not in (0, CLOSING >> 24):
            raise RecordError("the peer sent TLS records after its key message")
        theirs = bytes(got[len(MAGIC) :])
        dialler, acceptor = (theirs, mine) if self._server_side else (mine, theirs)
        out, back = derive_keys(dialler, acceptor)
        if self._server_side:
            out, back = back, out
        return SealedChannel(
            self.sock,
            out,
            back,
            version=self.version,
            peer_names=self.peer_names,
            peer_cert=self.peer_cert,
            leftover=leftover,
        )

    # -- I/O -----------------------------------------------------------------------------------------
    def _flush(self) -> None:
        with self._lock:
            data = self._out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self) -> bool:
        n = self.sock.recv_into(self._rawv)
        if not n:
            return False
        with self._lock:
            self._in.write(self._rawv[:n])
        return True

    def recv_into(self, view: memoryview) -> int:
        while True:  # on a blocking socket read_nb waits in the socket read
            n = self.read_nb(view)
            if n is not None:
                return n

    def send_buffers(self, buffers: Sequence[memoryview | bytes]) -> int:
        views = [memoryview(b).cast("B") for b in buffers if len(b)]
        total = sum(v.nbytes for v in views)
        with contextlib.suppress(OSError) if self._back else contextlib.nullcontext():
            # with _back: the peer answered seal() with a refusal and may be gone: read it next
            self._send_records(views)
        return total

    def _send_records(self, views: list[memoryview]) -> None:
        with self._lock:  # handshake-sized messages: one write, as many TLS records as it takes
            self._obj.write(b"".join(views))
            data = self._out.read()
        self.sock.sendall(data)

    def set_nonblocking(self) -> None:
        raise RuntimeError("a TLS channel carries no traffic: use the channel that seal() returns")

    # -- reading ----------------------------------------------------------------------------------
    def read_nb(self, view: memoryview) -> int | None:
        """Receive plaintext into ``view``, as many TLS records as have arrived (up to its size):
        the count, 0 at the end of the stream, None if no whole record has arrived; ``more``
        tells whether plaintext or ciphertext may be left behind."""
        if self._back:  # given back by seal()
            n = min(len(view), len(self._back))
            view[:n] = self._back[:n]
            self._back = self._back[n:]
            self.more = True
            return n
        if self._eof == "clean":  # a close_notify came after the plaintext returned last time
            self.more = False
            return 0
        self._raise_deferred()  # met after the plaintext returned last time: raise it now
        want, got = len(view), 0
        filled = False  # the last socket read filled the raw buffer (True) or not (None)
        while True:
            # Decrypt only when there is something to decrypt: ciphertext in the BIO, or the rest
            # of a record that filled the last request (SSL_pending() would cost a system call).
            if self._in.pending or self._partial:
                ask = want - got
                with self._lock:
                    try:
                        n = self._obj.read(ask, view[got:] if got else view)
                    except ssl.SSLWantReadError:
                        n = -1
                    except ssl.SSLZeroReturnError:
                        n = 0
                    except ssl.SSLError as exc:  # an alert, a record that fails authentication
                        if not got:
                            raise
                        return self._defer(exc, got)  # the messages before it are delivered first
                self._partial = n == ask
                if n > 0:
                    got += n
                    if got == want:
                        self.more = True
                        return got
                    continue
                if n == 0:  # the peer's close_notify (reported now, or after this plaintext)
                    self._eof = "clean"
                    self.more = got > 0
                    return got
            # No whole record is left: read the socket, unless its last read left nothing behind
            # (or plaintext has come: another read could wait for the peer).
            if filled is None or got:
                self.more = False
                return got or None
            n, now = self._read_raw(self._rawv, got)
            if not n:
                return now
            filled = True if n == len(self._raw) else None
            with self._lock:
                self._in.write(self._rawv[:n])

    def eof_note(self) -> str:
        if self._eof == "abrupt":
            return " abruptly (no TLS close_notify: the peer crashed, was killed or lost its network)"
        return ""

    def close_write(self) -> None:
        with self._lock:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._obj.unwrap()  # queues close_notify; the peer's arrives later
            data = self._out.read()
        with contextlib.suppress(OSError):
            if data:
                self.sock.sendall(data)
        super().close_write()
