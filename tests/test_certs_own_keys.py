"""Own keys: ``covault certs request`` on each party's host, ``covault certs sign`` at the CA;
only requests and certificates move, and a three-party job runs on what they made."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from covault.cli import main as cli
from covault.deploy import certs, csr, issued
from covault.deploy.config import ConfigError, load_config
from covault.deploy.issued import Index
from tests.helpers import free_ports
from tests.test_consortium import EXPECTED, RESULT_SCRIPT, TIMEOUT, finish, party, results

pytestmark = pytest.mark.processes


def files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def request_for(names: list[str], cn: str | None, key=None, extra=(), ext=(), ip=False) -> bytes:
    """A PEM request with subject CN ``cn`` (None: none), DNS names ``names`` (and 127.0.0.1 if
    ``ip``), ``extra`` subject attributes and ``ext`` extensions, signed by ``key`` (default: a
    fresh P-256 key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = ([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []) + list(extra)
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if ip else []
    if alt:
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    for e in ext:
        b = b.add_extension(e, critical=True)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_request_writes_a_0600_key_only_in_its_folder_and_never_overwrites_it(tmp_path, capsys):
    host = tmp_path / "host_a"
    assert cli(["certs", "request", str(host), "a"]) == 0
    assert files(tmp_path) == {Path("host_a/a.key"), Path("host_a/a.csr")}
    assert stat.S_IMODE((host / "a.key").stat().st_mode) == 0o600
    key = certs.load_private_key(host / "a.key", "a")
    request = csr.load_request(host / "a.csr")
    assert csr.request_name(request, "a.csr") == "a"
    assert [a.value for a in request.subject] == ["a"]  # the CN, and the one DNS name
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a"]
    assert request.public_key().public_numbers() == key.public_key().public_numbers()

    before = (host / "a.key").read_bytes()
    capsys.readouterr()
    assert cli(["certs", "request", str(host), "a"]) == 2
    err = capsys.readouterr().err
    assert f"{host / 'a.key'} already exists: refusing to overwrite a private key" in err
    assert (host / "a.key").read_bytes() == before
    with pytest.raises(certs.CertificateError, match="already exists: refusing to overwrite"):
        certs.write_key(host / "a.key", ec.generate_private_key(ec.SECP256R1()), exclusive=True)
    assert (host / "a.key").read_bytes() == before

    assert cli(["certs", "request", str(host), "a", "--reuse-key"]) == 0  # renewal: same key
    assert csr.load_request(host / "a.csr").public_key().public_numbers() == key.public_key().public_numbers()
    assert (host / "a.key").read_bytes() == before
    assert files(tmp_path) == {Path("host_a/a.key"), Path("host_a/a.csr")}


def test_the_ca_and_party_folders_are_private_whatever_the_umask(tmp_path):
    """Under umask 000 the CA's folder and a party's folder are still 0700 and keys 0600: no
    other local user can replace ca.pem, edit the CA's index (un-revoking a certificate at the
    next list) or swap a key."""
    old = os.umask(0)
    try:
        certs.init_ca(tmp_path / "ca")
        csr.request(tmp_path / "host_a", "a")
    finally:
        os.umask(old)
    for folder in ("ca", "host_a"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o700, folder
    for key in ("ca/ca.key", "host_a/a.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600, key


def test_sign_never_writes_a_certificate_through_a_symbolic_link(tmp_path):
    """A request dropped in a shared inbox beside a link ``NAME.pem -> elsewhere`` does not make
    the CA operator overwrite ``elsewhere``."""
    ca = tmp_path / "ca"
    certs.init_ca(ca)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the CA operator's file\n")
    (inbox / "a.pem").symlink_to(victim)
    (inbox / "a.csr").write_bytes(request_for(["a"], "a"))
    with pytest.raises(certs.CertificateError, match="is a symbolic link: refusing to write the certificate"):
        csr.sign(ca, inbox / "a.csr", days=5)
    assert victim.read_text() == "the CA operator's file\n"
    assert Index.load(ca).entries == []


@pytest.mark.parametrize("days", ["0", "-3", "10000000"])
def test_a_validity_out_of_range_is_refused_by_name(tmp_path, capsys, days):
    """init, sign and crl refuse 0, negative and absurd validities with one line naming the
    bound (no traceback) and write nothing."""
    assert cli(["certs", "init", str(tmp_path / "bad"), "--days", days]) == 2
    assert not (tmp_path / "bad").exists()
    ca = tmp_path / "ca"
    certs.init_ca(ca)
    (tmp_path / "a.csr").write_bytes(request_for(["a"], "a"))
    assert cli(["certs", "sign", str(ca), str(tmp_path / "a.csr"), "--days", days]) == 2
    assert cli(["certs", "crl", str(ca), "--days", days]) == 2
    certs.issue(ca, "b")
    issued.record(ca, certs.load_certificate(ca / "b.pem", "b"))
    assert cli(["certs", "revoke", str(ca), "b", "--days", days]) == 2
    err = capsys.readouterr().err
    assert err.count(f"must be a whole number of days from 1 to {certs.MAX_DAYS}, got {days}") == 4, err
    assert Index.load(ca).revoked() == [] and not (ca / "revoked.crl.pem").exists()
    assert not (tmp_path / "a.pem").exists()


def test_sign_refuses_requests_that_do_not_name_exactly_the_party(tmp_path, capsys):
    ca = tmp_path / "ca"
    certs.init_ca(ca)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cases = {
        "two names": (request_for(["a", "b"], "a"), "a", r"names 2 parties \['a', 'b'\]"),
        "CN and DNS name differ": (request_for(["b"], "a"), "a", r"names 2 parties \['a', 'b'\]"),
        "no name": (request_for([], None), "a", r"names 0 parties \[\]"),
        "another party's name": (
            request_for(["b"], "b"),
            "a",
            r"the request names 'b', not 'a' \(its file name\)",
        ),
        "an organisation": (
            request_for(["a"], "a", extra=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bank")]),
            "a",
            r"subject holds \['O'\]",
        ),
        "a reserved name": (request_for(["ca"], "ca"), "ca", "invalid party name|reserved"),
        "a bad name": (request_for(["a b"], "a b"), "a b", "invalid party name"),
        "a CA": (request_for(["a"], "a", ext=[x509.BasicConstraints(ca=True, path_length=None)]), "a",
                 "asks for extension BasicConstraints"),
        "an IP address": (request_for(["a"], "a", ip=True), "a", "DNS names only"),
        "an RSA key": (request_for(["a"], "a", key=rsa.generate_private_key(65537, 2048)), "a",
                       "not an ECDSA P-256 key"),
        "a P-384 key": (request_for(["a"], "a", key=ec.generate_private_key(ec.SECP384R1())), "a",
                        "not an ECDSA P-256 key"),
    }  # fmt: skip
    for case, (pem, stem, message) in cases.items():
        path = inbox / f"{stem}.csr"
        path.write_bytes(pem)
        with pytest.raises(certs.CertificateError, match=message):
            csr.sign(ca, path, days=5)
        assert not (inbox / f"{stem}.pem").exists(), case
    # a request whose signature does not verify: its key's public half swapped for another's
    good = x509.load_pem_x509_csr(request_for(["a"], "a"))
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    mine = good.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = good.public_bytes(serialization.Encoding.DER).replace(mine, other)
    (inbox / "a.csr").write_bytes(x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(certs.CertificateError, match="signature does not verify"):
        csr.sign(ca, inbox / "a.csr", days=5)
    assert Index.load(ca).entries == []

    # validity is explicit on the command line; one valid certificate per party unless --renew
    (inbox / "a.csr").write_bytes(request_for(["a"], "a"))
    with pytest.raises(SystemExit):
        cli(["certs", "sign", str(ca), str(inbox / "a.csr")])
    assert "the following arguments are required: --days" in capsys.readouterr().err
    assert cli(["certs", "sign", str(ca), str(inbox / "a.csr"), "--days", "7"]) == 0
    first = certs.load_certificate(inbox / "a.pem", "a")
    assert (
        certs.party_name(first) == "a" and first.issuer == certs.load_certificate(ca / "ca.pem", "ca").subject
    )
    assert first.not_valid_after_utc - first.not_valid_before_utc == dt.timedelta(days=7)
    assert f"serial {first.serial_number:x}, valid 7 days" in capsys.readouterr().out
    assert cli(["certs", "sign", str(ca), str(inbox / "a.csr"), "--days", "7"]) == 2
    assert (
        f"party 'a' already has a valid certificate (serial {first.serial_number:x})"
        in capsys.readouterr().err
    )
    assert cli(["certs", "sign", str(ca), str(inbox / "a.csr"), "--days", "7", "--renew"]) == 0
    assert f"still valid: its earlier certificate(s) {first.serial_number:x}" in capsys.readouterr().out
    assert [e.party for e in Index.load(ca).entries] == ["a", "a"]
    # serials are random (159 bits from the OS CSPRNG): distinct, and over 64 bits but for a
    # chance of 2^-94
    serials = [int(e.serial, 16) for e in Index.load(ca).entries]
    assert len(set(serials)) == 2 and min(s.bit_length() for s in serials) > 64, serials
    assert files(ca) == {Path("ca.pem"), Path("ca.key"), Path("issued.json")}


def test_a_three_party_job_runs_on_requested_and_signed_certificates(tmp_path):
    """Each host makes its key; only the request goes to the CA and only the certificate (with
    ca.pem) comes back; each party's folder holds its own files alone, and the job runs."""
    ca, inbox = tmp_path / "ca", tmp_path / "inbox"
    assert cli(["certs", "init", str(ca), "--days", "2"]) == 0
    inbox.mkdir()
    hosts = {n: tmp_path / f"host_{n}" for n in "abc"}
    ports = free_ports(3)
    for n, host in hosts.items():
        assert cli(["certs", "request", str(host / "certs"), n]) == 0
        shutil.copy(host / "certs" / f"{n}.csr", inbox)  # the request travels, the key stays
        assert cli(["certs", "sign", str(ca), str(inbox / f"{n}.csr"), "--days", "2"]) == 0
        for f in (inbox / f"{n}.pem", ca / "ca.pem"):  # the certificate and ca.pem travel back
            shutil.copy(f, host / "certs")
        lines = ['protocol = "rep3"', f"timeout = {TIMEOUT}", "[tls]", 'certs = "certs"']
        for m, port in zip("abc", ports):
            lines += [f"[parties.{m}]", f'address = "127.0.0.1:{port}"']
        (host / "job.toml").write_text("\n".join(lines) + "\n")
        (host / "prog.py").write_text(RESULT_SCRIPT)
    # every key file lies in its owner's folder, and no key's content lies anywhere else
    keys = {p for p in tmp_path.rglob("*.key")}
    assert keys == {ca / "ca.key", *(hosts[n] / "certs" / f"{n}.key" for n in "abc")}
    for key in keys:
        secret = key.read_bytes()
        assert [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_bytes()] == [key]
    assert files(hosts["a"]) == {
        Path(p) for p in ("job.toml", "prog.py", "certs/a.key", "certs/a.csr", "certs/a.pem", "certs/ca.pem")
    }

    cfg = load_config(hosts["a"] / "job.toml")
    cfg.require_certificates("a")  # one party's folder is complete for that party
    with pytest.raises(ConfigError, match=r"party 'b': missing certificate file .*b\.pem"):
        cfg.require_certificates()  # not for every party: it holds no one else's files

    procs = {n: party(hosts[n] / "job.toml", n, hosts[n] / "prog.py", cwd=hosts[n]) for n in "abc"}
    for n, line in results(finish(procs)).items():
        np.testing.assert_allclose([float(v) for v in line.split()[1:]], EXPECTED, atol=1e-3)
