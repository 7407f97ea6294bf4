"""A job's privacy spending against an owner's budget: local DP of an owner's column charged to
its ledger by covault train, shown by covault plan, and a job that would exceed the cap refused
at every party before any row is shared, naming the owner and the remaining budget (exit 2)."""

from __future__ import annotations

import pytest

from covault.cli import main as cli
from covault.jobs import program as job_program_module
from covault.jobs.approvals import audit_entries, party_folder
from covault.jobs.local import run_local
from covault.jobs.spec import load_job
from covault.privacy.ledger import Ledger
from tests.helpers import HOSPITALS, approve_all, deploy_job, tiny_job
from tests.test_jobs_owners import at_every_party


@pytest.fixture
def capped_job(tmp_path):
    path = tiny_job(tmp_path)
    (tmp_path / "hospital_a.policy.toml").write_text(
        "[privacy]\nmax_epsilon = 1.5\n[privacy.local_dp]\nx1 = { epsilon = 1.0, bounds = [-3, 3] }\n"
    )
    text = path.read_text().replace(
        '[parties."hospital_a"]\n', '[parties."hospital_a"]\npolicy = "hospital_a.policy.toml"\n'
    )
    path.write_text(text)
    return path


def test_local_dp_charged_then_over_the_cap_refused(capped_job, capsys, monkeypatch):
    ledger_file = capped_job.parent / "hospital_a.privacy.sqlite"
    assert cli(["plan", str(capped_job), "--as", "hospital_a"]) == 0
    out = capsys.readouterr().out
    assert "privacy budget" in out and "spent 0, cap 1.5, remaining 1.5; this job: local DP 1" in out
    assert not ledger_file.exists(), "a dry run wrote the ledger"

    assert cli(["train", str(capped_job), "--transport", "local", "--quiet"]) == 0
    charges = Ledger(ledger_file).charges("hospital_a")
    assert [(c.epsilon, c.delta, c.what) for c in charges] == [(1.0, 0.0, "local DP of x1")]
    assert charges[0].job == load_job(capped_job).fingerprint()
    capsys.readouterr()

    assert cli(["plan", str(capped_job), "--as", "hospital_a"]) == 2
    out = capsys.readouterr().out
    assert "REFUSED: hospital_a refused the job" in out and "0.5 remains" in out

    def boom(*a, **k):
        raise AssertionError("rows were secret-shared before the refusal")

    monkeypatch.setattr(job_program_module, "_share_rows", boom)
    assert cli(["train", str(capped_job), "--transport", "local", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "hospital_a refused the job: rule privacy.max_epsilon" in err
    assert "needs epsilon 1, but the cap is 1.5, 1 is spent and 0.5 remains" in err
    assert len(Ledger(ledger_file).charges()) == 1


def test_every_party_raises_the_same_refusal(capped_job, monkeypatch):
    Ledger(capped_job.parent / "hospital_a.privacy.sqlite").charge("hospital_a", 1.2, 0.0, "earlier", "a sum")
    monkeypatch.setattr(
        job_program_module, "_share_rows", lambda *a, **k: (_ for _ in ()).throw(AssertionError)
    )
    job = load_job(capped_job)
    got = at_every_party(capped_job)
    for party in job.data_parties:
        kind, msg = got[party]
        assert kind == "RefusedError", (party, msg)
        assert msg.startswith("hospital_a refused the job: rule privacy.max_epsilon"), msg
        assert "0.3 remains" in msg


def _dp_job(tmp_path, cap: float):
    path = tiny_job(tmp_path)
    text = path.read_text().replace("[model]\n", "[model]\nstandardize = false\n")
    text = text.replace(
        '[parties."hospital_b"]\n', '[parties."hospital_b"]\npolicy = "hospital_b.policy.toml"\n'
    )
    path.write_text(text + "[privacy]\nepsilon = 2.0\ndelta = 1e-5\nmax_grad_norm = 1.0\nfeature_bound = 8\n")
    (tmp_path / "hospital_b.policy.toml").write_text(f"[privacy]\nmax_epsilon = {cap}\n")
    return path


def test_dp_sgd_job_over_the_cap_refused_by_its_epsilon(tmp_path, capsys):
    assert cli(["train", str(_dp_job(tmp_path, 1.5)), "--transport", "local", "--quiet"]) == 2
    assert "needs epsilon 2, but the cap is 1.5, 0 is spent and 1.5 remains" in capsys.readouterr().err
    assert Ledger(tmp_path / "hospital_b.privacy.sqlite").charges() == []


@pytest.mark.slow
def test_dp_sgd_job_charged_then_refused(tmp_path, capsys):
    path = _dp_job(tmp_path, 3)
    assert cli(["train", str(path), "--transport", "local", "--quiet"]) == 0
    charges = Ledger(tmp_path / "hospital_b.privacy.sqlite").charges()
    assert [(c.owner, c.epsilon, c.delta, c.what) for c in charges] == [
        ("hospital_b", 2.0, 1e-5, "DP-SGD training (logistic_regression)")
    ]
    capsys.readouterr()
    assert cli(["train", str(path), "--transport", "local", "--quiet"]) == 2
    assert "needs epsilon 2, but the cap is 3, 2 is spent and 1 remains" in capsys.readouterr().err


def test_a_governed_job_records_the_charge_in_the_owners_audit_log(capped_job):
    deploy_job(capped_job, list(HOSPITALS), lambda t: t.replace("[model]", "timeout = 30\n[model]"))
    approve_all(capped_job, HOSPITALS)
    run_local(capped_job, transport="local", progress=False, approvals=True)
    job = load_job(capped_job)
    spent = [e.data for e in audit_entries(party_folder(job, "hospital_a")) if e.kind == "privacy_budget"]
    assert spent == [
        {
            "epsilon": 1.0,
            "delta": 0.0,
            "mechanism": "local DP",
            "owner": "hospital_a",
            "what": "local DP of x1",
        }
    ]
    assert not [e for e in audit_entries(party_folder(job, "hospital_b")) if e.kind == "privacy_budget"]
