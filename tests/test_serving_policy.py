"""The model owner's answer policy: set by ``covault model import --answer`` and the job key
``answer``, stored in the authenticated header, checked against the layers, and computed as
``forward(x, **forward_args(info))``: the client receives the class the plaintext model gives,
and a header whose policy was altered does not load."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import covault
from covault.deploy.config import load_config
from covault.jobs.errors import JobError
from covault.jobs.spec import load_job
from covault.serving import ModelStoreError, load_model, model_file
from covault.serving.formats import PlainModel
from covault.serving.importer import import_model
from covault.serving.keys import store_folders
from covault.serving.online import Query
from covault.serving.policy import answer_of, check_answer, forward_args, make_answer, threshold_of
from covault.serving.store import MAGIC
from tests.helpers import tiny_job, tls_consortium, wait_parties

LR = [{"op": "linear", "in": 4, "out": 1}, {"op": "sigmoid"}]
MLP3 = [
    {"op": "linear", "in": 4, "out": 5},
    {"op": "relu"},
    {"op": "linear", "in": 5, "out": 3},
    {"op": "softmax"},
]
MLP2 = [*MLP3[:2], {"op": "linear", "in": 5, "out": 2}, {"op": "softmax"}]
REG = [{"op": "linear", "in": 4, "out": 1}]
RNG = np.random.default_rng(4)
W, B = RNG.normal(0, 1, (4, 1)), RNG.normal(0, 0.2, 1)
X = RNG.normal(0, 1, (40, 4))


def test_policies_are_checked_against_the_layers():
    assert make_answer("scores", None, REG, "m") == {"output": "scores"}
    assert make_answer("decision", None, LR, "m") == {"output": "decision", "threshold": 0.5}
    assert make_answer("decision", 0.8, MLP2, "m") == {"output": "decision", "threshold": 0.8}
    assert make_answer("decision", None, MLP3, "m") == {"output": "decision"}  # the argmax
    for args, words in [
        (("decision", None, REG), "needs a classifier"),
        (("decision", 0.3, MLP3), "3 classes"),
        (("decision", 1.0, LR), r"outside the model's probabilities \(0, 1\)"),
        (("decision", 0.0, LR), "outside"),
        (("decision", float("nan"), LR), "finite number"),
        (("decision", True, LR), "finite number"),
        (("scores", 0.4, LR), "'decision' only"),
        (("logits", None, LR), "must be one of"),
    ]:
        with pytest.raises(ModelStoreError, match=words) as err:
            make_answer(*args, "fraud")
        assert "'fraud'" in str(err.value)


def test_the_policy_is_read_from_the_header_info_and_never_defaults_silently():
    assert answer_of({}) == "scores" and threshold_of({}) is None  # models stored before policies
    info = {"answer": {"output": "decision", "threshold": 0.7}}
    assert answer_of(info) == "decision" and threshold_of(info) == 0.7
    assert forward_args(info) == {"output": "decision", "threshold": 0.7}
    assert forward_args({"answer": {"output": "decision"}}) == {"output": "decision"}
    assert forward_args({"answer": {"output": "scores"}}) == {"output": "scores"}
    for bad in ("decision", {"output": "probabilities"}, {"output": "decision", "limit": 1},
                {"output": "scores", "threshold": 0.5}, {"output": "decision", "threshold": 7}):  # fmt: skip
        with pytest.raises(ModelStoreError, match="'fraud'"):
            answer_of({"answer": bad}, "fraud")
    with pytest.raises(ModelStoreError, match="needs a classifier"):
        check_answer({"answer": {"output": "decision"}}, REG, "m")


def _import_lr(tmp_path, answer, threshold, check=None):
    """The owner imports the logistic regression (W, B) with its policy; the compute parties
    load it and answer X as the policy says; ``check``: the policy the compute parties expect."""

    def program(s):
        mine = s.party == "owner"
        plain = PlainModel(LR, [W, B]) if mine else None
        kw = {"answer": answer, "threshold": threshold} if mine else (check or {})
        out = import_model(
            s, "owner", plain, tmp_path / "m", tmp_path / "k", name="lr" if mine else None, **kw
        )
        return out["answer"]

    res = covault.run(program, ["a", "b"], "2pc", data_parties=["owner", "client"])
    return res


def _query(tmp_path, name="lr"):
    def program(s):
        model = load_model(s, tmp_path / "m", name, key_dir=tmp_path / "k")
        fn = lambda x: model.forward(x, **forward_args(model.info, model.name))  # noqa: E731
        with Query(s, "client", model.n_features, fn) as query:
            return query(X if s.party == "client" else None), model.info

    return covault.run(program, ["a", "b"], "2pc", data_parties=["owner", "client"])


def test_an_imported_decision_policy_is_computed_by_the_compute_parties(tmp_path):
    res = _import_lr(tmp_path, "decision", 0.7, check={"answer": "decision", "threshold": 0.7})
    assert {json.dumps(r) for r in res.values()} == {json.dumps({"output": "decision", "threshold": 0.7})}
    out = _query(tmp_path)
    answer, info = out["client"]
    assert info["answer"] == {"output": "decision", "threshold": 0.7}
    p = 1 / (1 + np.exp(-(X @ W + B).reshape(-1)))
    far = np.abs(p - 0.7) > 0.01  # fixed-point error only matters at the boundary
    assert answer.dtype.kind == "i" and set(np.unique(answer)) <= {0, 1}
    np.testing.assert_array_equal(answer[far], (p[far] > 0.7).astype(int))
    assert 0 < answer.sum() < len(X)
    assert all(o[0] is None for n, o in out.items() if n != "client")  # only the client gets it


def test_a_policy_other_than_the_owners_or_an_altered_header_is_refused(tmp_path):
    with pytest.raises(ModelStoreError, match="the owner 'owner' sets"):
        _import_lr(tmp_path, "scores", None, check={"answer": "decision"})
    _import_lr(tmp_path, "decision", None)
    path = model_file(tmp_path / "m", "lr", "a")
    blob = path.read_bytes()
    n = len(MAGIC)
    size = int.from_bytes(blob[n : n + 4], "little")
    header = json.loads(blob[n + 4 : n + 4 + size])
    assert header["info"]["answer"] == {"output": "decision", "threshold": 0.5}
    header["info"]["answer"] = {"output": "scores"}  # a party that would hand out probabilities
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(blob[:n] + len(head).to_bytes(4, "little") + head + blob[n + 4 + size :])
    with pytest.raises(ModelStoreError, match="does not decrypt"):
        _query(tmp_path)


def test_the_job_key_answer(tmp_path):
    base = tiny_job(tmp_path)
    text = base.read_text()

    def job(extra, task_text=text):
        path = tmp_path / "j.toml"
        path.write_text(task_text.replace("seed = 2", f"seed = 2\n{extra}"))
        return load_job(path)

    store = 'reveal_model_to = []\nmodel_store = "risk"'
    assert job(store).answer == "scores"
    assert job(f'{store}\nanswer = "decision"').fingerprint() != job(store).fingerprint()
    assert job(f'{store}\nanswer = "scores"').fingerprint() == job(store).fingerprint()
    for extra, words in [
        ('answer = "decision"', "give model_store"),
        (f'{store}\nanswer = "probabilities"', "answer must be one of"),
        (f'{store}\nanswer = ["decision"]', "answer must be one of"),
    ]:
        with pytest.raises(JobError, match=words):
            job(extra)
    reg = text.replace('task = "logistic_regression"', 'task = "linear_regression"')
    with pytest.raises(JobError, match="needs a classifier"):
        job(f'{store}\nanswer = "decision"', reg)


@pytest.mark.processes
@pytest.mark.parametrize("protocol", ["rep3", "2pc"])
def test_a_trained_model_with_answer_decision_answers_the_class(tmp_path, protocol):
    path = tiny_job(tmp_path)
    compute = ["hospital_a", "hospital_b", "hospital_c"]
    text = path.read_text()
    if protocol == "2pc":
        compute = compute[:2]
        text = text.replace('protocol = "rep3"\n', f'protocol = "2pc"\ncompute = {json.dumps(compute)}\n')
    policy = 'reveal_model_to = []\nmodel_store = "risk"\nanswer = "decision"\nthreshold = 0.6'
    path.write_text(text.replace("seed = 2", f"seed = 2\n{policy}"))
    run = subprocess.run(
        [sys.executable, "-m", "covault", "train", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    spec = load_job(path)
    folder, keys = store_folders(spec.config, spec.model_dir)

    def program(s):  # the client: a data party of the service session (not one of the job)
        model = load_model(s, folder, "risk", key_dir=keys)
        fn = lambda x: model.forward(x, **forward_args(model.info, model.name))  # noqa: E731
        with Query(s, "client", model.n_features, fn) as query:
            answer = query(X if s.party == "client" else None)
        w, b = (t.reveal(to="client") for t in model.weights)  # opened only to check
        return answer, model.info, w, b

    res = covault.run(program, compute, protocol, data_parties=["client"])
    answer, info, w, b = res["client"]
    assert info["answer"] == {"output": "decision", "threshold": 0.6}
    p = 1 / (1 + np.exp(-(X @ w.reshape(-1) + float(b.reshape(-1)[0]))))
    far = np.abs(p - 0.6) > 0.01
    np.testing.assert_array_equal(answer[far], (p[far] > 0.6).astype(int))
    assert 0 < answer.sum() < len(X)


@pytest.mark.processes
def test_covault_model_import_answer_decision(tmp_path):
    pytest.importorskip("onnx")
    from tests.test_serving_import import B1, B2, COMPUTE, W1, W2, consortium, import_everywhere, onnx_mlp

    config = consortium(tmp_path)
    out = import_everywhere(config, onnx_mlp(tmp_path / "fraud.onnx"), "--answer", "decision")
    assert {json.dumps(r["answer"]) for r in out.values()} == {json.dumps({"output": "decision"})}
    usage = subprocess.run(
        [*COMMAND, str(config), "--owner", "owner", "--as", "a", "--threshold", "0.3"],
        capture_output=True,
        text=True,
    )
    assert usage.returncode == 2 and "--threshold applies to --answer decision only" in usage.stderr
    folder, keys = store_folders(load_config(config))

    def program(s):
        x = s.input(X6 if s.party == "a" else None, owner="a")
        model = load_model(s, folder, "fraud", key_dir=keys)
        return model.forward(x, **forward_args(model.info)).reveal()

    got = covault.run(program, list(COMPUTE), "rep3")["a"]
    np.testing.assert_array_equal(got, (np.maximum(X6 @ W1 + B1, 0) @ W2 + B2).argmax(axis=1))


COMMAND = [sys.executable, "-m", "covault", "model", "import"]
X6 = np.random.default_rng(6).normal(0, 1, (30, 6))


@pytest.mark.processes
def test_covault_serve_answers_the_decision_alone(tmp_path):
    from covault.serving import Client

    top = ['protocol = "2pc"', 'dealer = "dealer"', "timeout = 20", 'compute = ["a", "b"]']
    config = tls_consortium(tmp_path, top, ["a", "b", "dealer", "owner", "client"])
    folder, keys = store_folders(load_config(config))
    covault.run(
        lambda s: import_model(s, "owner", PlainModel(LR, [W, B]) if s.party == "owner" else None, folder,
                               keys, name="lr", answer="decision", threshold=0.7),
        ["a", "b"], "2pc", data_parties=["owner"],
    )  # fmt: skip
    cmd = [sys.executable, "-m", "covault", "serve", str(config), "--model", "lr", "--client", "client"]
    procs = {
        n: subprocess.Popen([*cmd, "--as", n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in ("a", "b", "dealer")
    }
    try:
        with Client(config, as_="client", model="lr") as client:
            assert client.model.info["answer"] == {"output": "decision", "threshold": 0.7}
            answer = client.predict(X)
    finally:
        for n, (_, err, code) in wait_parties(procs, 60).items():
            assert code == 0, (n, err)
    p = 1 / (1 + np.exp(-(X @ W + B).reshape(-1)))
    far = np.abs(p - 0.7) > 0.01
    assert set(np.unique(answer)) <= {0, 1} and 0 < answer.sum() < len(X)  # classes, not probabilities
    np.testing.assert_array_equal(np.asarray(answer).reshape(-1)[far], (p[far] > 0.7).astype(int))
