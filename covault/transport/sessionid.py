"""Session ids, their manifests, and the connection tag every frame carries.

Session ids: ``covault.run`` draws a random 16-byte id per run; ``covault party`` derives it
from the consortium config and the job (see :func:`covault.runtime.config_session_id`). The
incarnation nonce is random per party process. The id is checked once per connection and then
carried by every frame as the connection tag (8 bytes per frame, one comparison): TLS already
binds a connection to two authenticated parties, and the tag also binds each frame to this
session and to both parties' current incarnations, with or without TLS. A derived id is a
:class:`SessionId` with a manifest, ``{key: 8-byte digest}`` of what it was derived from (the
config's agreed fields, the job's keys), at most :data:`MANIFEST_MAX_BYTES` in the hello (one
entry per top-level key beyond that). On the wire each digest is keyed, HMAC-SHA256 with a key
from the consortium CA certificates (:func:`_manifest_key`; a constant without TLS); CA
certificates are not secret, so this only ties the digests to one consortium: what keeps a
manifest from strangers is that it goes only to an authenticated party of the session. The
dialling party sends it in its hello (under TLS once the accepting party's certificate names the
party it dialled). When the ids differ, the accepting party refuses a party of the session
(under TLS: whose certificate names it) with its own manifest and the keys that differ, anyone
else with a plain "session id mismatch"; peer-supplied keys are quoted as printable ASCII, at
most :data:`MAX_KEY_CHARS` each and :data:`MAX_LISTED_KEYS` in a message. During set-up both
parties raise :class:`SessionMismatchError` at once naming the other party and the keys that
differ; each goes on dialling and answering its other parties for up to
:data:`~covault.transport.handshake.MISMATCH_GRACE` seconds, so that they learn it too (without
TLS anyone can claim to be a party and stop the set-up this way, as in many others).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from covault.errors import PeerError
from covault.transport.framing import FrameError
from covault.transport.tls import TlsIdentity

SESSION_ID_BYTES = 16
DIGEST_BYTES = 8  # per key of a session manifest
MANIFEST_MAX_BYTES = 2048  # a larger manifest is sent per top-level key (see _encode_manifest)
MAX_KEY_CHARS = 64  # a peer's manifest key as quoted in errors and logs (printable ASCII)
MAX_LISTED_KEYS = 16  # keys that differ, as listed in an error

_SESSION_MISMATCH_HEAD = "session id mismatch"
_SESSION_MISMATCH = (
    f"{_SESSION_MISMATCH_HEAD}: it runs another session (another job, a different consortium config, "
    "or a different job name)"
)


def connection_tag(session_id: bytes, connector: tuple[str, bytes], acceptor: tuple[str, bytes]) -> bytes:
    """The 8-byte tag of one connection: binds its frames to the session and both incarnations."""
    h = hashlib.sha256(b"covault connection tag v1\0" + session_id)
    for name, nonce in (connector, acceptor):
        raw = name.encode()
        h.update(len(raw).to_bytes(2, "little") + raw + nonce)
    return h.digest()[:8]


# -- session ids and their manifests -------------------------------------------------------------
class SessionId(bytes):
    """A session id with its manifest: ``{key: digest}`` of what the id was derived from (each
    digest :data:`DIGEST_BYTES` long), so that parties whose ids differ can name the keys that
    differ (:func:`covault.runtime.config_session_id`)."""

    manifest: dict[str, bytes]

    def __new__(cls, value: bytes, manifest: Mapping[str, bytes] | None = None) -> SessionId:
        self = super().__new__(cls, value)
        self.manifest = {str(k): bytes(v)[:DIGEST_BYTES] for k, v in (manifest or {}).items()}
        return self

    def __reduce__(self):
        return (SessionId, (bytes(self), self.manifest))


class SessionMismatchError(PeerError):
    """A peer runs another session: another job or consortium config; ``keys`` names the keys
    whose digests differ (empty when unknown)."""

    def __init__(self, party: str, keys: Sequence[str] = ()):
        self.keys = tuple(_printable(k) for k in keys)
        if self.keys:
            text = f"{_SESSION_MISMATCH_HEAD}: it runs another job or consortium config; keys that differ: "
            super().__init__(party, text + _list_keys(self.keys))
        else:
            super().__init__(party, _SESSION_MISMATCH)


def _printable(text: str, limit: int = MAX_KEY_CHARS) -> str:
    """``text`` with every character outside printable ASCII shown as ``?``, cut to ``limit``."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _list_keys(keys: Sequence[str]) -> str:
    """``keys`` joined by commas, the first :data:`MAX_LISTED_KEYS` of them and a count of the rest."""
    more = len(keys) - MAX_LISTED_KEYS
    return ", ".join(keys[:MAX_LISTED_KEYS]) + (f" and {more} more" if more > 0 else "")


def _manifest_key(tls: TlsIdentity | None) -> bytes:
    """The HMAC key of the digests a party sends: with TLS, SHA-256 of the consortium CA
    certificates (every party holds them, none is sent on the wire); without, a constant."""
    h = hashlib.sha256(b"covault manifest key v1\0")
    if tls is not None:
        with contextlib.suppress(OSError, ValueError):  # unreadable: the TLS handshake says why
            ders = [
                c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(tls.ca.read_bytes())
            ]
            for der in sorted(ders):
                h.update(hashlib.sha256(der).digest())
    return h.digest()


def _keyed(manifest: Mapping[str, bytes], key: bytes) -> dict[str, bytes]:
    """Each digest of ``manifest`` replaced by ``HMAC-SHA256(key, name | digest)``, cut short."""
    return {
        k: hmac.digest(key, k.encode() + b"\0" + bytes(d), "sha256")[:DIGEST_BYTES]
        for k, d in manifest.items()
    }


def _encode_manifest(manifest: Mapping[str, bytes]) -> bytes:
    """Entries ``key length u8 | key | digest``, sorted by key; when that exceeds
    :data:`MANIFEST_MAX_BYTES`, one entry per top-level key (the part before the first dot)."""

    def entries(items) -> bytes:
        out = bytearray()
        for key, digest in sorted(items):
            raw = key.encode()[:255]
            out += bytes([len(raw)]) + raw + digest[:DIGEST_BYTES].ljust(DIGEST_BYTES, b"\0")
        return bytes(out)

    blob = entries(manifest.items())
    if len(blob) <= MANIFEST_MAX_BYTES:
        return blob
    groups: dict[str, list[bytes]] = {}
    for key, digest in sorted(manifest.items()):
        raw = key.encode()
        groups.setdefault(key.split(".", 1)[0], []).append(len(raw).to_bytes(2, "little") + raw + digest)
    blob = entries(
        (k, hashlib.sha256(b"covault manifest group v1\0" + b"".join(v)).digest()) for k, v in groups.items()
    )
    return blob if len(blob) <= MANIFEST_MAX_BYTES else b""


def _decode_manifest(blob: bytes) -> dict[str, bytes]:
    """The manifest of a hello or refusal (at most :data:`MANIFEST_MAX_BYTES`, else FrameError)."""
    if len(blob) > MANIFEST_MAX_BYTES:
        raise FrameError(f"session manifest of {len(blob)} bytes (at most {MANIFEST_MAX_BYTES})")
    out: dict[str, bytes] = {}
    i = 0
    while i < len(blob):
        n = blob[i]
        if i + 1 + n + DIGEST_BYTES > len(blob):
            raise FrameError("malformed session manifest in hello frame")
        out[blob[i + 1 : i + 1 + n].decode(errors="replace")] = blob[i + 1 + n : i + 1 + n + DIGEST_BYTES]
        i += 1 + n + DIGEST_BYTES
    return out


def _differing(mine: Mapping[str, bytes], theirs: Mapping[str, bytes] | None) -> list[str]:
    """Keys whose digests differ, or that only one side has (none if either manifest is empty)."""
    if not mine or not theirs:
        return []
    return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
