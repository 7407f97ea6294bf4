"""Connection set-up: every party connected to every other, authenticated, in one call.

:func:`connect_mesh`: every party listens on its own socket; for each pair the party earlier in
the party order connects to the later one (:mod:`covault.transport.dial`), and accepts the
parties before it (:mod:`covault.transport.accept`). All of a party's connections are set up at
once (one thread per outgoing connection, one per incoming handshake), so a party that never
comes up delays only the pairs it belongs to, and every error names it. Each connection:

1. :func:`~covault.transport.handshake.prepare_socket` (the one place where sockets are set up):
   socket options, then, with TLS, the mutual TLS 1.3 handshake (:mod:`covault.transport.tls`);
   the connecting side requires the peer's certificate to name the party it dialled;
2. hello frames both ways: ``[session id, party name, incarnation nonce, manifest]``
   (:mod:`covault.transport.handshake`). The accepting side checks (TLS) that the peer's
   certificate names the party it claims to be, the session id, and that it is a party expected
   to connect; then answers, and the connecting side checks the answer the same way;
3. both derive the connection tag (:func:`~covault.transport.sessionid.connection_tag`), which
   every later frame carries and the reader checks (:mod:`covault.transport.framing`).

An unexpected or already connected party, or a certificate for another name, is refused with an
abort frame giving the reason, logged on logger ``covault.transport``, and does not disturb the
session. A revoked certificate (on a party's revocation list, :mod:`covault.deploy.revocation`)
is refused at either end of a connection with an abort frame naming the party and the serial;
the revoked party, told so, stops like a party of another session: after answering and dialling
the others for the mismatch grace, so that every party it reaches learns why. After set-up the
listener stays open (:class:`~covault.transport.accept.LateJoinGuard`) only to refuse late or
restarted parties (and those of another session) with a clear reason; a restarted party cannot
rejoin a running session. The connected channels then carry the
session's messages (:class:`covault.transport.loop.TcpTransport`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping, Sequence

from covault.errors import PartyError, PeerError
from covault.transport.accept import LateJoinGuard, _Acceptor
from covault.transport.channel import SocketChannel
from covault.transport.dial import _connect, _down
from covault.transport.handshake import _Handshake
from covault.transport.sessionid import SESSION_ID_BYTES, SessionMismatchError
from covault.transport.tls import PeerCertificateError, TlsIdentity

HOST = "127.0.0.1"
BACKLOG = 128  # listen queue of a party's socket


def open_listener(host: str = HOST, port: int = 0, backlog: int = BACKLOG) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port chosen by the kernel)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def connect_mesh(
    me: str,
    order: Sequence[str],
    listener: socket.socket,
    addresses: Mapping[str, tuple[str, int]],
    session_id: bytes,
    timeout: float,
    *,
    tls: TlsIdentity | None = None,
    nonce: bytes | None = None,
    guard: LateJoinGuard | None = None,
    manifest: Mapping[str, bytes] | None = None,
) -> dict[str, SocketChannel]:
    """Connected, authenticated channels to every other party in ``order`` (by peer name).

    ``me`` connects to the parties after it and accepts the parties before it, all at once;
    see the module docstring for the checks. Raises PeerError naming the peer on failure
    (PeerCertificateError for certificate problems, SessionMismatchError when a party runs
    another session), after at most ``timeout`` seconds. ``manifest`` (default: that of a
    :class:`SessionId`) is sent in the hello. The listener is closed when done, or handed to
    ``guard``.
    """
    if me not in order:
        raise PartyError(f"party {me!r} is not in the party order {list(order)}")
    long = [p for p in order if not 0 < len(p.encode()) <= 255]
    if long:
        raise PartyError(f"party names must have 1 to 255 bytes (UTF-8), got {long[0]!r}")
    if len(session_id) != SESSION_ID_BYTES:
        raise PartyError(f"session id must have {SESSION_ID_BYTES} bytes, got {len(session_id)}")
    missing = [p for p in order if p != me and p not in addresses]
    if missing:
        raise PartyError(f"no address for {missing}")
    hs = _Handshake(me, session_id, tls, nonce, manifest)
    deadline = time.monotonic() + timeout
    mine = order.index(me)
    acceptor = _Acceptor(listener, order[:mine], hs, deadline, timeout, [p for p in order if p != me])
    acceptor.guard = guard is not None
    outcomes: dict[str, SocketChannel | BaseException] = {}

    def dial(peer: str) -> None:
        try:
            outcomes[peer] = _connect(hs, peer, tuple(addresses[peer]), deadline, timeout)
        except BaseException as exc:
            outcomes[peer] = exc
            if isinstance(exc, SessionMismatchError) or getattr(exc, "revoked", False):
                hs.mismatch()  # the other dials go on, to tell their parties too
            elif not getattr(exc, "down", False):
                hs.failed.set()

    dialers = [
        threading.Thread(target=dial, args=(p,), name=f"covault-dial-{me}->{p}", daemon=True)
        for p in order[mine + 1 :]
    ]
    acceptor.start()
    ok = False
    try:
        for t in dialers:
            t.start()
        for t in dialers:
            t.join()
        while not acceptor.done.wait(0.05):
            if hs.failed.is_set() or any(
                isinstance(o, BaseException)
                and not isinstance(o, SessionMismatchError)
                and not getattr(o, "revoked", False)
                for o in outcomes.values()
            ):
                break
            if hs.grace_end is not None and (set(acceptor.expected) <= acceptor.heard or hs.stopping()):
                break
        channels = {p: o for p, o in outcomes.items() if isinstance(o, SocketChannel)}
        channels.update(acceptor.got)
        _raise_setup_error(me, order, outcomes, acceptor, channels, timeout)
        ok = True
    finally:
        if ok and guard is not None:
            guard._acceptor = acceptor
        else:
            acceptor.stop()
            if not ok:
                for o in list(outcomes.values()) + list(acceptor.got.values()):
                    if isinstance(o, SocketChannel):
                        o.close()
    return {p: channels[p] for p in order if p != me}


def _raise_setup_error(me, order, outcomes, acceptor, channels, timeout) -> None:
    if acceptor.error is not None:
        raise acceptor.error
    errors = [*acceptor.fatal, *(o for o in outcomes.values() if isinstance(o, BaseException))]
    if not errors and len(channels) == len(order) - 1:
        return
    named = {e.party for e in errors if isinstance(e, PeerError)}
    absent = [p for p in order if p != me and p not in channels and p not in outcomes and p not in named]
    for p in [p for p in absent if p in acceptor.revoked]:  # the root cause, before who stayed away
        errors.append(
            PeerCertificateError(
                p, f"refused: {acceptor.revoked[p]}; no other connection from it within {timeout:g} s"
            )
        )
        absent.remove(p)
    if absent:
        if acceptor.refused:
            more = acceptor.refusals - len(acceptor.refused)
            text = (
                f"no acceptable connection from it within {timeout:g} s; refused "
                f"{acceptor.refusals} connection(s): {'; '.join(acceptor.refused)}"
                + (f"; and {more} more" if more else "")
            )
        else:
            text = (
                f"did not come up: no connection from it within {timeout:g} s (is it running, and can "
                "it reach this party's address?)"
            )
        if acceptor.dropped:
            text += f" ({acceptor.dropped} connection(s) that sent nothing in time were dropped)"
        errors.append(_down(absent[0], text))

    def rank(e: BaseException) -> int:
        """Root causes first; then peers that hung up mid-handshake (usually because of another
        failure), parties that never came, and 'abandoned' last."""
        if getattr(e, "abandoned", False):
            return 4
        if getattr(e, "down", False):
            return 3
        if getattr(e, "collateral", False):
            return 2
        return 1 if isinstance(e, PeerError) else 0

    errors.sort(key=rank)
    first = errors[0]
    down = sorted({e.party for e in errors if getattr(e, "down", False)})
    if len(down) > 1 and isinstance(first, PeerError):
        first.add_note(f"parties that did not come up: {down}")
    raise first
