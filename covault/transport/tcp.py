"""TCP transport: one connection per pair of parties, framed messages, one event loop per party.

The public names of the TCP transport, gathered from the modules that implement them:

- connection set-up: :mod:`covault.transport.mesh` (:func:`connect_mesh`, :func:`open_listener`),
  with the dialling side in :mod:`covault.transport.dial`, the accepting side and its
  denial-of-service limits in :mod:`covault.transport.accept`, and what both ends say and check
  (TLS handshake, hello and refusal frames, one deadline per handshake) in
  :mod:`covault.transport.handshake`;
- session ids, their manifests and connection tags: :mod:`covault.transport.sessionid`;
- established connections: :mod:`covault.transport.loop` (:class:`TcpTransport`), over the
  channels of :mod:`covault.transport.channel` and :mod:`covault.transport.tls`, in the frames of
  :mod:`covault.transport.framing`.
"""

from __future__ import annotations

from covault.transport.accept import LateJoinGuard
from covault.transport.channel import send_buffers
from covault.transport.handshake import prepare_socket
from covault.transport.loop import TcpTransport
from covault.transport.mesh import HOST, connect_mesh, open_listener
from covault.transport.sessionid import DIGEST_BYTES, SESSION_ID_BYTES, SessionId, SessionMismatchError

__all__ = [
    "DIGEST_BYTES",
    "HOST",
    "SESSION_ID_BYTES",
    "LateJoinGuard",
    "SessionId",
    "SessionMismatchError",
    "TcpTransport",
    "connect_mesh",
    "open_listener",
    "prepare_socket",
    "send_buffers",
]
