"""MLflow (a real tracking server), Weights & Biases (offline) and Hugging Face export of one
short breast-cancer job whose model is revealed to hospital_a only (covault.mlops)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("huggingface_hub")
pytest.importorskip("safetensors")

from tests.helpers import free_ports

RECEIVER, OTHERS = "hospital_a", ("hospital_b", "hospital_c")
MLFLOW_TABLE = '\n[mlflow]\nexperiment = "breast cancer"\nregistered_model_name = "breast-cancer"\n'


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """``mlflow server`` (SQLite backend, a local artifact root, a free loopback port), started
    before the job trains so that both proceed together; stopped after the module."""
    where = tmp_path_factory.mktemp("mlflow-server")
    port = free_ports(1)[0]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{where / 'mlflow.db'}",
        "--default-artifact-root", str(where / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    log = open(where / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    yield proc, f"http://127.0.0.1:{port}", where / "server.log"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(job, result)`` of a 2-epoch rep3 job revealed to hospital_a, with the plaintext comparison."""
    from covault.jobs.demo import make_breast_cancer_job
    from covault.jobs.local import run_local
    from covault.jobs.spec import load_job

    path = make_breast_cancer_job(tmp_path_factory.mktemp("job"), 3, "rep3", epochs=2)
    text = path.read_text()
    path.write_text(f'reveal_model_to = ["{RECEIVER}"]\n' + text + MLFLOW_TABLE)
    job = load_job(path)
    result = run_local(job, transport="local", compare_plaintext=True, progress=False)
    kept = path.parent / "trained.onnx"  # covault train in a test below rewrites model_out
    kept.write_bytes(Path(result["model_out"]).read_bytes())
    return job, {**result, "model_out": str(kept)}


@pytest.fixture(scope="module")
def mlflow_uri(server_process, trained):
    proc, uri, log = server_process
    deadline = time.monotonic() + 240
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return uri
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server not up within 240 s: {log.read_text()[-2000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def logged(mlflow_uri, trained):
    from covault.mlops.mlflow_log import log_to_mlflow

    job, result = trained
    return log_to_mlflow(job, result, tracking_uri=mlflow_uri)


def _test_rows(job, result) -> np.ndarray:
    from covault.jobs.connectors import load_table

    columns, values = load_table(job.test[RECEIVER])
    return values[:, [columns.index(f) for f in result["features"]]]


@pytest.mark.slow
def test_mlflow_runs_hold_what_each_party_learnt(mlflow_uri, trained, logged):
    from mlflow import MlflowClient

    job, result = trained
    client = MlflowClient(mlflow_uri)
    assert set(logged) == {RECEIVER, *OTHERS}
    run = client.get_run(logged[RECEIVER])
    assert client.get_experiment(run.info.experiment_id).name == "breast cancer"
    assert run.data.params["model.epochs"] == "2" and run.data.params["train_rows"] == str(
        result["train_rows"]
    )
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == list(enumerate(result["loss_curve"], start=1))
    for name, value in result["metrics"].items():
        assert run.data.metrics[f"test_{name}"] == pytest.approx(value)
        assert run.data.metrics[f"plaintext_test_{name}"] == pytest.approx(
            result["plaintext"]["metrics"][name]
        )
    tags = run.data.tags
    assert tags["covault.protocol"] == "rep3" and tags["covault.job_fingerprint"] == job.fingerprint()
    assert json.loads(tags["covault.reveal_model_to"]) == [RECEIVER]
    assert json.loads(tags["covault.parties"])[RECEIVER] == ["compute", "data", "receiver"]
    assert "honest majority" in tags["covault.trust"] and tags["covault.differential_privacy"] == "no"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.html"}
    for other in OTHERS:  # nothing but the public facts and its own traffic
        o = client.get_run(logged[other])
        assert o.data.tags["covault.roles"] == "compute,data"
        assert not any(k.startswith(("test_", "plaintext_")) or k == "loss" for k in o.data.metrics)
        assert o.data.metrics["bytes_sent"] == result["bytes_sent"][other]
        assert client.list_artifacts(o.info.run_id) == []
        assert (
            client.search_logged_models(
                [run.info.experiment_id], filter_string=f"source_run_id = '{o.info.run_id}'"
            )
            == []
        )
    versions = client.search_model_versions("name = 'breast-cancer'")
    assert [v.run_id for v in versions if v.version == "1"] == [logged[RECEIVER]]  # the receiver's only
    assert not {v.run_id for v in versions} & {logged[p] for p in OTHERS}


@pytest.mark.slow
def test_mlflow_onnx_model_predicts_like_covault(mlflow_uri, trained, logged):
    import mlflow
    import mlflow.onnx

    from covault.jobs.onnx_export import run_onnx

    job, result = trained
    mlflow.set_tracking_uri(mlflow_uri)
    proto = mlflow.onnx.load_model(f"runs:/{logged[RECEIVER]}/model")
    x = _test_rows(job, result)
    got = run_onnx(proto, x).reshape(-1)
    np.testing.assert_array_equal(got, run_onnx(result["model_out"], x).reshape(-1))
    pyfunc = mlflow.pyfunc.load_model("models:/breast-cancer/1")  # the registered version
    assert pyfunc.metadata.signature is not None
    names = json.loads({m.key: m.value for m in proto.metadata_props}["covault.inputs"])
    out = pyfunc.predict({names[c]: x[:, [j]].astype(np.float32) for j, c in enumerate(result["features"])})
    np.testing.assert_array_equal(np.asarray(out["probability"]).reshape(-1), got)


@pytest.mark.slow
def test_covault_train_mlflow_keeps_the_json_line_last(mlflow_uri, trained, logged, capsys):
    from mlflow import MlflowClient

    from covault.cli import main

    job, result = trained
    assert main(["train", str(job.path), "--transport", "local", "--json", "--mlflow", mlflow_uri]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["reveal_model_to"] == [RECEIVER]
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("breast cancer")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`covault.party` = '{RECEIVER}'")
    (new,) = [r for r in runs if r.info.run_id != logged[RECEIVER]]
    assert new.data.tags["covault.job_fingerprint"] == job.fingerprint()
    assert [m.step for m in client.get_metric_history(new.info.run_id, "loss")] == [1, 2]
    versions = client.search_model_versions("name = 'breast-cancer'")
    assert {v.run_id for v in versions} == {logged[RECEIVER], new.info.run_id}


@pytest.mark.slow
def test_wandb_offline_runs_hold_the_metrics(trained, tmp_path):
    from covault.mlops.wandb_log import log_to_wandb

    job, result = trained
    runs = log_to_wandb(job, result, tmp_path)
    assert set(runs) == {RECEIVER, *OTHERS} and all(p.parent == tmp_path / "wandb" for p in runs.values())
    seen = {party: _wandb_records(folder) for party, folder in runs.items()}
    losses, summary, config, artifacts = seen[RECEIVER]
    assert losses == result["loss_curve"]
    for name, value in result["metrics"].items():
        assert summary[f"test_{name}"] == pytest.approx(value)
    assert config["covault.job_fingerprint"] == job.fingerprint() and config["model.epochs"] == 2
    assert artifacts == [sorted(["model.onnx", "report.html"])]
    for other in OTHERS:
        losses, summary, config, artifacts = seen[other]
        assert losses == [] and artifacts == [] and not any(k.startswith("test_") for k in summary)
        assert summary["bytes_sent"] == result["bytes_sent"][other]


def _wandb_records(folder: Path):
    """``(losses, summary, config, artifact file lists)`` read from the run's ``.wandb`` file
    (a LevelDB-style log of W&B's protobuf records, 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, records = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            records.append(rec)
            buf = b""
    losses, summary, config, artifacts = [], {}, {}, []
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "history":
            items = {_key(i): json.loads(i.value_json) for i in r.history.item}
            if "loss" in items:
                losses.append(items["loss"])
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in r.summary.update if _key(i)})
        elif kind == "run":
            config.update({_key(i): json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "artifact":
            artifacts.append(sorted(m.path for m in r.artifact.manifest.contents))
    config = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in config.items()}
    return losses, summary, config, artifacts


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_export_hf_folder_loads_and_its_card_parses(trained, tmp_path):
    from huggingface_hub import ModelCard
    from safetensors.numpy import load_file

    from covault.cli import main
    from covault.jobs.onnx_export import run_onnx
    from covault.jobs.report import json_safe

    job, result = trained
    (tmp_path / "result.json").write_text(json.dumps(json_safe(result)) + "\n")
    assert main(["export-hf", str(tmp_path), "--out", str(tmp_path / "hf")]) == 0
    hf = tmp_path / "hf"
    weights = load_file(str(hf / "model.safetensors"))
    np.testing.assert_array_equal(weights["coef"], np.asarray(result["model"]["coef"]))
    assert weights["intercept"].tolist() == [result["model"]["intercept"]]
    config = json.loads((hf / "config.json").read_text())
    assert config["features"] == result["features"] and config["weights"]["coef"] == [len(result["features"])]
    x = _test_rows(job, result)
    np.testing.assert_array_equal(run_onnx(hf / "model.onnx", x), run_onnx(result["model_out"], x))
    card = ModelCard.load(hf / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "covault" and meta["pipeline_tag"] == "tabular-classification"
    info = meta["covault"]
    assert info["protocol"] == "rep3" and "honest majority" in info["threat_model"]
    assert info["reveal_model_to"] == [RECEIVER] and info["differential_privacy"] is None
    assert info["data_parties"] == {
        p: {"train_rows": i["train_rows"], "test_rows": i["test_rows"]} for p, i in result["parties"].items()
    }
    accuracy = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert accuracy[0].metric_value == pytest.approx(result["metrics"]["accuracy"])
    assert all(p in card.text for p in result["parties"]) and "No differential privacy" in card.text


def test_epsilon_is_a_tag_where_dp_was_used(trained):
    from covault.mlops.content import privacy_tags

    job, result = trained
    tags = privacy_tags(job, {**result, "epsilon_spent": 1.25, "delta": 1e-5}, RECEIVER)
    assert tags["covault.epsilon"] == "1.25" and tags["covault.delta"] == "1e-05"
    assert "covault.epsilon" not in privacy_tags(job, result, RECEIVER)


def test_export_hf_refuses_a_result_without_a_model(trained, tmp_path):
    from covault.jobs.errors import JobError
    from covault.mlops.hf_export import export_hf

    _, result = trained
    (tmp_path / "result.json").write_text(json.dumps({**result, "model": None}, default=str))
    with pytest.raises(JobError, match="holds no model"):
        export_hf(tmp_path)
    with pytest.raises(JobError, match="not found"):
        export_hf(tmp_path / "missing")


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ("[mlflow]\nbogus = 1\n", "mlflow.bogus: unknown key"),
        ('[mlflow]\nexperiment = ""\n', "mlflow.experiment"),
    ],
)
def test_mlflow_table_is_validated(tmp_path, table, match):
    from covault.jobs.demo import make_breast_cancer_job
    from covault.jobs.errors import JobError
    from covault.jobs.spec import load_job

    path = make_breast_cancer_job(tmp_path, 3, "rep3", epochs=1)
    path.write_text(path.read_text() + "\n" + table)
    with pytest.raises(JobError, match=match):
        load_job(path)


@pytest.mark.slow
@pytest.mark.processes
def test_covault_party_logs_its_own_view_at_each_host(tmp_path):
    """Three ``covault party JOB --as NAME --mlflow DIR`` processes (as on three hosts), each
    with its own MLflow store: one run each; the receiver's holds the loss, the metrics and the
    ONNX model, the others' the public parameters, tags and their own traffic only."""
    from mlflow import MlflowClient

    from tests.helpers import HOSPITALS, approved_tiny_job, run_parties

    path = approved_tiny_job(tmp_path)
    stores = {n: tmp_path / f"mlruns-{n}" for n in HOSPITALS}
    done = run_parties(path, {n: ["--quiet", "--json", "--mlflow", str(stores[n])] for n in HOSPITALS})
    for n, (_, err, code) in done.items():
        assert code == 0, f"{n}: {err}"
        assert f"covault party {n}: mlflow: 1 runs ({n})" in err
    for n in HOSPITALS:
        result = json.loads(done[n][0].strip().splitlines()[-1])
        client = MlflowClient(f"sqlite:///{stores[n] / 'mlflow.db'}")
        (exp,) = [e for e in client.search_experiments() if e.name != "Default"]
        (run,) = client.search_runs([exp.experiment_id])
        assert run.info.run_name == f"job @ {n}" and run.data.tags["covault.party"] == n
        assert run.data.metrics["bytes_sent"] == result["stats"]["bytes_sent"]
        assert run.data.params["model.epochs"] == "2"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        if n == "hospital_c":
            assert run.data.metrics["test_accuracy"] == pytest.approx(result["metrics"]["accuracy"])
            history = client.get_metric_history(run.info.run_id, "loss")
            assert [m.value for m in history] == pytest.approx(result["loss_curve"])
            assert "report.html" in artifacts
            assert client.search_logged_models([exp.experiment_id]) != []
        else:
            assert not any(k.startswith(("test_", "plaintext_")) or k == "loss" for k in run.data.metrics)
            assert artifacts == set() and client.search_logged_models([exp.experiment_id]) == []
