"""Mutual TLS and session binding of the TCP transport, in one process (threads per party)."""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import re
import shutil
import socket
import threading

import numpy as np
import pytest

import covault
from covault.deploy import certs
from covault.errors import PeerError
from covault.transport.framing import encode_frame
from covault.transport.tcp import LateJoinGuard, TcpTransport, connect_mesh, open_listener, prepare_socket
from covault.transport.tls import PeerCertificateError, PlaintextWarning, TlsChannel, TlsIdentity

SID = b"s" * 16


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """good/: the consortium (x, y, z); other/: another CA (x, y); expired/: good CA, y expired."""
    root = tmp_path_factory.mktemp("pki")
    good, other, expired = root / "good", root / "other", root / "expired"
    certs.init_ca(good)
    certs.init_ca(other)
    for n in "xyz":
        certs.issue(good, n)
    for n in "xy":
        certs.issue(other, n)
    shutil.copytree(good, expired)
    certs.issue(expired, "y", days=1, not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    return root


def ident(d, cert_of, trust=None):
    """TLS identity with ``cert_of``'s certificate from ``d``, trusting ``trust``'s CA (default ``d``)."""
    trust = trust or d
    return TlsIdentity(cert_of, trust / "ca.pem", d / f"{cert_of}.pem", d / f"{cert_of}.key")


def mesh(order, ids, timeout, sids=None, guards=None):
    listeners = {p: open_listener() for p in order}
    addresses = {p: listeners[p].getsockname() for p in order}
    out = {}

    def body(p):
        try:
            out[p] = connect_mesh(
                p,
                order,
                listeners[p],
                addresses,
                (sids or {}).get(p, SID),
                timeout,
                tls=ids[p],
                guard=(guards or {}).get(p),
            )
        except Exception as exc:
            out[p] = exc

    threads = [threading.Thread(target=body, args=(p,)) for p in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 15)
    return out, addresses


def test_mesh_over_mutual_tls_carries_messages_and_binds_connections(pki):
    good = pki / "good"
    got, _ = mesh("xyz", {p: ident(good, p) for p in "xyz"}, 10.0)
    transports = {p: TcpTransport(p, got[p]) for p in "xyz"}
    try:
        for p in "xyz":
            assert transports[p].tls
            for q, ch in got[p].items():
                assert isinstance(ch, TlsChannel) and ch.version == "TLSv1.3"
                assert ch.peer_names == {q}
                assert ch.tag == got[q][p].tag  # both ends derive the same tag ...
        tags = {got["x"]["y"].tag, got["x"]["z"].tag, got["y"]["z"].tag}
        assert len(tags) == 3  # ... and every connection has its own
        big = np.arange(300_000, dtype=np.int64)  # spans many TLS records and write chunks
        for p in "xyz":
            for q in transports[p].peers:
                transports[p].send(q, [np.array([ord(p)]), big + ord(p)])
        for p in "xyz":
            for q in transports[p].peers:
                head, body = transports[p].recv(q, 10.0)
                assert int(head[0]) == ord(q)
                np.testing.assert_array_equal(body, big + ord(q))
    finally:
        for t in transports.values():
            t.close()


REFUSALS = {
    # case: (x's identity, y's identity, error at x (connector), refusal logged at y (acceptor))
    "y's certificate from another CA": (
        ("good", "x", None),
        ("other", "y", None),
        (
            PeerCertificateError,
            "party 'y': TLS handshake failed: its certificate is not signed by the consortium CA",
        ),
        "it refused our certificate: not signed by its consortium CA",
    ),
    "x's certificate from another CA": (
        ("other", "x", "good"),
        ("good", "y", None),
        (PeerCertificateError, "party 'y': TLS handshake failed: it refused our certificate: not signed"),
        "its certificate is not signed by the consortium CA (unknown CA)",
    ),
    "y's certificate expired": (
        ("good", "x", None),
        ("expired", "y", None),
        (PeerCertificateError, "party 'y': TLS handshake failed: its certificate has expired"),
        "it refused our certificate: expired",
    ),
    "y presents z's certificate": (
        ("good", "x", None),
        ("good", "z", None),
        (PeerCertificateError, r"party 'y': refused: .* presented a certificate for \['z'\], not for 'y'"),
        "'x' dialled 'y' but your certificate names ['z']",
    ),
    "x presents z's certificate": (
        ("good", "z", None),
        ("good", "y", None),
        (PeerError, r"party 'y': handshake failed: it refused the connection: its certificate names \['z'\]"),
        "claiming to be 'x': its certificate names ['z'], not 'x'",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_certificates_are_refused_with_clear_errors_and_logged(pki, case, caplog):
    (xd, xc, xt), (yd, yc, yt), (err_type, err_text), logged = REFUSALS[case]
    ids = {
        "x": ident(pki / xd, xc, xt and pki / xt),
        "y": ident(pki / yd, yc, yt and pki / yt),
    }
    with caplog.at_level(logging.WARNING, logger="covault.transport"):
        got, _ = mesh("xy", ids, 1.0)
    assert type(got["x"]) is err_type and got["x"].party == "y"
    assert re.search(err_text, str(got["x"])), str(got["x"])
    assert isinstance(got["y"], PeerError) and got["y"].party == "x"
    assert "refused 1 connection(s)" in str(got["y"]) and logged in str(got["y"])
    refusals = [r.getMessage() for r in caplog.records if "party 'y' refused a connection" in r.getMessage()]
    assert len(refusals) == 1 and logged in refusals[0]


def test_plaintext_and_tls_parties_refuse_each_other(pki):
    good = pki / "good"
    got, _ = mesh("xy", {"x": None, "y": ident(good, "y")}, 1.0)
    assert "it closed the connection during the hello (does it expect TLS?" in str(got["x"])
    assert "it does not speak TLS" in str(got["y"])
    got, _ = mesh("xy", {"x": ident(good, "x"), "y": None}, 1.0)
    assert "party 'y': TLS handshake failed: it does not speak TLS" in str(got["x"])
    assert "the peer speaks TLS" in str(got["y"])


def test_restarted_party_and_other_sessions_are_refused_while_the_session_runs(pki, caplog):
    good = pki / "good"
    guard = LateJoinGuard()
    got, addresses = mesh("xy", {p: ident(good, p) for p in "xy"}, 5.0, guards={"y": guard})
    tx, ty = TcpTransport("x", got["x"]), TcpTransport("y", got["y"], on_close=guard.stop)
    try:
        # a second 'x' (a restarted process: new incarnation nonce) dials y during the session
        with caplog.at_level(logging.WARNING, logger="covault.transport"):
            late = connect_mesh("x", "xy", open_listener(), addresses, SID, 2.0, tls=ident(good, "x"))
        pytest.fail(f"late joiner was accepted: {late}")
    except PeerError as exc:
        assert exc.party == "y" and "new incarnation (restarted party?)" in str(exc)
    try:
        connect_mesh("x", "xy", open_listener(), addresses, b"o" * 16, 2.0, tls=ident(good, "x"))
        pytest.fail("a connection from another session was accepted")
    except PeerError as exc:
        assert "session id mismatch" in str(exc)
    assert any("new incarnation" in r.getMessage() for r in caplog.records)
    tx.send("y", [np.array([42])])  # the running session is undisturbed
    assert int(ty.recv("x", 5.0)[0][0]) == 42
    tx.close()
    ty.close()
    with pytest.raises(OSError):  # the guard closed the listener with the transport
        socket.create_connection(addresses["y"], timeout=1.0)


def test_frame_with_another_connections_tag_fails_that_connection(pki):
    good = pki / "good"
    got, _ = mesh("xy", {p: ident(good, p) for p in "xy"}, 5.0)
    ty = TcpTransport("y", got["y"])
    try:
        header, bufs = encode_frame([np.array([1])], tag=b"elsewhere"[:8])
        got["x"]["y"].send_buffers([header, *bufs])
        with pytest.raises(
            PeerError, match=r"party 'x': malformed frame: .*another session or to an earlier"
        ):
            ty.recv("x", 5.0)
    finally:
        ty.close()
        got["x"]["y"].close()


def test_tls_channel_handshake_failure_is_an_ssl_error_on_both_sides(pki):
    a, b = socket.socketpair()
    out = {}

    def server():
        try:
            out["b"] = prepare_socket(b, ident(pki / "other", "y"), server_side=True)
        except Exception as exc:
            out["b"] = exc

    t = threading.Thread(target=server)
    t.start()
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        prepare_socket(a, ident(pki / "good", "x"))
    a.close()
    t.join(10)
    b.close()
    assert isinstance(out["b"], OSError)


def tls_program(s):
    x = s.input(np.arange(3.0) if s.party == s.compute_parties[0] else None, owner=s.compute_parties[0])
    return s.net.transport.tls, (x + 1).reveal()


def test_run_over_tcp_without_tls_only_on_request_and_with_a_loud_warning(capfd):
    with pytest.warns(PlaintextWarning, match="TLS is OFF"):
        res = covault.run(tls_program, 2, "2pc", transport="tcp", tls=False)
    assert "covault: WARNING: TLS is OFF" in capfd.readouterr().err
    assert not any(tls for tls, _ in res.values())
    np.testing.assert_allclose(res["p0"][1], [1, 2, 3])
    assert multiprocessing.active_children() == []
    with pytest.raises(covault.CovaultError, match="tls must be True or False"):
        covault.run(tls_program, 2, "2pc", transport="tcp", tls="no")
