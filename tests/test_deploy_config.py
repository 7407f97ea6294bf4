"""Consortium config and certificates: valid files load, every mistake names its key or party."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from covault.deploy import certs
from covault.deploy.config import ConfigError, load_config, parse_config
from covault.runtime import config_session, config_session_id
from tests.helpers import free_ports

BASE = """
protocol = "rep3"
timeout = 12
[tls]
certs = "certs"
[parties.a]
address = "127.0.0.1:7001"
[parties.b]
address = "127.0.0.1:7002"
[parties.c]
address = "[::1]:7003"
"""


def write(tmp_path, text):
    p = tmp_path / "consortium.toml"
    p.write_text(text)
    return p


def test_valid_config_with_certificates(tmp_path):
    certs.init_ca(tmp_path / "certs", days=30)
    for n in "abc":
        certs.issue(tmp_path / "certs", n, days=30)
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.protocol == "rep3" and cfg.timeout == 12 and cfg.compute == ("a", "b", "c")
    assert cfg.parties["c"].host == "::1" and cfg.parties["c"].port == 7003
    assert cfg.certs == tmp_path / "certs"
    cfg.require_addresses()
    cfg.require_certificates()


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda t: "colour = 'red'\n" + t, "unknown key 'colour' in the top level"),
        (
            lambda t: t.replace('address = "127.0.0.1:7002"', 'adress = "x:1"'),
            "unknown key 'adress' in [parties.b]",
        ),
        (
            lambda t: t.replace('certs = "certs"', 'certs = "certs"\nverify = false'),
            "unknown key 'verify' in [tls]",
        ),
        (lambda t: t.replace('"rep3"', '"spdz"'), "protocol must be"),
        (lambda t: t.replace("timeout = 12", "timeout = -1"), "timeout must be"),
        (lambda t: t.replace('"127.0.0.1:7001"', '"127.0.0.1"'), "party 'a': address must be 'host:port'"),
        (lambda t: t.replace('"127.0.0.1:7001"', '"127.0.0.1:99999"'), "party 'a': bad address"),
        (lambda t: t.replace('protocol = "rep3"', 'protocol = "2pc"'), "needs dealer"),
        (
            lambda t: t.replace('protocol = "rep3"', 'protocol = "2pc"\ndealer = "zed"'),
            "dealer 'zed' is not one of",
        ),
        (lambda t: t.replace('protocol = "rep3"', 'dealer = "a"'), "only used with protocol = '2pc'"),
        (lambda t: t.replace('[parties.c]\naddress = "[::1]:7003"', ""), "needs exactly 3"),
        (lambda t: t + "\n[parties.'bad name']\naddress = 'h:1'\n", "invalid party name"),
        (lambda t: t.replace("[tls]", "[tls"), "invalid TOML"),
    ],
)
def test_config_errors_name_the_problem(tmp_path, edit, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, edit(BASE)))
    assert fragment in str(info.value)


def test_unreadable_config_files_raise_config_errors_naming_the_file(tmp_path, monkeypatch):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(BASE.replace("timeout = 12", "# caf\u00e9\ntimeout = 12").encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"config file .*latin1\.toml is not UTF-8 text \(byte 0xe9 at line 3\)"
    ):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"config file .* is a directory, not a file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"config file .*none\.toml not found"):
        load_config(tmp_path / "none.toml")
    denied = write(tmp_path, BASE)
    real = Path.read_bytes

    def read_bytes(self):
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(
        ConfigError, match=r"config file .*consortium\.toml cannot be read: permission denied"
    ):
        load_config(denied)


def test_config_with_a_byte_order_mark_loads(tmp_path):
    p = tmp_path / "bom.toml"
    p.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_config(p).timeout == 12


def test_missing_address_and_certificates_name_the_party(tmp_path):
    cfg = load_config(write(tmp_path, BASE.replace('address = "127.0.0.1:7002"', "")))
    with pytest.raises(ConfigError, match="party 'b' has no address"):
        cfg.require_addresses()
    certs.init_ca(tmp_path / "certs")
    certs.issue(tmp_path / "certs", "a")
    with pytest.raises(ConfigError, match="party 'b': missing certificate file"):
        cfg.require_certificates()


def test_2pc_with_dealer(tmp_path):
    text = BASE.replace('protocol = "rep3"', 'protocol = "2pc"\ndealer = "c"')
    cfg = load_config(write(tmp_path, text))
    assert cfg.compute == ("a", "b") and cfg.dealer == "c" and cfg.names == ("a", "b", "c")
    with pytest.raises(ConfigError, match="cannot be both"):
        parse_config({"protocol": "2pc", "dealer": "a", "compute": ["a", "b"], "parties": {"a": {}, "b": {}}})


def test_certificate_validity_errors_name_party_and_date(tmp_path):
    d = tmp_path / "certs"
    certs.init_ca(d)
    certs.issue(d, "old", days=1, not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(certs.CertificateError, match=r"party 'old' expired on 2020-01-02"):
        certs.check_party_files(d, "old")
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    certs.issue(d, "early", days=10, not_before=future)
    with pytest.raises(
        certs.CertificateError, match=rf"party 'early' is not valid yet: valid from {future:%Y-%m-%d}"
    ):
        certs.check_party_files(d, "early")


def test_certificate_from_another_ca_or_for_another_party(tmp_path):
    d, other = tmp_path / "certs", tmp_path / "other"
    certs.init_ca(d)
    certs.init_ca(other)
    certs.issue(other, "a")
    for ext in ("pem", "key"):
        (d / f"a.{ext}").write_bytes((other / f"a.{ext}").read_bytes())
    with pytest.raises(
        certs.CertificateError, match="party 'a': certificate is not signed by the consortium CA"
    ):
        certs.check_party_files(d, "a")
    certs.issue(d, "b")
    (d / "c.pem").write_bytes((d / "b.pem").read_bytes())
    (d / "c.key").write_bytes((d / "b.key").read_bytes())
    with pytest.raises(certs.CertificateError, match="names \\['b'\\], not 'c'"):
        certs.check_party_files(d, "c")


def test_ca_is_not_overwritten_and_keys_are_private(tmp_path):
    certs.init_ca(tmp_path)
    with pytest.raises(certs.CertificateError, match="refusing to overwrite"):
        certs.init_ca(tmp_path)
    certs.issue(tmp_path, "a")
    assert (tmp_path / "a.key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0


DATA_CONFIG = """
protocol = "rep3"
compute = ["a", "b", "c"]
timeout = 10
[tls]
certs = "certs"
[parties.bank]
{bank}
[parties.a]
address = "127.0.0.1:{0}"
[parties.b]
address = "127.0.0.1:{1}"
[parties.c]
address = "127.0.0.1:{2}"
[parties.zed]
address = "127.0.0.1:{4}"
"""


def data_config(tmp_path, bank_line=None):
    ports = free_ports(5)
    bank = bank_line if bank_line is not None else f'address = "127.0.0.1:{ports[3]}"'
    return load_config(write(tmp_path, DATA_CONFIG.format(*ports, bank=bank)))


def test_config_parties_outside_compute_and_dealer_are_data_parties(tmp_path):
    cfg = data_config(tmp_path)
    assert cfg.compute == ("a", "b", "c") and cfg.data == ("bank", "zed")  # file order
    assert cfg.names == ("a", "b", "c", "bank", "zed")
    two = parse_config({"protocol": "2pc", "dealer": "x", "parties": {"d": {}, "a": {}, "x": {}, "b": {}}})
    assert two.compute == ("d", "a") and two.data == ("b",) and two.names == ("d", "a", "x", "b")
    # the data parties, and their order, are part of the session id
    swapped = replace(cfg, parties={n: cfg.parties[n] for n in ("a", "b", "c", "zed", "bank")})
    fewer = replace(cfg, parties={n: cfg.parties[n] for n in ("a", "b", "c", "bank")})
    ids = {config_session_id(c) for c in (cfg, swapped, fewer)}
    assert len(ids) == 3
    with pytest.raises(ConfigError, match="party 'bank' has no address"):
        with config_session(data_config(tmp_path, bank_line=""), "bank"):
            pass


def test_data_party_of_a_config_inputs_and_receives_over_mutual_tls(tmp_path):
    certs.init_ca(tmp_path / "certs")
    cfg = data_config(tmp_path)
    for n in cfg.names:
        certs.issue(tmp_path / "certs", n)
    rows = np.array([[1.5, -2.0], [3.25, 4.0]])
    out, errors = {}, {}

    def party(name):
        try:
            with config_session(cfg, name, job="data-test") as s:
                x = s.input(rows if s.party == "bank" else None, owner="bank")
                y = s.input(np.array([2.0, -1.0]) if s.party == "a" else None, owner="a")
                out[name] = (s.parties, (x * y).sum(axis=0).reveal(to="bank"), x.shares.shape[0])
        except Exception as exc:
            errors[name] = exc

    threads = [threading.Thread(target=party, args=(n,)) for n in cfg.names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(out) == sorted(cfg.names)
    for name, (parties, got, ncomp) in out.items():
        assert parties == ("a", "b", "c", "bank", "zed")
        assert ncomp == (0 if name in ("bank", "zed") else 2)
        if name == "bank":
            np.testing.assert_allclose(got, (rows * [2.0, -1.0]).sum(axis=0), atol=1e-3)
        else:
            assert got is None
