"""The audit trail of a real job (three parties under approvals) and ``covault audit``: every
kind of tampering with a party's SQLite log (edit, delete, reorder, truncate, a rewritten and
re-signed history) is found by ``covault audit verify``, which names the first bad entry."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3

import pytest

from covault.cli import main as cli
from covault.governance.audit import SIGNATURE_DOMAIN, entry_hash, signed_part
from covault.governance.signing import load_identity
from covault.jobs.approvals import approve, party_folder
from covault.jobs.local import run_local
from covault.jobs.spec import load_job
from tests.helpers import HOSPITALS, deploy_job, tiny_job

A = HOSPITALS[0]
KINDS = [
    "proposed",
    "approved",
    "started",
    "input",
    "policy",
    "revealed",
    "traffic",
    "finished",
    "countersigned",
]


@pytest.fixture(scope="module")
def trail(tmp_path_factory):
    """The job folder after one approved three-party run (threads): every party's log is in
    ``certs/``."""
    d = tmp_path_factory.mktemp("trail")
    path = tiny_job(d)
    deploy_job(path, list(HOSPITALS), lambda t: t)
    job = load_job(path)
    for n in HOSPITALS:
        approve(job, n, party_folder(job, n))
    run_local(path, transport="local", progress=False, approvals=True)
    return d


@pytest.fixture
def logs(trail, tmp_path):
    """A copy of the governance folder to tamper with."""
    return shutil.copytree(trail / "certs", tmp_path / "certs")


def audit(capsys, *args):
    code = cli(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def tamper(path, *sql, params=()):
    """Run ``sql`` on the log directly, without its append-only triggers."""
    db = sqlite3.connect(path)
    for t in ("entries_no_update", "entries_no_delete", "heads_no_update", "heads_no_delete"):
        db.execute(f"DROP TRIGGER IF EXISTS {t}")
    for i, statement in enumerate(sql):
        db.execute(statement, params[i] if i < len(params) else ())
    db.commit()
    db.close()


def test_every_partys_trail_records_the_job_and_verifies(trail, logs, capsys):
    code, out, _ = audit(capsys, "verify", "--governance", str(logs))
    assert code == 0, out
    for n in HOSPITALS:
        others = ", ".join(h for h in HOSPITALS if h != n)
        assert f"{n}: OK: 9 entries, 4 heads countersigned by {others}" in out
    code, out, _ = audit(capsys, "show", str(trail / "job.toml"), "--as", A, "--json")
    doc = json.loads(out)
    assert code == 0 and [e["kind"] for e in doc["entries"]] == KINDS
    by = {e["kind"]: e["payload"] for e in doc["entries"]}
    assert (
        by["input"]["train_rows"] + by["input"]["test_rows"] == 40 and len(by["input"]["table_sha256"]) == 64
    )
    assert [c["verdict"] for c in by["policy"]["columns"]] == ["feature"] * 4 + ["label"]
    assert set(by["traffic"]["peers"]) == {"hospital_b", "hospital_c"}
    assert all(v["bytes_sent"] > 0 for v in by["traffic"]["peers"].values())
    weights = next(r for r in by["revealed"]["reveals"] if r["what"] == "the model's weights")
    assert weights["to"] == list(HOSPITALS) and weights["shape"] == {"coef": [4], "intercept": []}
    assert set(by["started"]["approvals"]) == set(HOSPITALS)
    assert by["countersigned"] == {**by["countersigned"], "seq": 8, "witnesses": ["hospital_b", "hospital_c"]}
    # a digest of the table, never its content
    with (trail / f"{A}.csv").open() as fh:
        cells = [c for row in list(csv.reader(fh))[1:] for c in row[:4] if len(c) >= 6]
    raw = (logs / f"{A}.audit.sqlite").read_bytes()
    assert cells and not any(c.encode() in raw for c in cells)
    code, out, _ = audit(capsys, "show", str(trail / "job.toml"), "--as", A, "--kind", "input")
    assert code == 0 and "table sha256" in out and out.count("\n") == 2


@pytest.mark.parametrize(
    ("sql", "seq", "problem"),
    [
        (
            [
                "UPDATE entries SET payload = replace(payload, '\"train_rows\":28', '\"train_rows\":29') WHERE seq = 4"
            ],
            4,
            "entry 4 (input): its content does not match its hash",
        ),
        (["DELETE FROM entries WHERE seq = 5"], 5, "entry 5 is missing (deleted)"),
        (
            [
                "UPDATE entries SET seq = -4 WHERE seq = 4",
                "UPDATE entries SET seq = 4 WHERE seq = 5",
                "UPDATE entries SET seq = 5 WHERE seq = -4",
            ],
            4,
            "entry 4 (policy): its content does not match its hash (edited, or moved from another position)",
        ),
        (["DELETE FROM entries WHERE seq >= 7"], 7, "entries 7-8 are missing (log truncated)"),
        (
            ["DELETE FROM entries WHERE seq >= 7", f"DELETE FROM heads WHERE owner = '{A}'"],
            7,
            "entries 7-8 are missing (log truncated): the head at entry 8 countersigned by hospital_b",
        ),
        (
            ["DELETE FROM entries WHERE seq = 9"],
            9,
            "entry 9: the head at entry 8, countersigned by hospital_b, is recorded by no countersigned "
            "entry (log truncated)",
        ),
        (
            [f"UPDATE heads SET document = replace(document, '\"seq\":8', '\"seq\":7') WHERE owner = '{A}'"],
            7,
            "invalid: head of 'hospital_a': the signature of 'hospital_a' is invalid",
        ),
        (
            ["""UPDATE entries SET payload = '{"seq":[8],"hash":{}}' WHERE seq = 9"""],
            9,
            "entry 9 (countersigned): its content does not match its hash",
        ),
        (
            ["UPDATE entries SET payload = CAST(payload AS BLOB) WHERE seq = 4"],
            4,
            "entry 4 (input): a field has the wrong type (payload: bytes)",
        ),
    ],
    ids=[
        "edit",
        "delete",
        "reorder",
        "truncate",
        "truncate-with-heads",
        "truncate-last",
        "edit-head",
        "edit-countersigned",
        "blob",
    ],
)
def test_tampering_is_found_and_the_first_bad_entry_named(logs, capsys, sql, seq, problem):
    tamper(logs / f"{A}.audit.sqlite", *sql)
    code, out, _ = audit(capsys, "verify", "--governance", str(logs), "--as", A)
    assert code == 1 and f"{A}: BAD: " in out and problem in out, out
    code, out, _ = audit(capsys, "verify", "--governance", str(logs), "--as", A, "--json")
    first = json.loads(out)["logs"][0]["first_bad"]
    assert code == 1 and first["seq"] == seq and problem in first["problem"]
    # the other parties' logs are untouched
    code, out, _ = audit(capsys, "verify", "--governance", str(logs), "--as", "hospital_b")
    assert code == 0, out


def _resign(log, identity, seq, payload, prev):
    """Entry ``seq`` of ``log`` with a new payload, re-hashed and signed with the party's key."""
    db = sqlite3.connect(log)
    time, kind, fp, key = db.execute(
        "SELECT time, kind, fingerprint, key FROM entries WHERE seq = ?", (seq,)
    ).fetchone()
    db.close()
    h = entry_hash(identity.party, seq, time, kind, fp, payload, prev, key)
    return h, identity.sign(SIGNATURE_DOMAIN, signed_part(identity.party, seq, h))


def test_an_entry_rehashed_after_an_edit_fails_its_signature(logs, capsys):
    log = logs / f"{A}.audit.sqlite"
    db = sqlite3.connect(log)
    payload, prev = db.execute("SELECT payload, prev FROM entries WHERE seq = 4").fetchone()
    db.close()
    payload = payload.replace('"train_rows":28', '"train_rows":29')
    h, _ = _resign(log, load_identity(logs, A), 4, payload, prev)
    tamper(log, "UPDATE entries SET payload = ?, hash = ? WHERE seq = 4", params=[(payload, h)])
    code, out, _ = audit(capsys, "verify", "--governance", str(logs), "--as", A)
    assert code == 1 and "entry 4 (input): the signature is invalid" in out, out


def test_an_entry_replaced_and_re_signed_breaks_the_chain_at_the_next(logs, capsys):
    """The party replaces entry 4 with one it re-hashes and re-signs with its own key: entry 4
    verifies, entry 5 no longer follows it."""
    log = logs / f"{A}.audit.sqlite"
    db = sqlite3.connect(log)
    payload, prev = db.execute("SELECT payload, prev FROM entries WHERE seq = 4").fetchone()
    db.close()
    payload = payload.replace('"train_rows":28', '"train_rows":29')
    h, sig = _resign(log, load_identity(logs, A), 4, payload, prev)
    tamper(
        log,
        "UPDATE entries SET payload = ?, hash = ?, signature = ? WHERE seq = 4",
        params=[(payload, h, sig)],
    )
    code, out, _ = audit(capsys, "verify", "--governance", str(logs), "--as", A)
    assert code == 1 and f"{A}: BAD: entry 5 (policy): it does not follow entry 4" in out, out


def test_a_history_rewritten_with_the_partys_own_key_is_caught_by_the_others_heads(logs, tmp_path, capsys):
    """The party re-signs every entry from 4 on: its chain and signatures are valid, its own
    copies of the heads can go too; the heads the other parties countersigned no longer match."""
    log = logs / f"{A}.audit.sqlite"
    me = load_identity(logs, A)
    db = sqlite3.connect(log)
    rows = db.execute("SELECT seq, payload, prev FROM entries WHERE seq >= 4 ORDER BY seq").fetchall()
    db.close()
    prev, sql, params = None, [], []
    for seq, payload, old_prev in rows:
        if seq == 4:
            payload = payload.replace('"train_rows":28', '"train_rows":29')
        h, sig = _resign(log, me, seq, payload, old_prev if prev is None else prev)
        sql.append("UPDATE entries SET payload = ?, prev = ?, hash = ?, signature = ? WHERE seq = ?")
        params.append((payload, old_prev if prev is None else prev, h, sig, seq))
        prev = h
    tamper(log, *sql, f"DELETE FROM heads WHERE owner = '{A}'", params=params)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(log, alone)
    shutil.copy(logs / "ca.pem", alone)
    code, out, _ = audit(capsys, "verify", "--governance", str(alone), "--as", A)
    assert code == 0, out  # alone, a consistent rewrite cannot be told from the original
    witness = logs / "hospital_c.audit.sqlite"
    code, out, _ = audit(capsys, "verify", "--governance", str(alone), "--as", A, "--witness", str(witness))
    assert code == 1 and "entry 8 differs from the head at entry 8 countersigned by hospital_c" in out, out
    heads = tmp_path / "c.heads.json"
    assert (
        audit(capsys, "heads", "--governance", str(logs), "--as", "hospital_c", "--out", str(heads))[0] == 0
    )
    code, out, _ = audit(capsys, "verify", "--governance", str(alone), "--as", A, "--witness", str(heads))
    assert code == 1 and "(history rewritten)" in out, out


def test_show_lists_a_tampered_log_whatever_its_payloads(logs, capsys):
    """Payloads of unexpected shapes are listed as their JSON text (verify names them as bad)."""
    tamper(
        logs / f"{A}.audit.sqlite",
        """UPDATE entries SET payload = '{"seconds":"x","model_sha256":5}' WHERE kind = 'finished'""",
        """UPDATE entries SET payload = '{"peers":[1,2]}' WHERE kind = 'traffic'""",
        """UPDATE entries SET payload = '{"reveals":"all"}' WHERE kind = 'revealed'""",
    )
    code, out, err = audit(capsys, "show", "--governance", str(logs), "--as", A)
    assert code == 0 and err == "", err
    assert '{"peers": [1, 2]}' in out and '"seconds": "x"' in out, out


def test_bad_input_exits_2(logs, tmp_path, capsys):
    code, _, err = audit(capsys, "verify", "--governance", str(logs), "--as", "nobody")
    assert code == 2 and "nobody.audit.sqlite not found" in err
    code, _, err = audit(capsys, "verify")
    assert code == 2 and "give the job file" in err
    code, _, err = audit(capsys, "verify", "--governance", str(logs), "--ca", str(tmp_path / "none.pem"))
    assert code == 2 and "none.pem" in err
