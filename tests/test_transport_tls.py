"""Mutual TLS and session binding of the TCP transport, in one process (threads per party)."""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import re
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import covault
from covault.deploy import certs
from covault.errors import PeerError
from covault.transport.framing import encode_frame
from covault.transport.sealed import SealedChannel
from covault.transport.tcp import LateJoinGuard, TcpTransport, connect_mesh, open_listener, prepare_socket
from covault.transport.tls import PeerCertificateError, PlaintextWarning, TlsIdentity

pytestmark = pytest.mark.processes

SID = b"s" * 16


def issue_naming(ca_dir, cn, dns_names, out_dir, file_name):
    """A certificate signed by the CA in ``ca_dir`` with subject CN ``cn`` and the given DNS
    subject-alternative names, written with its key as ``out_dir/file_name.pem`` / ``.key``."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (out_dir / f"{file_name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out_dir / f"{file_name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """good/: the consortium (x, y, z); other/: another CA (x, y); expired/: good CA, y expired;
    multi/: good CA, x's and y's files hold one certificate naming x, y and z (CN x)."""
    root = tmp_path_factory.mktemp("pki")
    good, other, expired, multi = root / "good", root / "other", root / "expired", root / "multi"
    certs.init_ca(good)
    certs.init_ca(other)
    for n in "xyz":
        certs.issue(good, n)
    for n in "xy":
        certs.issue(other, n)
    shutil.copytree(good, expired)
    certs.issue(expired, "y", days=1, not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    multi.mkdir()
    shutil.copy(good / "ca.pem", multi / "ca.pem")
    issue_naming(good, "x", ["x", "y", "z"], multi, "x")
    for ext in ("pem", "key"):
        shutil.copy(multi / f"x.{ext}", multi / f"y.{ext}")
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
                assert isinstance(ch, SealedChannel) and ch.version == "TLSv1.3"
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
    "y's certificate names x, y and z": (
        ("good", "x", None),
        ("multi", "y", None),
        (
            PeerCertificateError,
            r"party 'y': TLS handshake failed: its certificate names 3 parties \['x', 'y', 'z'\] "
            r"\(subject CN and DNS subject-alternative names\); a party certificate must name exactly one party",
        ),
        "bad hello",  # x hung up on it
    ),
    "x's certificate names x, y and z": (
        ("multi", "x", None),
        ("good", "y", None),
        (PeerError, r"party 'y': handshake failed: "),  # y hung up on it
        "TLS handshake: its certificate names 3 parties ['x', 'y', 'z']",
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


def test_own_certificate_must_name_exactly_one_party(pki, tmp_path):
    for party in "xy":
        with pytest.raises(certs.CertificateError) as info:
            TlsIdentity.from_dir(pki / "multi", party)
        assert str(info.value) == (
            f"party {party!r}: {pki / 'multi' / f'{party}.pem'}: certificate names 3 parties ['x', 'y', 'z'] "
            "(subject CN and DNS subject-alternative names); a party certificate must name exactly one party"
        )
    issue_naming(pki / "good", "x", ["w"], tmp_path, "x")  # CN and SAN disagree
    shutil.copy(pki / "good" / "ca.pem", tmp_path / "ca.pem")
    with pytest.raises(certs.CertificateError, match=r"names 2 parties \['w', 'x'\]"):
        TlsIdentity.from_dir(tmp_path, "x")
    # what 'covault certs issue' writes names its party once, as CN and as the only DNS name
    cert = certs.check_party_files(pki / "good", "x")
    assert certs.party_name(cert) == "x"
    assert [a.value for a in cert.subject] == ["x"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in san] == ["x"]


def test_malformed_pem_files_raise_a_certificate_error_naming_the_party_and_the_file(pki, tmp_path):
    good = pki / "good"
    d = tmp_path / "certs"
    block = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"
    cases = {
        (
            "x.pem",
            "garbage\n",
        ): "x.pem is not a valid PEM certificate: no '-----BEGIN CERTIFICATE-----' block",
        ("x.pem", block): "x.pem is not a valid PEM certificate: ",
        (
            "ca.pem",
            "garbage\n",
        ): "ca.pem is not a valid PEM certificate: no '-----BEGIN CERTIFICATE-----' block",
        (
            "x.key",
            "garbage\n",
        ): "x.key is not a valid PEM private key: no '-----BEGIN PRIVATE KEY-----' block",
        ("x.key", block.replace("CERTIFICATE", "PRIVATE KEY")): "x.key is not a valid PEM private key: ",
        ("x.key", (good / "y.key").read_text()): f"{d / 'x.key'} is not the key of {d / 'x.pem'}",
    }
    for (name, text), expected in cases.items():
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(good, d)
        (d / name).write_text(text)
        with pytest.raises(certs.CertificateError) as info:
            TlsIdentity.from_dir(d, "x")
        assert str(info.value).startswith("party 'x': ") and expected in str(info.value), (name, text)
    for name in ("ca.pem", "ca.key"):  # issuing with a broken CA
        shutil.rmtree(d)
        shutil.copytree(good, d)
        (d / name).write_text("garbage\n")
        with pytest.raises(certs.CertificateError, match=f"the consortium CA: {d / name} is not a valid PEM"):
            certs.issue(d, "w")


def timed_mesh(ids, timeout):
    """``mesh`` of x and y, with the seconds each party took to fail or connect."""
    listeners = {p: open_listener() for p in "xy"}
    addresses = {p: listeners[p].getsockname() for p in "xy"}
    out, took = {}, {}

    def body(p):
        t0 = time.monotonic()
        try:
            out[p] = connect_mesh(p, "xy", listeners[p], addresses, SID, timeout, tls=ids[p])
        except Exception as exc:
            out[p] = exc
        took[p] = time.monotonic() - t0

    threads = [threading.Thread(target=body, args=(p,)) for p in "xy"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 15)
    return out, took


def test_plaintext_and_tls_parties_refuse_each_other_at_once(pki):
    """A party without TLS against one with TLS is a verdict, not a retry: the party without
    TLS fails at once whichever side dials; the party with TLS too when it dials (an accepting
    party with TLS cannot trust a plaintext claim: it waits for the genuine party, then names it)."""
    good, one_side = (
        pki / "good",
        "(one side runs without TLS: plaintext must be set for every party or none)",
    )
    got, took = timed_mesh({"x": None, "y": ident(good, "y")}, 4.0)  # x dials y
    assert (
        str(got["x"])
        == f"party 'y': handshake failed: it requires TLS and this party runs without it {one_side}"
    )
    assert took["x"] < 1.0, took
    assert (
        got["y"].party == "x"
        and f"claiming to be 'x': this party requires TLS and the caller runs without it {one_side}"
        in str(got["y"])
    )
    got, took = timed_mesh({"x": ident(good, "x"), "y": None}, 10.0)
    assert str(got["x"]) == f"party 'y': TLS handshake failed: it does not speak TLS {one_side}"
    assert str(got["y"]) == f"party 'x': it runs TLS and this party runs without it {one_side}"
    assert max(took.values()) < 1.5, took


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


def test_messages_before_a_failing_record_are_delivered_then_the_failure_is_named(pki):
    """Three messages and a record that fails authentication arrive in one read: the messages
    are delivered first (as the failure was met after them), then the TLS failure."""
    good = pki / "good"
    got, _ = mesh("xy", {p: ident(good, p) for p in "xy"}, 5.0)
    ch = got["x"]["y"]
    try:
        for i in range(3):
            header, bufs = encode_frame([np.array([i, i + 1])], tag=ch.tag)
            ch.send_buffers([header, *bufs])
        ch.sock.sendall(b"\x00\x00\x00\x10" + bytes(32))  # a 16-byte record, bad tag
        time.sleep(0.2)  # everything is waiting at y before y reads at all
        ty = TcpTransport("y", got["y"])
        try:
            for i in range(3):
                np.testing.assert_array_equal(ty.recv("x", 5.0)[0], [i, i + 1])
            with pytest.raises(PeerError, match=r"party 'x': TLS failure: .*authentication"):
                ty.recv("x", 5.0)
        finally:
            ty.close()
    finally:
        ch.close()


def test_a_message_that_arrives_with_the_hello_is_delivered(pki):
    """A slow party reads its peer's hello and first message together (TLS reads whole records
    ahead): the message is not lost in the TLS buffer, where poll cannot see it."""
    from covault.transport.handshake import _read_hello, _send_hello

    good = pki / "good"
    listener = open_listener()
    done = threading.Event()

    def server():
        sock, _ = listener.accept()
        sock.settimeout(5)
        ch = prepare_socket(sock, ident(good, "y"), server_side=True)
        _send_hello(ch, "y", SID, b"n" * 16, b"")
        ch.settimeout(None)
        t = TcpTransport("y", {"x": ch})
        t.send("x", [np.arange(10)])  # at once, right behind the hello
        done.wait(10)
        t.close(0.5)

    th = threading.Thread(target=server)
    th.start()
    ch = prepare_socket(socket.create_connection(listener.getsockname(), timeout=5), ident(good, "x"))
    time.sleep(0.3)  # slow: the hello and the message have both arrived
    assert _read_hello(ch)[1] == "y"
    ch.settimeout(None)
    t = TcpTransport("x", {"y": ch})
    try:
        np.testing.assert_array_equal(t.recv("y", 3.0)[0], np.arange(10))
    finally:
        done.set()
        th.join(10)
        t.close(0.5)
        listener.close()


def test_a_peer_that_skips_the_key_message_is_refused_and_nothing_goes_out_unsealed(pki):
    """A certified peer that sends its hello right after the TLS handshake, without the key
    message of covault's records: the hello is refused, and the bare TLS channel can never
    carry the traffic."""
    from covault.transport.framing import FrameError
    from covault.transport.handshake import _read_hello, _send_hello
    from covault.transport.tls import TlsChannel

    good = pki / "good"
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)

    def peer():
        ch = TlsChannel(b, ident(good, "y").context(True), True, None)
        ch.handshake()
        _send_hello(ch, "y", SID, b"n" * 16, b"")

    t = threading.Thread(target=peer)
    t.start()
    ch = prepare_socket(a, ident(good, "x"))
    t.join(10)
    assert isinstance(ch, TlsChannel)  # kept only to read a refusal
    with pytest.raises(FrameError, match="no key message for covault's records"):
        _read_hello(ch)
    with pytest.raises(RuntimeError, match="carries no traffic"):
        ch.set_nonblocking()
    a.close()
    b.close()
