"""Connection set-up, the dialling side: connect to a later party and handshake, with retries.

The connecting side retries until the set-up timeout while an attempt is cut short before the
hello completes (connection refused, reset, closed, or a handshake timing out: the peer is not
up yet, restarting, or busy), pausing 5 ms, then twice as long each time, up to
:data:`RETRY_DELAY`. A verdict fails at once: a refusal frame with its reason (another session,
a certificate for another name, an unexpected party), a TLS refusal, a malformed hello. Each
attempt is bounded as a whole by twice the handshake timeout (a wait for one of the accepting
party's handshake slots, then the handshake), however slowly the peer's bytes arrive.
"""

from __future__ import annotations

import errno
import hmac
import logging
import socket
import ssl
import time

from covault.errors import PeerError
from covault.transport import handshake
from covault.transport.channel import SocketChannel
from covault.transport.framing import FrameError
from covault.transport.handshake import (
    _DEADLINES,
    _NEEDS_TLS,
    _ONE_SIDE,
    _SET_UP_OVER,
    _Handshake,
    _read_hello,
    _Refused,
    _send_hello,
    _send_refusal,
    _send_tls_notice,
    prepare_socket,
)
from covault.transport.sessionid import SessionMismatchError, _differing, connection_tag
from covault.transport.tls import (
    _NOT_TLS,
    REVOKED_REFUSAL,
    PeerCertificateError,
    tls_peer_error,
)

RETRY_DELAY = 0.25  # longest pause between two attempts of a dialling party

log = logging.getLogger("covault.transport")


def _down(peer: str, message: str) -> PeerError:
    """A PeerError for a party that did not connect in time (ranked after other set-up errors)."""
    err = PeerError(peer, message)
    err.down = True
    return err


class _Retry(Exception):
    """An attempt to connect failed in a way that another attempt may not (refused, reset, closed
    or timed out before the hello completed)."""

    def __init__(self, reason: str, connected: bool):
        super().__init__(reason)
        self.connected = connected  # the TCP connection itself was made


def _cut_short(exc: ssl.SSLError) -> bool:
    """Whether a TLS failure is a connection closed or reset mid-handshake (no TLS verdict)."""
    return isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)) or exc.errno in (
        errno.ECONNRESET,
        errno.EPIPE,
    )


def _connect(hs: _Handshake, peer: str, address: tuple[str, int], deadline: float, timeout: float):
    """Connect to ``peer`` and handshake, retrying until ``deadline`` while attempts are cut short
    (refused, reset, closed or timed out before the hello completes); a refusal with a reason, a
    TLS verdict or a wrong identity fails at once."""
    delay, last = 0.005, None
    where = f"{address[0]}:{address[1]}"
    while True:
        if hs.stopping():
            err = PeerError(peer, "connection set-up abandoned (another peer failed)")
            err.abandoned = True
            raise err
        if time.monotonic() >= deadline:
            if last is None or not last.connected:
                text = f"could not connect to {where} within {timeout:g} s (is it running, and is its port reachable?)"
            else:
                text = f"connected to {where} but no handshake completed within {timeout:g} s"
            raise _down(peer, f"did not come up: {text}" + (f"; last attempt: {last}" if last else ""))
        try:
            return _attempt(hs, peer, address, deadline)
        except _Retry as exc:
            last = exc
            log.debug("party %r: connection to %r at %s cut short (retrying): %s", hs.me, peer, where, exc)
        time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 2, RETRY_DELAY)


def _attempt(hs: _Handshake, peer: str, address: tuple[str, int], deadline: float) -> SocketChannel:
    """One attempt of :func:`_connect`: raises _Retry, or PeerError for a verdict."""
    where = f"{address[0]}:{address[1]}"
    # the whole attempt, however the peer trickles its bytes: a wait for a slot, then the handshake
    limit = max(0.001, min(deadline - time.monotonic(), 2 * handshake.HANDSHAKE_TIMEOUT))
    end = time.monotonic() + limit
    try:
        sock = socket.create_connection(address, timeout=limit)
    except OSError as exc:
        raise _Retry(f"could not connect ({exc})", False) from None
    ch: SocketChannel | None = None
    watch = _DEADLINES.watch(sock, end)
    try:
        sock.settimeout(max(0.001, end - time.monotonic()))
        try:
            ch = prepare_socket(sock, hs.tls, server_side=False)
        except ssl.SSLError as exc:
            if _cut_short(exc):
                raise _Retry("the TLS handshake was cut short", True) from None
            if getattr(exc, "reason", None) in _NOT_TLS:  # it answered without TLS: say who called
                _send_tls_notice(sock, hs.me)
                raise PeerError(peer, f"TLS handshake failed: it does not speak TLS ({_ONE_SIDE})") from None
            raise tls_peer_error(peer, exc) from None
        except (EOFError, OSError) as exc:
            raise _Retry(f"the TLS handshake was cut short ({exc or 'connection closed'})", True) from None
        if ch.peer_names is not None and peer not in ch.peer_names:
            names = sorted(ch.peer_names)
            _send_refusal(ch, f"{hs.me!r} dialled {peer!r} but your certificate names {names}")
            raise PeerCertificateError(
                peer, f"refused: the server at {where} presented a certificate for {names}, not for {peer!r}"
            )
        try:
            _send_hello(ch, hs.me, hs.session_id, hs.nonce, hs.blob)
            sid, name, nonce, theirs = _read_hello(ch)
        except _Refused as exc:
            if exc.manifest is not None:  # another session: the keys that differ, at once
                raise SessionMismatchError(peer, _differing(hs.manifest, exc.manifest)) from None
            if str(exc) == _NEEDS_TLS:
                raise PeerError(
                    peer, f"handshake failed: it requires TLS and this party runs without it ({_ONE_SIDE})"
                ) from None
            revoked = str(exc).startswith(REVOKED_REFUSAL)  # this party's certificate
            err = (PeerCertificateError if revoked else PeerError)(
                peer, f"handshake failed: it refused the connection: {exc}"
            )
            err.collateral = str(exc) == _SET_UP_OVER  # it stopped: usually because of another peer
            err.revoked = revoked  # the set-up goes on briefly, so that every party learns it
            raise err from None
        except FrameError as exc:
            raise PeerError(peer, f"handshake failed: malformed hello from {where}: {exc}") from None
        except ssl.SSLError as exc:  # TLS 1.3: a refusal of our certificate arrives here
            if _cut_short(exc):
                raise _Retry("the connection was cut short during the hello", True) from None
            raise tls_peer_error(peer, exc) from None
        except EOFError:
            hint = (
                " (does it expect TLS? plaintext must be set for every party or none)" if not hs.tls else ""
            )
            raise _Retry(f"it closed the connection during the hello{hint}", True) from None
        except OSError as exc:
            raise _Retry(f"the connection was cut short during the hello ({exc})", True) from None
        if not _DEADLINES.release(watch):
            raise _Retry(f"no handshake within {limit:g} s", True)
        if not hmac.compare_digest(sid, hs.session_id):
            raise SessionMismatchError(peer, _differing(hs.manifest, theirs))
        if name != peer:
            raise PeerError(peer, f"the server at {where} introduced itself as {name!r}")
        ch.tag = connection_tag(hs.session_id, (hs.me, hs.nonce), (peer, nonce))
        ch.settimeout(None)
        return ch
    except BaseException as exc:
        cut = not _DEADLINES.release(watch)
        (ch or sock).close()
        if cut and isinstance(exc, Exception):  # the deadline cut it: no verdict of the peer's
            raise _Retry(f"no handshake within {limit:g} s", True) from None
        if isinstance(exc, PeerError):
            log.warning("party %r: connection to %r failed: %s", hs.me, peer, exc)
        raise
