"""What a party of another session learns at set-up: only a party of this session (under TLS,
one whose certificate names it) is sent the manifest and the keys that differ; peer-supplied
keys are quoted printable and bounded; refusals are logged at most once per source address
per interval (covault.transport.accept, covault.transport.sessionid)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from covault.runtime import agreement_digests
from covault.transport import accept, handshake, sessionid
from covault.transport.channel import SocketChannel
from covault.transport.framing import FrameError
from covault.transport.tcp import SessionId, SessionMismatchError, connect_mesh, open_listener, prepare_socket
from covault.transport.tls import TlsIdentity, throwaway_certificates

pytestmark = pytest.mark.processes

VALUES = {"label": "hiv_status", "seed": 1234, "model.epochs": 5}
SECRET_SID = SessionId(b"a" * 16, {k: bytes.fromhex(v)[:8] for k, v in agreement_digests(VALUES).items()})
OTHER_SID = SessionId(b"b" * 16, {"label": b"\1" * 8, "seed": b"\2" * 8, "model.epochs": b"\3" * 8})


@pytest.fixture(scope="module")
def certs_dir():
    with throwaway_certificates(("x", "y", "z")) as d:
        yield d


class Acceptor:
    """Party ``y`` of the session (x, y), waiting for ``x`` in a thread of its own."""

    def __init__(self, tls: TlsIdentity | None, timeout: float = 10.0):
        self.listener = open_listener()
        self.address = self.listener.getsockname()
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(tls, timeout), daemon=True)
        self.thread.start()

    def _run(self, tls, timeout):
        try:
            self.result = connect_mesh(
                "y", ("x", "y"), self.listener, {"x": ("127.0.0.1", 1)}, SECRET_SID, timeout, tls=tls
            )
        except Exception as exc:
            self.result = exc

    def join(self, seconds: float = 20.0):
        self.thread.join(seconds)
        return self.result


def call(address, name: str, sid: SessionId, tls: TlsIdentity | None = None) -> handshake._Refused:
    """Dial ``address`` claiming to be ``name`` with ``sid`` (and its manifest); the refusal."""
    sock = socket.create_connection(address, timeout=5.0)
    ch = prepare_socket(sock, tls) if tls is not None else SocketChannel(sock)
    try:
        blob = sessionid._encode_manifest(sid.manifest)
        handshake._send_hello(ch, name, sid, b"n" * handshake.NONCE_BYTES, blob)
        with pytest.raises(handshake._Refused) as info:
            handshake._read_hello(ch)
        return info.value
    finally:
        ch.close()


def guess(manifest: dict[str, bytes]) -> dict[str, object]:
    """A dictionary search of unkeyed digests: the values of VALUES found in ``manifest``."""
    found = {}
    for key, candidates in {
        "label": ["age", "hiv_status"],
        "seed": range(2000),
        "model.epochs": range(20),
    }.items():
        for value in candidates:
            if bytes.fromhex(agreement_digests({key: value})[key])[:8] == manifest.get(key):
                found[key] = value
    return found


def test_without_tls_only_a_claimed_party_gets_the_manifest(caplog):
    acceptor = Acceptor(None)
    with caplog.at_level(logging.WARNING, logger="covault.transport"):
        refused = call(acceptor.address, "stranger", OTHER_SID)
        assert refused.manifest is None and "keys that differ" not in str(refused)
        assert str(refused).startswith("session id mismatch (another job")
        assert acceptor.thread.is_alive()  # a stranger does not stop the set-up
        refused = call(acceptor.address, "x", OTHER_SID)  # a party of the session (unauthenticated)
    assert refused.manifest is not None and str(refused) == (
        "session id mismatch: keys that differ: label, model.epochs, seed"
    )
    assert not guess(refused.manifest)  # keyed digests: no table of unkeyed ones fits
    err = acceptor.join()
    assert type(err) is SessionMismatchError and err.party == "x"
    assert err.keys == ("label", "model.epochs", "seed")
    strangers = [r.getMessage() for r in caplog.records if "'stranger'" in r.getMessage()]
    assert strangers and not any("keys that differ" in m for m in strangers)


def test_under_tls_a_consortium_member_of_another_session_gets_no_manifest(certs_dir):
    ids = {n: TlsIdentity.from_dir(certs_dir, n) for n in "xyz"}
    acceptor = Acceptor(ids["y"])
    refused = call(acceptor.address, "z", OTHER_SID, ids["z"])  # a valid certificate, not a party
    assert refused.manifest is None and "keys that differ" not in str(refused)
    refused = call(acceptor.address, "x", OTHER_SID, ids["z"])  # claims a party: z's certificate
    assert refused.manifest is None and "its certificate names ['z'], not 'x'" in str(refused)
    assert acceptor.thread.is_alive()
    refused = call(acceptor.address, "x", OTHER_SID, ids["x"])
    assert refused.manifest is not None and "keys that differ: label, model.epochs, seed" in str(refused)
    mine = sessionid._keyed(SECRET_SID.manifest, sessionid._manifest_key(ids["y"]))
    assert refused.manifest == mine != sessionid._keyed(SECRET_SID.manifest, sessionid._manifest_key(None))
    assert not guess(refused.manifest)
    assert isinstance(acceptor.join(), SessionMismatchError)


def test_peer_supplied_keys_are_quoted_printable_and_bounded():
    keys = ["\x1b[2Jlabel", "a\u202eseed", "k" * 200, *(f"model.w{i:02}" for i in range(30))]
    theirs = SessionId(b"b" * 16, {k: b"\7" * 8 for k in keys})
    acceptor = Acceptor(None)
    refused = call(acceptor.address, "x", theirs)
    err = acceptor.join()
    assert isinstance(err, SessionMismatchError)
    for text in (str(err), str(refused)):
        assert text.isascii() and text.isprintable(), text
        assert "?[2Jlabel" in text and "a?seed" in text and "k" * 61 + "..." in text and "k" * 62 not in text
        assert text.endswith(f" and {len(keys) + 3 - sessionid.MAX_LISTED_KEYS} more"), text
    assert all(len(k) <= sessionid.MAX_KEY_CHARS for k in err.keys) and len(err.keys) == len(keys) + 3
    with pytest.raises(FrameError, match="session manifest of 2049 bytes"):
        sessionid._decode_manifest(b"\0" * 2049)


def test_refusals_are_logged_once_per_source_per_interval(certs_dir, caplog, monkeypatch):
    """A caller without TLS retrying against a party with TLS (as one did before this was a
    verdict: 37 refusals in 8 s) is logged once per interval, then with the count left out."""
    monkeypatch.setattr(accept, "REFUSAL_LOG_INTERVAL", 1.0)
    acceptor = Acceptor(TlsIdentity.from_dir(certs_dir, "y"), timeout=4.0)
    with caplog.at_level(logging.WARNING, logger="covault.transport"):
        t0 = time.monotonic()
        for _ in range(12):
            assert "this party requires TLS" in str(call(acceptor.address, "x", SECRET_SID))
        assert time.monotonic() - t0 < 1.0
        time.sleep(1.1)
        call(acceptor.address, "x", SECRET_SID)
        err = acceptor.join()
    # only this acceptor's lines (acceptors of earlier tests may still log while they wind down)
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("party 'y' refused a connection")
    ]
    assert len(lines) == 2, lines
    assert lines[1].endswith("(11 more refused from this address since the last line)"), lines
    assert err.party == "x" and "refused 13 connection(s)" in str(err)
