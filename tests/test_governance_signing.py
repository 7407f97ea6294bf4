"""Signatures of governance records: approvals, audit entries, log heads and countersignatures
verify only with the key of the party they name, under a certificate of the consortium CA."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, replace

import pytest

from covault.deploy import certs
from covault.governance.approval import check_approval, decide, from_json, read_approval, save_approval
from covault.governance.audit import AuditLog, audit_path
from covault.governance.errors import AuditError
from covault.governance.fingerprint import JobStatement, differing_keys
from covault.governance.heads import check_countersignature, check_head, countersign, sign_head
from covault.governance.signing import load_ca, load_identity
from covault.governance.verify import verify_log

PARTIES = ("bank_a", "bank_b")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A consortium CA with two parties, and a second CA with a party of the same name."""
    d = tmp_path_factory.mktemp("keys")
    certs.init_ca(d, days=2)
    for p in PARTIES:
        certs.issue(d, p, days=2)
    rogue = tmp_path_factory.mktemp("rogue")
    certs.init_ca(rogue, days=2)
    certs.issue(rogue, "bank_a", days=2)
    return d, rogue


def job(epochs: int = 2) -> JobStatement:
    parts = {"task": "aa" * 32, "model.epochs": f"{epochs:02d}" * 32}
    return JobStatement(f"{epochs:064d}", parts, "fraud")


def test_an_approval_verifies_and_survives_its_file(keys, tmp_path):
    d, _ = keys
    a = decide(load_identity(d, "bank_a"), job(), "approved", roles=["compute", "data"])
    assert check_approval(a, load_ca(d, "test"), "bank_a") is None
    back = read_approval(save_approval(tmp_path, a))
    assert back == a and check_approval(back, load_ca(d, "test"), "bank_a") is None


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("decision", "rejected", "signature of 'bank_a' is invalid"),
        ("fingerprint", "f" * 64, "signature of 'bank_a' is invalid"),
        ("parts", {"task": "bb" * 32}, "signature of 'bank_a' is invalid"),
        ("roles", ["receiver"], "signature of 'bank_a' is invalid"),
        ("time", "2026-01-01T00:00:00+00:00", "not valid at"),  # before the certificate
        ("time", "2026-12-04T10:00:00", "has no time zone"),  # naive: not comparable, refused
        ("time", "yesterday", "is not an ISO 8601 time"),
    ],
)
def test_an_altered_approval_is_refused(keys, field, value, why):
    d, _ = keys
    a = decide(load_identity(d, "bank_a"), job(), "approved", roles=["compute"])
    forged = from_json({**a.to_json(), field: value}, "test")
    assert why in check_approval(forged, load_ca(d, "test"), "bank_a")


def test_an_approval_signed_by_another_party_is_refused(keys):
    d, rogue = keys
    ca = load_ca(d, "test")
    b = decide(load_identity(d, "bank_b"), job(), "approved", roles=["compute"])
    assert "signed as party 'bank_b'" in check_approval(b, ca, "bank_a")
    # bank_b's key and certificate, relabelled as bank_a's approval and re-signed by bank_b
    relabelled = replace(b, party="bank_a")
    signature = load_identity(d, "bank_b").sign("covault approval v1", relabelled.signed_part())
    relabelled = replace(relabelled, signature=signature)
    assert "names 'bank_b', not 'bank_a'" in check_approval(relabelled, ca, "bank_a")
    # a key of the right name, certified by another CA
    fake = decide(load_identity(rogue, "bank_a"), job(), "approved", roles=["compute"])
    assert "not signed by the consortium CA" in check_approval(fake, ca, "bank_a")
    # bank_a's certificate with bank_b's signature
    a = decide(load_identity(d, "bank_a"), job(), "approved", roles=["compute"])
    assert "signature of 'bank_a' is invalid" in check_approval(
        replace(a, signature=b.signature), ca, "bank_a"
    )


def test_differing_keys_names_each_key_that_changed_or_is_only_on_one_side():
    assert differing_keys(job(2).parts, job(3).parts) == ["model.epochs"]
    assert differing_keys({"a": "1", "b": "2"}, {"a": "1", "c": "3"}) == ["b", "c"]


def test_heads_and_countersignatures_verify_only_for_their_signers(keys):
    d, rogue = keys
    ca = load_ca(d, "test")
    a, b = load_identity(d, "bank_a"), load_identity(d, "bank_b")
    head = sign_head(a, 5, "ab" * 32, job().fingerprint)
    assert check_head(head, ca) is None
    assert "signature of 'bank_a' is invalid" in check_head(replace(head, seq=4), ca)
    rogue_head = sign_head(load_identity(rogue, "bank_a"), 5, "ab" * 32, None)
    assert "not signed by the consortium CA" in check_head(rogue_head, ca)
    c = countersign(b, head)
    assert check_countersignature(c, ca) is None
    assert "countersigned its own head" in check_countersignature(countersign(a, head), ca)
    moved = replace(c, head=replace(head, seq=4))  # the witness's signature on another head
    assert "head of 'bank_a'" in check_countersignature(moved, ca)
    claimed = replace(c, witness="bank_a")  # bank_b's countersignature claimed as another's
    assert check_countersignature(claimed, ca) is not None
    assert "signature of 'bank_b' is invalid" in check_countersignature(replace(c, time=head.time), ca)
    assert "has no time zone" in check_head(replace(head, time=head.time[:19]), ca)
    assert asdict(c.head) == asdict(head)


def test_an_entry_signed_with_another_partys_key_is_named(keys, tmp_path):
    """bank_b's key appends to bank_a's log through the file: the entry's hash and chain are
    right, its signature is not bank_a's."""
    d, _ = keys
    path = audit_path(tmp_path, "bank_a")
    with AuditLog(path, "bank_a", load_identity(d, "bank_a")) as log:
        log.append("proposed", "00" * 32, {"job": "fraud"})
        log.append("approved", "00" * 32, {"job": "fraud"})
    with pytest.raises(AuditError, match="signing identity is 'bank_b'"):
        AuditLog(path, "bank_a", load_identity(d, "bank_b"))
    # forge: sign entry 3 with bank_b's key, stored under bank_b's certificate
    b = load_identity(d, "bank_b")
    forged = _forged_entry(path, b)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO certs VALUES (?, ?)", (b.key_id, b.cert_pem))
    db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", forged)
    db.commit()
    db.close()
    report = verify_log(path, load_ca(d, "test"))
    assert not report.ok and report.first_bad.seq == 3
    assert "names 'bank_b', not 'bank_a'" in report.first_bad.problem


def _forged_entry(path, identity):
    from covault.governance.audit import SIGNATURE_DOMAIN, entry_hash, signed_part
    from covault.governance.signing import now

    with AuditLog(path, "bank_a", readonly=True) as log:
        seq, prev = log.head()
    seq += 1
    time, payload = now(), '{"job":"fraud"}'
    h = entry_hash("bank_a", seq, time, "started", "00" * 32, payload, prev, identity.key_id)
    sig = identity.sign(SIGNATURE_DOMAIN, signed_part("bank_a", seq, h))
    return (seq, time, "started", "00" * 32, payload, prev, h, identity.key_id, sig)


def test_an_approval_names_its_exact_certificate(tmp_path):
    """A second certificate of the same key (a renewal) swapped into a signed approval is
    refused: the signature covers the first one's key id."""
    from covault.deploy import csr

    ca, own = tmp_path / "ca", tmp_path / "own"
    certs.init_ca(ca, days=2)
    request, _ = csr.request(own, "bank_a")
    csr.sign(ca, request, days=2, out=own / "bank_a.pem")
    csr.sign(ca, request, days=1, out=tmp_path / "renewed.pem", renew=True)
    a = decide(load_identity(own, "bank_a"), job(), "approved", roles=["compute"])
    ca_cert = load_ca(ca, "test")
    assert check_approval(a, ca_cert, "bank_a") is None
    swapped = replace(a, certificate=(tmp_path / "renewed.pem").read_text())
    assert "is not the one the signature names" in check_approval(swapped, ca_cert, "bank_a")
