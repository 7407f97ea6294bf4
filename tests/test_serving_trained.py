"""From a training job to a service: ``covault train`` with ``reveal_model_to = []`` stores the
model secret-shared, ``covault serve JOB`` serves it at the compute parties and the dealer, and
``covault predict JOB``, the Python ``Client`` (with a consortium config of the same parties)
and ``covault gateway JOB`` query it from a data party (every party its own process, mutual TLS on loopback; the commands of docs/serving.md, "From a
training job to a service")."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

import covault
from covault.cli import main as cli
from covault.jobs.plaintext import pooled_rows
from covault.jobs.spec import load_job
from covault.serving import Client, load_model
from covault.serving.keys import store_folders
from tests.helpers import door_ports, free_ports, gateway_token, post, tiny_job, wait_parties

SERVING = ("hospital_a", "hospital_b", "dealer")
NAMES = ("hospital_a", "hospital_b", "hospital_c", "dealer")
SAME = 2e-3  # two queries of one secret model: fixed-point truncation only (docs/serving.md)
# The float64 reference trained on the same rows visits them in another order (the secure run
# shuffles obliviously) with fixed-point arithmetic: 2 epochs of SGD end at weights that give
# probabilities close to each other on these rows (measured: at most 0.005).
REFERENCE = 0.02


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2pc job (compute hospital_a and hospital_b, a dealer, hospital_c a data party) trained
    by ``covault train`` into the secret model ``fraud``, and a consortium config of the same
    compute parties, dealer, addresses and certificates, for the Python client hospital_c."""
    folder = tmp_path_factory.mktemp("trained")
    job = tiny_job(folder)
    certs = folder / "certs"
    assert cli(["certs", "init", str(certs), "--days", "2"]) == 0
    for n in NAMES:
        assert cli(["certs", "issue", str(certs), n, "--days", "2"]) == 0
    address = {n: f"127.0.0.1:{p}" for n, p in zip(NAMES, door_ports(len(NAMES)))}  # doors at port + 1
    top = ['protocol = "2pc"', 'compute = ["hospital_a", "hospital_b"]', 'dealer = "dealer"']
    text = job.read_text().replace('protocol = "rep3"', "\n".join(top))
    text = text.replace("seed = 2", 'seed = 2\nreveal_model_to = []\nmodel_store = "fraud"')
    for n in NAMES[:3]:
        text = text.replace(f'[parties."{n}"]\n', f'[parties."{n}"]\naddress = "{address[n]}"\n')
    job.write_text(text + f'[parties.dealer]\naddress = "{address["dealer"]}"\n[tls]\ncerts = "certs"\n')
    lines = [*top, "timeout = 20"]
    for n in NAMES:
        lines += [f"[parties.{n}]", f'address = "{address[n]}"']
    config = folder / "consortium.toml"
    config.write_text("\n".join([*lines, "[tls]", 'certs = "certs"']) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "covault", "train", str(job), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert run.returncode == 0, run.stderr
    return job, config, run


def reference(job, x):
    """The float64 twin trained on the same rows: its probabilities for ``x``."""
    spec = load_job(job)
    x_tr, y_tr, _, _ = pooled_rows(spec)
    return spec.reference().fit(x_tr, y_tr).predict_proba(x)[:, 1]


def opened_weights(job):
    """The stored model's weight and bias, opened here only to check the service and the
    training output (the shares loaded in-process from every compute party's file)."""
    spec = load_job(job)
    folder, keys = store_folders(spec.config, spec.model_dir)

    def program(s):
        return [t.reveal() for t in load_model(s, folder, "fraud", key_dir=keys).weights]

    res = covault.run(program, ["hospital_a", "hospital_b"], "2pc", data_parties=["hospital_c"])
    w, b = res["hospital_a"]
    return w.reshape(-1), float(b.reshape(-1)[0])


def start_service(config):
    cmd = [sys.executable, "-m", "covault", "serve", str(config), "--model", "fraud", "--json"]
    return {
        n: subprocess.Popen([*cmd, "--as", n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in SERVING
    }


def finish(procs):
    out = wait_parties(procs, 60)
    for n, (_, err, code) in out.items():
        assert code == 0, (n, err)
    return {n: json.loads(o.splitlines()[-1]) for n, (o, _, _) in out.items()}


def gateway_query(config, folder, rows):
    port, token_file = free_ports(1)[0], folder / "hospital_c.token"
    gw = [sys.executable, "-m", "covault", "gateway", str(config), "--as", "hospital_c", "--model", "fraud"]
    gateway = subprocess.Popen(
        [*gw, "--port", str(port), "--token-file", str(token_file)], stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}/predict"
    try:
        got = post(url, {"rows": rows.tolist()}, gateway_token(url, token_file))
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=30) == 0, gateway.stderr.read()
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
    return np.array(got["predictions"])


def test_a_trained_secret_model_is_served_to_the_cli_python_and_http(trained):
    job, config, run = trained
    result = json.loads(run.stdout)
    assert result["model"] is None and result["metrics"] is None and result["loss_curve"] is None
    assert sorted(result["model_store"]["files"]) == ["hospital_a", "hospital_b"]
    x = np.round(np.random.default_rng(7).normal(0, 1, (6, 4)), 6)
    rows = config.parent / "rows.csv"
    rows.write_text("x1,x2,x3,x4\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in x) + "\n")
    answers, queries = {}, []
    for way in ("cli", "python", "http"):  # the job file serves; the Client reads the consortium config
        procs = start_service(job)
        try:
            if way == "cli":
                predict = [sys.executable, "-m", "covault", "predict", str(job), "--as", "hospital_c"]
                out = subprocess.run(
                    [*predict, "--model", "fraud", "--input", str(rows), "--json"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert out.returncode == 0, out.stderr
                answers[way] = np.array(json.loads(out.stdout.splitlines()[-1])["predictions"])
            elif way == "python":
                with Client(config, as_="hospital_c", model="fraud") as c:
                    assert c.model.info["model_inputs"] == ["x1", "x2", "x3", "x4"]
                    answers[way] = c.predict(x)
            else:
                answers[way] = gateway_query(job, config.parent, x)
        finally:
            queries.append(finish(procs))
    assert all({r["queries"] for r in q.values()} == {1} for q in queries)
    for way in ("python", "http"):
        np.testing.assert_allclose(answers[way], answers["cli"], atol=SAME)
    np.testing.assert_allclose(answers["cli"], reference(job, x), atol=REFERENCE)
    assert np.ptp(answers["cli"]) > 0.15  # a trained model, not a constant
    w, b = opened_weights(job)
    np.testing.assert_allclose(answers["cli"], 1 / (1 + np.exp(-(x @ w + b))), atol=SAME)
    assert np.abs(w).min() > 1e-3
    for v in [*w, b]:  # no weight in the training output
        for text in (f"{v:.4f}", f"{v:.6g}", repr(float(v))[:8]):
            assert text not in run.stdout and text not in run.stderr
