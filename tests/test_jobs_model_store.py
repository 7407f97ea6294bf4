"""A job with ``reveal_model_to = []`` and ``model_store``: the trained model stays secret-shared,
each compute party stores its encrypted shares, no party's output holds a weight, and the stored
model loads back into a session of the same parties."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import covault
from covault.jobs.errors import JobError
from covault.jobs.spec import load_job
from covault.serving import load_model, model_file
from covault.serving.keys import store_folders
from tests.helpers import HOSPITALS, tiny_job


def _secret_job(tmp_path, extra='reveal_model_to = []\nmodel_store = "risk"'):
    path = tiny_job(tmp_path)
    path.write_text(path.read_text().replace("seed = 2", f"seed = 2\n{extra}"))
    return path


TWO_PC = 'protocol = "2pc"\ncompute = ["hospital_a", "hospital_b"]\n'


@pytest.mark.parametrize("protocol", ["rep3", "2pc"])
def test_a_trained_model_is_stored_secret_shared_at_every_compute_party(tmp_path, protocol):
    path = _secret_job(tmp_path)
    if protocol == "2pc":  # hospital_c is then a data party only, the dealer holds nothing
        path.write_text(path.read_text().replace('protocol = "rep3"\n', TWO_PC))
    run = subprocess.run(
        [sys.executable, "-m", "covault", "train", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["model"] is None and result["metrics"] is None and result["loss_curve"] is None
    stored = result["model_store"]
    assert stored["model"] == "risk"
    job = load_job(path)
    assert sorted(stored["files"]) == sorted(job.compute)
    for p in job.compute:
        assert stored["files"][p] == str(model_file(tmp_path / "models", "risk", p))
        assert (tmp_path / "models" / "keys" / f"{p}.store.key").stat().st_mode & 0o777 == 0o600
    assert sorted(f.name for f in (tmp_path / "models").glob("*.shares")) == [
        f"risk.{p}.shares" for p in job.compute
    ]
    folder, keys = store_folders(job.config, job.model_dir)
    x = np.random.default_rng(3).normal(0, 1, (5, 4))

    def program(s):
        model = load_model(s, folder, "risk", key_dir=keys)
        w, b = (t.reveal() for t in model.weights)  # opened here only to check the outputs
        p = model.forward(s.input(x if s.party == "hospital_a" else None, owner="hospital_a")).reveal()
        return model.kind, model.info, w, b, p

    if protocol == "rep3":
        res = covault.run(program, list(HOSPITALS), "rep3")
    else:
        res = covault.run(program, list(HOSPITALS[:2]), "2pc", data_parties=["hospital_c"])
        assert res["hospital_c"][0] == "logistic_regression"  # a data party follows with empty shares
    kind, info, w, b, p = res["hospital_a"]
    assert kind == "logistic_regression" and info["job"] == job.fingerprint()
    assert info["model_inputs"] == ["x1", "x2", "x3", "x4"]
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(x @ w.reshape(-1) + b))), atol=2e-3)
    assert np.abs(w).min() > 1e-3  # trained weights, so that the search below means something
    for v in [*w.reshape(-1), *b.reshape(-1)]:
        for text in (f"{v:.4f}", f"{v:.6g}", repr(float(v))[:8]):
            assert text not in run.stdout and text not in run.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("reveal_model_to = []", "name the store with model_store"),
        ('reveal_model_to = []\nmodel_store = "r"\nmodel_out = "m.onnx"', "no party can write it"),
        ('model_dir = "x"', "give model_store too"),
        ('reveal_model_to = []\nmodel_store = "../r"', "model_store '../r'"),
    ],
)
def test_job_keys_of_a_stored_model_are_checked(tmp_path, extra, message):
    with pytest.raises(JobError, match=message.replace(".", r"\.")):
        load_job(_secret_job(tmp_path, extra))


def test_model_store_is_agreed_and_absent_from_older_jobs_fingerprints(tmp_path):
    assert "model_store" not in load_job(tiny_job(tmp_path)).fingerprint_parts()  # unchanged fingerprints
    assert "model_store" in load_job(_secret_job(tmp_path, 'model_store = "r"')).fingerprint_parts()


def test_the_plan_says_nobody_learns_the_model_and_where_it_is_kept(tmp_path, capsys):
    from covault.cli import main as cli

    cli(["plan", str(_secret_job(tmp_path)), "--as", "hospital_a"])
    out = capsys.readouterr().out
    assert "revealed to nobody: the model, its held-out metrics and the loss per epoch" in out
    assert "hospital_a, hospital_b, hospital_c: each its own shares of the model" in out
