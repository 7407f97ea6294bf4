"""A job runs only when every party approved this version of it: without one owner's approval,
with a rejection, or with a job key changed after the approvals, every party stops before any
data is read and says why; the refusal is in every party's audit log. The full flow of real
processes: covault certs request and sign, covault approve --yes for each party, covault party
for each over mutual TLS, covault audit verify for each."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from covault.cli import main as cli
from covault.governance.errors import ApprovalError
from covault.governance.fingerprint import differing_keys
from covault.jobs.approvals import audit_entries, known_jobs, party_folder, reject
from covault.jobs.local import run_local
from covault.jobs.spec import load_job
from tests.helpers import HOSPITALS, approve_all, deploy_job, free_ports, run_parties, tiny_job

A, B, C = HOSPITALS


@pytest.fixture
def job_path(tmp_path):
    path = tiny_job(tmp_path)
    deploy_job(path, list(HOSPITALS), lambda t: t.replace("[model]", "timeout = 30\n[model]"))
    return path


def refused_everywhere(path, message: str) -> None:
    """Every party's log ends with ``failed`` carrying ``message`` and the countersigned record
    of that refusal, and read no data (no ``input`` entry)."""
    job = load_job(path)
    for n in HOSPITALS:
        entries = audit_entries(party_folder(job, n), fingerprint=job.fingerprint())
        kinds = [e.kind for e in entries]
        assert kinds[-2:] == ["failed", "countersigned"] and "input" not in kinds, (n, kinds)
        assert entries[-2].data["type"] == "ApprovalError" and message in entries[-2].data["error"]
        assert known_jobs(party_folder(job, n))[-1].status == "failed"


def test_without_one_owners_approval_no_party_starts(job_path):
    approve_all(job_path, [A, B])
    with pytest.raises(ApprovalError, match=f"party '{C}' has not approved this job") as err:
        run_local(job_path, transport="local", progress=False, approvals=True)
    assert err.value.parties == (C,)
    refused_everywhere(job_path, f"party '{C}' has not approved this job (run: covault approve JOB --as {C})")


def test_a_rejection_stops_every_party_with_its_reason(job_path, capsys):
    approve_all(job_path, [A, C])
    job = load_job(job_path)
    reject(job, B, party_folder(job, B), reason="not this quarter")
    code = cli(["train", str(job_path), "--approvals", "--transport", "local", "--quiet"])
    err = capsys.readouterr().err
    assert (
        code == 2
        and f"ApprovalError: the job was not approved by every party: party '{B}' rejected this job: not this quarter"
        in err
    )
    refused_everywhere(job_path, f"party '{B}' rejected this job: not this quarter")


def test_a_key_changed_after_the_approvals_is_named(job_path):
    approve_all(job_path, HOSPITALS)
    job_path.write_text(
        job_path.read_text().replace("epochs = 2", "epochs = 3").replace("seed = 2", "seed = 4")
    )
    with pytest.raises(ApprovalError) as err:
        run_local(job_path, transport="local", progress=False, approvals=True)
    assert err.value.keys == ("model.epochs", "seed") and err.value.parties == HOSPITALS
    said = "parties 'hospital_a', 'hospital_b', 'hospital_c' approved another version of this job, not this one; keys that differ: model.epochs, seed"
    assert said in str(err.value)
    refused_everywhere(job_path, said)


@pytest.mark.processes
def test_party_processes_stop_at_once_naming_the_party_without_approval(job_path):
    """Three `covault party` processes over mutual TLS; hospital_c has not approved: each exits
    2 with the same one-line error long before the consortium timeout (30 s)."""
    approve_all(job_path, [A, B])
    t0 = time.monotonic()
    done = run_parties(job_path, {n: ["--quiet"] for n in HOSPITALS})
    seconds = time.monotonic() - t0
    for n, (out, err, code) in done.items():
        assert code == 2 and out == "", (n, err)
        assert err.startswith(
            f"covault party {n}: error: ApprovalError: the job was not approved by every party: party '{C}' has not approved this job"
        ), (n, err)
    refused_everywhere(job_path, f"party '{C}' has not approved this job")
    print(f"every party refused the job in {seconds:.2f} s (processes started to all exited)")


def own_keys(path, names) -> None:
    """Each party's key made by ``covault certs request`` and signed by ``covault certs sign``
    (one folder here, as if copied from each host), a loopback address per party."""
    certs, ca = path.parent / "certs", path.parent / "ca"
    assert cli(["certs", "init", str(ca), "--days", "2"]) == 0
    for n in names:
        assert cli(["certs", "request", str(certs), n]) == 0
        assert cli(["certs", "sign", str(ca), str(certs / f"{n}.csr"), "--days", "2"]) == 0
    shutil.copy(ca / "ca.pem", certs / "ca.pem")
    text = path.read_text().replace("[model]", "timeout = 30\n[model]") + '[tls]\ncerts = "certs"\n'
    for n, port in zip(names, free_ports(len(names))):
        text = text.replace(f'[parties."{n}"]\n', f'[parties."{n}"]\naddress = "127.0.0.1:{port}"\n')
    path.write_text(text)


@pytest.mark.processes
def test_full_flow_certs_approve_party_verify(tmp_path):
    """covault certs request / sign -> covault approve --yes x3 -> covault party x3 -> covault
    audit verify x3."""
    path = tiny_job(tmp_path)
    own_keys(path, HOSPITALS)
    for n in HOSPITALS:
        done = subprocess.run(
            [sys.executable, "-m", "covault", "approve", str(path), "--as", n, "--yes"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and f"covault approve: party {n} approved job 'job'" in done.stdout, (
            done.stderr
        )
    done = run_parties(path, {n: ["--quiet"] for n in HOSPITALS})
    for n, (out, err, code) in done.items():
        assert code == 0 and f"party {n} (compute, data, receiver)" in out, (n, err)
    for n in HOSPITALS:
        v = subprocess.run(
            [sys.executable, "-m", "covault", "audit", "verify", str(path), "--as", n],
            capture_output=True,
            text=True,
        )
        others = ", ".join(h for h in HOSPITALS if h != n)
        assert v.returncode == 0 and v.stdout.startswith(
            f"{n}: OK: 9 entries, 4 heads countersigned by {others}"
        ), v


TWO_PC = """protocol = "2pc"
dealer = "{dealer}"
compute = ["bank_a", "bank_b"]
task = "logistic_regression"
label = "y"
seed = 3
timeout = {timeout}
[model]
epochs = 2
batch_size = 16
[parties.bank_a]
address = "127.0.0.1:{port}"
data = "{data}"
[parties.bank_b]
data = "b.csv"
[parties.{dealer}]
[tls]
certs = "certs"
{tls}"""


def two_pc(tmp_path, **change) -> str:
    """The fingerprint of a 2pc job with a dealer (``change``: the text's fields)."""
    fields = {"dealer": "dealer_d", "timeout": 30, "port": 9001, "data": "a.csv", "tls": "", **change}
    path = tmp_path / "job.toml"
    path.write_text(TWO_PC.format(**fields))
    return load_job(path)


def test_the_fingerprint_covers_every_agreed_key_and_no_local_one(tmp_path):
    """Comments, spacing, the order of tables, the consortium timeout, addresses and data
    files leave the fingerprint as it is; running in plaintext or with another dealer changes
    it, and the keys that differ are named."""
    base = two_pc(tmp_path)
    same = [
        two_pc(tmp_path, timeout=300),
        two_pc(tmp_path, port=9002),
        two_pc(tmp_path, data="elsewhere/a.csv"),
    ]
    path = tmp_path / "job.toml"
    text = TWO_PC.format(dealer="dealer_d", timeout=30, port=9001, data="a.csv", tls="")
    head, model, parties = text.partition("[model]\nepochs = 2\nbatch_size = 16\n")
    head = "# a comment\n" + head.replace("seed = 3", "seed   =   3  # the seed")
    path.write_text(head + parties + "[model]\nbatch_size = 16\nepochs   = 2\n")
    same.append(load_job(path))
    assert [j.fingerprint() for j in same] == [base.fingerprint()] * len(same)
    for job, keys in [
        (two_pc(tmp_path, tls="plaintext = true\n"), ["tls"]),
        (two_pc(tmp_path, dealer="dealer_e"), ["dealer", "parties"]),
    ]:
        assert job.fingerprint() != base.fingerprint()
        assert differing_keys(job.fingerprint_parts(), base.fingerprint_parts()) == keys
