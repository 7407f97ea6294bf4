"""Revocation: ``covault certs revoke`` writes the CA's revocation list; a party holding it
refuses a revoked peer at every connection, at both ends, naming the party and the serial, and
the revoked party is told and stops; a list not signed by the CA, or out of date, is refused."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from covault.cli import main as cli
from covault.deploy import certs, csr, revocation
from covault.deploy.config import ConfigError, parse_config
from covault.errors import PeerError
from covault.transport.tls import PeerCertificateError, TlsIdentity
from tests.helpers import free_ports
from tests.test_consortium import RESULT_SCRIPT, finish, party
from tests.test_transport_tls import mesh

pytestmark = pytest.mark.processes


def consortium(root: Path, names: str = "xyz") -> tuple[Path, dict[str, Path]]:
    """A CA and one folder per party, made by request and sign (only requests and
    certificates copied); the CA folder and the parties' folders."""
    ca = root / "ca"
    certs.init_ca(ca, days=2)
    folders = {}
    for n in names:
        folders[n] = root / f"host_{n}"
        request, _ = csr.request(folders[n], n)
        done = csr.sign(ca, shutil.copy(request, ca.parent / f"{n}.csr"), days=2)
        shutil.copy(done.path, folders[n])
        shutil.copy(ca / "ca.pem", folders[n])
    return ca, folders


@pytest.fixture
def pki(tmp_path):
    return consortium(tmp_path)


def serial_of(folder: Path, name: str) -> str:
    return f"{certs.load_certificate(folder / f'{name}.pem', name).serial_number:x}"


def publish(ca: Path, *folders: Path) -> None:
    for f in folders:
        shutil.copy(ca / revocation.CRL_FILE, f)


@pytest.mark.parametrize("revoked", ["y", "x"])  # y: refused by its dialler; x: by its acceptor
def test_a_revoked_party_is_refused_at_both_ends_and_named(pki, revoked, capsys):
    ca, folders = pki
    serial = serial_of(folders[revoked], revoked)
    ids = {n: TlsIdentity.from_dir(folders[n], n) for n in "xy"}  # before the revocation
    assert cli(["certs", "revoke", str(ca), revoked, "--reason", "key_compromise"]) == 0
    out = capsys.readouterr().out
    assert f"revoked: party {revoked!r}, serial {serial} (reason: key_compromise)" in out
    other = "x" if revoked == "y" else "y"
    publish(ca, folders[other])  # the revoked party has not got the new list
    got, _ = mesh("xy", ids, 2.0)  # the identities loaded before: the list is read per connection
    text = f"the certificate of party {revoked!r} (serial {serial}) is revoked since "
    refuser, refused = got[other], got[revoked]
    assert type(refuser) is PeerCertificateError and refuser.party == revoked
    assert text in str(refuser) and "(reason: key_compromise)" in str(refuser)
    assert type(refused) is PeerCertificateError and refused.party == other
    assert f"revoked certificate: {text}" in str(refused)
    if revoked == "y":  # the dialler refused at once
        assert str(refuser).startswith("party 'y': TLS handshake failed: the certificate of party 'y'")
        assert "it refused this party's certificate: revoked certificate" in str(refused)
    else:  # the acceptor waits for a valid certificate of x until its timeout, then names the refusal
        assert str(refuser).startswith("party 'x': refused: the certificate of party 'x'")
        assert str(refuser).endswith("; no other connection from it within 2 s")
        assert str(refused).startswith("party 'y': handshake failed: it refused the connection: revoked")


def test_three_parties_refuse_the_revoked_one_and_carry_on_without_it_only_when_it_is_absent(pki):
    ca, folders = pki
    assert cli(["certs", "revoke", str(ca), "--serial", serial_of(folders["z"], "z")]) == 0
    publish(ca, folders["x"], folders["y"])
    ids = {n: TlsIdentity.from_dir(folders[n], n) for n in "xyz"}
    got, _ = mesh("xyz", ids, 2.0)
    for n in "xy":
        assert type(got[n]) is PeerCertificateError and got[n].party == "z", got[n]
        assert "the certificate of party 'z'" in str(got[n])
    assert type(got["z"]) is PeerCertificateError and "revoked certificate:" in str(got["z"])
    # with the list, z cannot even start; x and y still connect to each other
    publish(ca, folders["z"])
    with pytest.raises(
        certs.CertificateError, match="party 'z': its own certificate is revoked by the consortium"
    ):
        TlsIdentity.from_dir(folders["z"], "z")
    got, _ = mesh("xy", ids, 2.0)
    assert all(not isinstance(c, Exception) for c in got.values()), got
    for chans in got.values():
        for ch in chans.values():
            ch.close()


def test_lists_not_from_the_ca_or_out_of_date_are_refused(pki, tmp_path):
    ca, folders = pki
    cfg = parse_config(
        {"protocol": "rep3", "tls": {"certs": str(folders["x"])}, "parties": {n: {} for n in "xyz"}}
    )
    # another CA revokes x's serial: its list is refused, not obeyed and not ignored
    rogue = tmp_path / "rogue"
    certs.init_ca(rogue)
    rogue_list = revocation.write_crl(rogue)
    shutil.copy(rogue_list, folders["x"])
    for check in (lambda: TlsIdentity.from_dir(folders["x"], "x"), lambda: cfg.require_certificates("x")):
        with pytest.raises((certs.CertificateError, ConfigError)) as info:
            check()
        assert (
            f"party 'x': the revocation list {folders['x'] / 'revoked.crl.pem'} is not signed by the consortium CA"
            in str(info.value)
        )
    # the CA's own list, but its next update was due yesterday
    ca_cert, ca_key = certs.load_ca(ca)
    now = dt.datetime.now(dt.UTC)
    stale = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(days=3))
        .next_update(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    (folders["x"] / "revoked.crl.pem").write_bytes(stale.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(
        certs.CertificateError,
        match=r"party 'x': the revocation list .* is out of date \(its next update was due",
    ):
        TlsIdentity.from_dir(folders["x"], "x")
    # garbage
    (folders["x"] / "revoked.crl.pem").write_text("not a list\n")
    with pytest.raises(certs.CertificateError, match="is not a valid PEM revocation list"):
        TlsIdentity.from_dir(folders["x"], "x")
    # a list that goes bad while the party runs: its next connection is refused at both ends
    revocation.write_crl(ca)
    publish(ca, folders["x"])
    ids = {n: TlsIdentity.from_dir(folders[n], n) for n in "xy"}
    shutil.copy(rogue_list, folders["x"])
    got, _ = mesh("xy", ids, 1.0)
    assert type(got["x"]) is PeerCertificateError and "cannot check its certificate" in str(got["x"])
    assert "not signed by the consortium CA" in str(got["x"])
    assert isinstance(got["y"], PeerError)


def test_a_list_removed_or_rolled_back_while_the_party_runs_refuses_every_new_connection(pki):
    """Fail closed: a party that started with a list refuses new connections, at both ends,
    once the list is removed or replaced by an older one (a lower CRL number); the current list
    restored, it connects again."""
    ca, folders = pki
    revocation.write_crl(ca)
    older = (ca / revocation.CRL_FILE).read_bytes()
    revocation.write_crl(ca)
    publish(ca, folders["x"], folders["y"])
    ids = {n: TlsIdentity.from_dir(folders[n], n) for n in "xy"}
    listed = folders["x"] / revocation.CRL_FILE
    current = listed.read_bytes()
    listed.unlink()
    got, _ = mesh("xy", ids, 1.0)
    assert type(got["x"]) is PeerCertificateError and "cannot check its certificate" in str(got["x"])
    assert f"the revocation list {listed} was removed while the party runs" in str(got["x"])
    assert isinstance(got["y"], PeerError)
    listed.write_bytes(older)
    got, _ = mesh("xy", ids, 1.0)
    assert type(got["x"]) is PeerCertificateError
    assert "is older (CRL number 1) than the one it replaced (CRL number 2)" in str(got["x"])
    listed.write_bytes(current)
    got, _ = mesh("xy", ids, 1.0)
    assert not any(isinstance(v, BaseException) for v in got.values()), got
    for chans in got.values():
        for ch in chans.values():
            ch.close()


def test_a_list_issued_in_the_future_is_refused(pki):
    ca, folders = pki
    ca_cert, ca_key = certs.load_ca(ca)
    now = dt.datetime.now(dt.UTC)
    future = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now + dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=2))
        .sign(ca_key, hashes.SHA256())
    )
    (folders["x"] / revocation.CRL_FILE).write_bytes(future.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(
        certs.CertificateError, match=r"party 'x': the revocation list .* is issued in the future"
    ):
        TlsIdentity.from_dir(folders["x"], "x")


@pytest.mark.parametrize("revoked", ["z", "y"])
def test_covault_party_processes_name_the_revoked_party(pki, revoked):
    """One party is revoked; the others hold the list, it does not: all three stop, each naming
    the revoked party and its serial (the revoked party, refused by one, stays to be refused by
    the others: z is dialled by x and y; y is dialled by x and dials z)."""
    ca, folders = pki
    serial = serial_of(folders[revoked], revoked)
    assert cli(["certs", "revoke", str(ca), revoked, "--reason", "cessation_of_operation"]) == 0
    others = [n for n in "xyz" if n != revoked]
    publish(ca, *(folders[n] for n in others))
    lines = ['protocol = "rep3"', "timeout = 3", "[tls]", 'certs = "."']
    for n, port in zip("xyz", free_ports(3)):
        lines += [f"[parties.{n}]", f'address = "127.0.0.1:{port}"']
    for f in folders.values():
        (f / "job.toml").write_text("\n".join(lines) + "\n")
        (f / "prog.py").write_text(RESULT_SCRIPT)
    procs = {n: party(folders[n] / "job.toml", n, folders[n] / "prog.py") for n in "xyz"}
    out = finish(procs)
    text = f"the certificate of party {revoked!r} (serial {serial}) is revoked since "
    for n in others:
        code, _, err = out[n]
        # a dialling party refuses at once; an accepting one waits for a valid certificate until its timeout
        assert code == 1 and f"error: PeerCertificateError: party {revoked!r}: " in err and text in err, err
    code, _, err = out[revoked]
    assert code == 1 and "error: PeerCertificateError: party '" in err, err
    assert f"refused the connection: revoked certificate: {text}" in err or (
        f"it refused this party's certificate: revoked certificate: {text}" in err
    ), err


def test_revoke_by_name_serial_or_file_and_publish_a_fresh_list(tmp_path, capsys):
    ca = tmp_path / "ca"
    certs.init_ca(ca)
    old, _ = certs.issue(ca, "w")  # not in the index: revoked by its file
    assert cli(["certs", "revoke", str(ca)]) == 2
    assert "give a party name, a certificate file or --serial S" in capsys.readouterr().err
    assert cli(["certs", "revoke", str(ca), "w"]) == 2
    assert "party 'w' has no valid certificate" in capsys.readouterr().err
    assert cli(["certs", "revoke", str(ca), str(old), "--reason", "lost"]) == 2
    assert "unknown revocation reason 'lost'" in capsys.readouterr().err
    assert cli(["certs", "revoke", str(ca), str(old), "--reason", "superseded", "--days", "2"]) == 0
    serial = certs.load_certificate(old, "w").serial_number
    assert f"revoked: party 'w', serial {serial:x} (reason: superseded)" in capsys.readouterr().out
    assert cli(["certs", "revoke", str(ca), "--serial", f"0x{serial:x}"]) == 2
    assert f"(serial {serial:x}) is already revoked" in capsys.readouterr().err
    ca_cert = certs.load_certificate(ca / "ca.pem", "ca")
    first = revocation.load_crl(ca / revocation.CRL_FILE, ca_cert, "test")
    assert [r.serial_number for r in first] == [serial]
    assert first.next_update_utc - first.last_update_utc == dt.timedelta(days=2)
    assert cli(["certs", "crl", str(ca), "--days", "1"]) == 0
    assert "next update due in 1 days" in capsys.readouterr().out
    fresh = revocation.load_crl(ca / revocation.CRL_FILE, ca_cert, "test")
    number = fresh.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == 2 and [r.serial_number for r in fresh] == [serial]
    assert revocation.describe("w", fresh.get_revoked_certificate_by_serial_number(serial)).endswith(
        "(reason: superseded)"
    )
    # a serial as openssl prints it (upper case, leading zeros, colons) names the same certificate
    assert cli(["certs", "issue", str(ca), "v"]) == 0  # recorded in the index
    printed = certs.load_certificate(ca / "v.pem", "v").serial_number.to_bytes(21, "big").hex(":").upper()
    assert cli(["certs", "revoke", str(ca), "--serial", printed]) == 0
    assert "revoked: party 'v'" in capsys.readouterr().out
    assert cli(["certs", "revoke", str(ca), "--serial", "5g"]) == 2
    assert "the serial '5g' is not a hexadecimal number" in capsys.readouterr().err
