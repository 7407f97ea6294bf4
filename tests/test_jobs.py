"""Jobs: joint training across organisations from one job file (covault.jobs)."""

from __future__ import annotations

import csv
import json
import re
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import covault
from covault import jobs
from covault.errors import TrainingDivergedWarning
from covault.jobs import DataError, JobError, load_job, run_local
from covault.jobs import program as job_program_module
from covault.jobs.connectors import load_table
from covault.jobs.data import split_rows
from covault.jobs.demo import make_breast_cancer_job
from covault.jobs.model import model_from_dict, predict_scores
from covault.jobs.onnx_export import build_onnx, run_onnx
from covault.jobs.plaintext import pooled_rows, raw_held_out, roc_auc
from covault.jobs.schema import agree
from covault.ml import mlp
from tests.helpers import HOSPITALS, tiny_job, write_csv, write_job

pytest.importorskip("sklearn")


# -- helpers -----------------------------------------------------------------------------------------
def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def rewrite_csv(path: Path, fn) -> None:
    cols, rows = read_csv(path)
    cols, rows = fn(cols, rows)
    write_csv(path, cols, rows)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """The breast-cancer demo job (3 hospitals, rep3), written once."""
    d = tmp_path_factory.mktemp("demo")
    make_breast_cancer_job(d)
    return d


@pytest.fixture
def bc_job(tmp_path, demo_dir):
    """A fresh copy of the demo job and its data, to modify per test."""
    for f in demo_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path / "job.toml"


@pytest.fixture
def no_computation(monkeypatch):
    """Fail loudly if a job gets as far as secret-sharing its rows."""

    def boom(*a, **k):
        raise AssertionError("secret computation started before the error was detected")

    monkeypatch.setattr(job_program_module, "_share_rows", boom)


def run_quiet(path, **kw):
    kw.setdefault("transport", "local")
    return run_local(path, progress=False, **kw)


# -- end to end --------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["rep3", "2pc"])
def test_breast_cancer_logistic_regression_matches_plaintext(tmp_path, protocol):
    path = make_breast_cancer_job(tmp_path, protocol=protocol)
    res = run_quiet(path, compare_plaintext=True)
    plain = res["plaintext"]
    assert res["train_rows"] == plain["train_rows"] and res["test_rows"] == plain["test_rows"]
    assert res["train_rows"] + res["test_rows"] == 569
    acc, ref = res["metrics"]["accuracy"], plain["metrics"]["accuracy"]
    assert acc > 0.93
    assert abs(acc - ref) <= 0.01 + 1e-9, (acc, ref)
    assert abs(res["metrics"]["auc"] - plain["metrics"]["auc"]) < 0.01
    assert plain["sklearn"]["metrics"]["accuracy"] > 0.93
    # loss curve: one value per epoch, falling, close to the plaintext reference's
    curve, pcurve = np.array(res["loss_curve"]), np.array(plain["loss_curve"])
    assert curve.shape == pcurve.shape == (10,)
    assert curve[-1] < curve[0]
    # the oblivious shuffle orders batches randomly: compare once training settles
    np.testing.assert_allclose(curve[-3:], pcurve[-3:], atol=0.03)
    # traffic per party, roles
    compute = ["hospital_a", "hospital_b"] if protocol == "2pc" else list(HOSPITALS)
    assert res["compute"] == compute
    for p in compute:
        assert res["bytes_sent"][p] > 0 and res["rounds"][p] > 100
    if protocol == "2pc":
        assert res["parties"]["dealer"]["roles"] == ["dealer"]
        assert res["parties"]["hospital_c"]["roles"] == ["data", "receiver"]  # a data party only
        assert res["bytes_sent"]["hospital_c"] < 100_000  # its shares and its status, nothing else
    # the model was written as ONNX and predicts what the revealed model predicts
    job = load_job(path)
    assert res["model_out"] == str(job.model_out) and job.model_out.is_file()
    x_tr, _, x_te, _ = pooled_rows(job)
    public = model_from_dict(job, res["model"])
    np.testing.assert_allclose(
        run_onnx(job.model_out, raw_held_out(job))[:, 0], predict_scores(job, public, x_te), atol=1e-5
    )
    text = jobs.format_table(res)
    assert "secure (MPC)" in text and "plaintext" in text and "hospital_a" in text
    out = jobs.write_html_report(res, tmp_path / "report.html").read_text()
    assert "<svg" in out and "<polyline" in out and "hospital_b" in out
    assert "src=" not in out and "href=" not in out  # self-contained
    json.dumps(res)  # the result is JSON-ready


@pytest.mark.processes
def test_tcp_run_matches_local(tmp_path):
    """tcp (one process per party, TLS) on a rep3 job; the result agrees with a local run."""
    path = make_breast_cancer_job(tmp_path, epochs=2, batch_size=64)
    tcp = run_quiet(path, transport="tcp")
    local = run_quiet(path)
    assert tcp["transport"] == "tcp"
    # fresh shares and a fresh oblivious shuffle per run: the two models differ slightly
    # (a few held-out rows of ~114 after 2 epochs), both must be good
    assert min(tcp["metrics"]["accuracy"], local["metrics"]["accuracy"]) >= 0.9
    assert abs(tcp["metrics"]["accuracy"] - local["metrics"]["accuracy"]) <= 0.05
    assert len(tcp["loss_curve"]) == 2
    assert set(tcp["bytes_sent"]) == set(HOSPITALS)


def test_on_a_shared_host_the_first_receiver_alone_writes_the_model(tmp_path):
    """Receivers on one host would all write the same file (and each import onnx): the first
    receiver of ``reveal_model_to`` writes it; on separate hosts every receiver does."""
    import covault

    path = make_breast_cancer_job(tmp_path, epochs=1, batch_size=64)
    text = path.read_text().replace("seed = 0", 'seed = 0\nreveal_model_to = ["hospital_b", "hospital_a"]')
    path.write_text(text)
    job = load_job(path)
    for shared, writers in ((True, {"hospital_b"}), (False, {"hospital_a", "hospital_b"})):
        job.model_out.unlink(missing_ok=True)
        out = covault.run(job_program_module.job_program(job, shared_host=shared), list(job.compute), "rep3")
        assert {p for p, r in out.items() if r["model_path"] == str(job.model_out)} == writers
        assert {p for p, r in out.items() if "export" in r["phases"]} == writers
        steps = list(out["hospital_a"]["phases"])  # held-out features are shared after training
        assert steps[steps.index("input") :][:4] == ["input", "class_check", "train", "held_out"]
        assert job.model_out.is_file()
        assert out["hospital_a"]["model"] == out["hospital_b"]["model"] is not None


def test_five_banks_three_compute_reveal_to_one(tmp_path):
    """Data owners outside the compute set input rows and receive the model; others get nothing."""
    names = (*HOSPITALS, "hospital_d", "hospital_e")
    path = make_breast_cancer_job(tmp_path, parties=names, epochs=2, batch_size=64)
    text = path.read_text().replace("seed = 0", 'seed = 0\nreveal_model_to = ["hospital_e"]')
    path.write_text(text)
    job = load_job(path)
    assert job.data_only == ("hospital_d", "hospital_e")
    res = job_program_module.job_program(job)
    import covault

    out = covault.run(res, list(job.compute), "rep3", data_parties=list(job.data_only))
    assert out["hospital_e"]["metrics"]["accuracy"] > 0.85
    assert out["hospital_e"]["model_path"] == str(job.model_out)
    for p in ("hospital_a", "hospital_b", "hospital_c", "hospital_d"):
        assert out[p]["metrics"] is None and out[p]["model"] is None and out[p]["loss_curve"] is None
    assert out["hospital_d"]["roles"] == ["data"]
    assert sum(out["hospital_d"]["schema"]["rows"]["hospital_d"].values()) > 0


@pytest.mark.parametrize("protocol", ["2pc", "rep3"])
def test_linear_regression_job(tmp_path, protocol):
    """2pc: the default dealer party; rep3: a third compute party that owns no data."""
    gen = np.random.default_rng(3)
    w = np.array([1.5, -2.0, 0.5, 3.0])
    cols = ["x1", "x2", "x3", "x4", "price"]
    parties = {}
    for i, name in enumerate(("seller_a", "seller_b")):
        x = gen.normal(0, 2, (150 + 50 * i, 4))
        y = x @ w + 10 + gen.normal(0, 1.0, len(x))
        write_csv(tmp_path / f"{name}.csv", cols, np.column_stack([x, y]).round(5))
        parties[name] = {"data": f"{name}.csv"}
    if protocol == "rep3":
        parties["cloud"] = {}
    top = {
        "protocol": protocol,
        "task": "linear_regression",
        "label": "price",
        "test_fraction": 0.25,
        "seed": 4,
    }
    path = write_job(tmp_path / "job.toml", top, {"epochs": 5, "batch_size": 32}, parties)
    job = load_job(path)
    assert job.compute == (
        ("seller_a", "seller_b") if protocol == "2pc" else ("seller_a", "seller_b", "cloud")
    )
    assert job.dealer == ("dealer" if protocol == "2pc" else None)
    res = run_quiet(path, compare_plaintext=True)
    r2, ref = res["metrics"]["r2"], res["plaintext"]["metrics"]["r2"]
    assert r2 > 0.9 and abs(r2 - ref) < 0.01
    # the oblivious shuffle differs from the reference's order: SGD noise of a few percent (the
    # noise std is 1, a wrong model's rmse would be several times larger)
    assert abs(res["metrics"]["rmse"] - res["plaintext"]["metrics"]["rmse"]) < 0.08
    assert res["plaintext"]["sklearn"]["metrics"]["r2"] > 0.9
    assert res["test_rows"] == round(0.25 * 150) + round(0.25 * 200)
    np.testing.assert_allclose(res["model"]["coef"], w, atol=0.25)
    # the batch order differs (the oblivious shuffle is random), so early epochs differ freely;
    # the curves meet once training settles
    assert len(res["loss_curve"]) == len(res["plaintext"]["loss_curve"]) == 5
    assert abs(res["loss_curve"][-1] - res["plaintext"]["loss_curve"][-1]) < 0.01
    if protocol == "rep3":
        assert res["parties"]["cloud"]["roles"] == ["compute"] and res["bytes_sent"]["cloud"] > 0
    assert "R²" in jobs.format_table(res)


def test_named_dealer(tmp_path, demo_dir):
    for f in demo_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    text = (
        (tmp_path / "job.toml")
        .read_text()
        .replace('protocol = "rep3"', 'protocol = "2pc"\ndealer = "notary"')
    )
    text = text.replace('"hospital_b", "hospital_c"]', '"hospital_b"]').replace("epochs = 10", "epochs = 1")
    (tmp_path / "job.toml").write_text(text + '[parties."notary"]\n')
    res = run_quiet(tmp_path / "job.toml")
    assert res["dealer"] == "notary" and res["parties"]["notary"]["roles"] == ["dealer"]
    assert "dealer" not in res["parties"] and res["bytes_sent"]["notary"] > 0
    assert res["metrics"]["accuracy"] > 0.85


def test_mlp_job(tmp_path):
    path = make_breast_cancer_job(tmp_path, epochs=3, batch_size=64)
    text = path.read_text().replace('task = "logistic_regression"', 'task = "mlp"')
    text = text.replace("learning_rate = 0.1", "learning_rate = 0.05\nhidden = [8]")
    path.write_text(text)
    res = run_quiet(path, compare_plaintext=True)
    acc, ref = res["metrics"]["accuracy"], res["plaintext"]["metrics"]["accuracy"]
    assert acc > 0.9 and abs(acc - ref) <= 0.03, (acc, ref)
    assert res["metrics"]["auc"] > 0.95
    assert abs(res["loss_curve"][-1] - res["plaintext"]["loss_curve"][-1]) < 0.05
    assert [np.shape(w) for w in res["model"]["coefs"]] == [(30, 8), (8, 2)]
    job = load_job(path)
    _, _, x_te, _ = pooled_rows(job)
    public = model_from_dict(job, res["model"])
    np.testing.assert_allclose(
        run_onnx(job.model_out, raw_held_out(job)), predict_scores(job, public, x_te), atol=1e-5
    )


def test_multiclass_mlp_job(tmp_path):
    gen = np.random.default_rng(2)
    mix = np.array([[2, 0, -1], [0, 2, -1], [1, 1, 0.0]])
    for name in ("a", "b"):
        x = gen.normal(0, 1, (300, 3))  # 120 held-out rows: one row is 0.8 pp of accuracy
        y = np.argmax(x @ mix, axis=1)
        write_csv(tmp_path / f"{name}.csv", ["u", "v", "w", "cls"], [[*r.round(4), t] for r, t in zip(x, y)])
    top = {"protocol": "2pc", "task": "mlp", "label": "cls", "model_out": "m.onnx"}
    model = {"n_classes": 3, "hidden": [8], "epochs": 4, "batch_size": 32}
    path = write_job(tmp_path / "job.toml", top, model, {"a": {"data": "a.csv"}, "b": {"data": "b.csv"}})
    res = run_quiet(path, compare_plaintext=True)
    assert "auc" not in res["metrics"] and res["metrics"]["accuracy"] > 0.75
    assert abs(res["metrics"]["accuracy"] - res["plaintext"]["metrics"]["accuracy"]) <= 0.05
    assert run_onnx(tmp_path / "m.onnx", np.zeros((2, 3))).shape == (2, 3)
    assert "AUC" not in jobs.format_table(res)
    with pytest.raises(DataError, match=r"label column 'cls', row 1: class labels must be 0 or 1"):
        run_quiet(
            write_job(
                tmp_path / "job.toml",
                top,
                {**model, "n_classes": 2},
                {"a": {"data": "a.csv"}, "b": {"data": "b.csv"}},
            )
        )


# -- ONNX --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["logistic_regression", "linear_regression", "mlp"])
@pytest.mark.parametrize("runtime", ["onnxruntime", "reference"])
def test_onnx_round_trip(tmp_path, monkeypatch, task, runtime):
    pytest.importorskip("onnx")
    if runtime == "reference":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # fall back to onnx.reference
    else:
        pytest.importorskip("onnxruntime")
    gen = np.random.default_rng(0)
    x = gen.normal(0, 3, (40, 5))
    if task == "mlp":
        weights = {
            "coefs": [gen.normal(0, 1, (5, 7)).tolist(), gen.normal(0, 1, (7, 3)).tolist()],
            "intercepts": [gen.normal(0, 1, 7).tolist(), gen.normal(0, 1, 3).tolist()],
        }
        model = {"n_classes": 3, "hidden": [7]}
    else:
        weights = {"coef": gen.normal(0, 1, 5).tolist(), "intercept": 0.7}
        model = {}
    parties = {"a": {"data": "a.csv"}, "b": {}, "c": {}}
    job = load_job(write_job(tmp_path / "j.toml", {"task": task, "label": "y"}, model, parties))
    proto = build_onnx(task, weights, [f"f{i}" for i in range(5)], "y")
    assert {p.key: p.value for p in proto.metadata_props}["covault.features"] == json.dumps(
        [f"f{i}" for i in range(5)]
    )
    want = predict_scores(job, model_from_dict(job, weights), x)
    got = run_onnx(proto, x)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)


def test_missing_onnx_is_reported_by_the_receiver_before_computation(bc_job, monkeypatch, no_computation):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(JobError, match=r"party 'hospital_[abc]': .*pip install 'covault\[onnx\]'"):
        run_quiet(bc_job)


# -- limits: memory, learning rate, divergence -------------------------------------------------------
def as_mlp(path: Path, hidden: int) -> Path:
    """The demo job at ``path`` turned into an MLP job with one hidden layer of ``hidden`` units."""
    text = path.read_text().replace('task = "logistic_regression"', 'task = "mlp"')
    path.write_text(text.replace("learning_rate = 0.1", f"learning_rate = 0.1\nhidden = [{hidden}]"))
    return path


def test_mlp_job_larger_than_memory_is_refused_before_computation(bc_job, no_computation):
    with pytest.raises(
        JobError,
        match=r"^the job needs about \d+ GB of memory per compute party \(hidden layer of 100000000 units, "
        r"30 features, 398 rows at once\), \d+ GB for the 3 parties holding shares on this host "
        r"\(hospital_a, hospital_b, hospital_c\); this host has [\d.]+ [GM]B available",
    ):
        run_quiet(as_mlp(bc_job, 100_000_000))


def test_vertical_mlp_job_larger_than_memory_is_refused_before_the_intersection(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the intersection started before the memory check")

    monkeypatch.setattr(job_program_module, "align", boom)
    path = as_mlp(make_breast_cancer_job(tmp_path, vertical=True), 100_000_000)
    with pytest.raises(
        JobError,
        match=r"^the job needs about \d+ GB of memory per compute party \(hidden layer of 100000000 units, "
        r"30 features, 512 rows at once\), \d+ GB for the 3 parties holding shares on this host",
    ):
        run_quiet(path)


@pytest.mark.parametrize("protocol", ["rep3", "2pc"])
def test_memory_check_names_the_short_host_at_every_party(bc_job, monkeypatch, no_computation, protocol):
    """Parties on separate hosts: each announces its memory; every party refuses alike."""
    short = "hospital_b" if protocol == "rep3" else "dealer"
    if protocol == "2pc":
        bc_job.write_text(bc_job.read_text().replace('protocol = "rep3"', 'protocol = "2pc"').replace(
            'compute = ["hospital_a", "hospital_b", "hospital_c"]', 'compute = ["hospital_a", "hospital_b"]'
        ))  # fmt: skip

    def memory():
        return int(1e8) if threading.current_thread().name == f"covault-{short}" else int(1e12)

    monkeypatch.setattr(mlp, "available_memory", memory)
    job = load_job(as_mlp(bc_job, 5000))
    program = jobs.job_program(job)

    def refused(session):
        try:
            return program(session)
        except JobError as exc:
            return str(exc)

    got = covault.run(refused, list(job.compute), job.protocol, data_parties=list(job.data_only))
    assert len(got) == (3 if protocol == "rep3" else 4) and len(set(got.values())) == 1, got
    assert re.fullmatch(
        r"the job needs about 6\d\d MB of memory per compute party \(hidden layer of 5000 units, 30 "
        rf"features, 398 rows at once\); the host of party '{short}' has 100 MB available",
        got["hospital_a"],
    )


def test_diverging_training_warns_and_says_so_in_the_result(tmp_path):
    path = tiny_job(tmp_path, "linear_regression")
    path.write_text(path.read_text().replace("epochs = 2", "epochs = 2\nlearning_rate = 10"))
    with pytest.warns(TrainingDivergedWarning) as caught:
        res = run_quiet(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert re.fullmatch(
        r"training diverged: the loss after epoch [12] is .*; lower learning_rate \(now 10\)", message
    )
    assert res["diverged"] is True
    assert res["warnings"] == [{"type": "TrainingDivergedWarning", "message": message}]
    path.write_text(path.read_text().replace("learning_rate = 10", "learning_rate = 0.05"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingDivergedWarning)
        res = run_quiet(path)
    assert res["diverged"] is False and res["warnings"] == []


def test_failing_sklearn_baseline_is_reported_not_raised(bc_job, monkeypatch):
    from sklearn.neural_network import MLPClassifier

    from covault.jobs.plaintext import sklearn_baseline

    def diverge(self, *a, **k):
        raise ValueError("Solver produced non-finite parameter weights.")

    monkeypatch.setattr(MLPClassifier, "fit", diverge)
    job = load_job(as_mlp(bc_job, 8))
    got = sklearn_baseline(job, *pooled_rows(job))
    assert got == {
        "model": "MLPClassifier((8,))",
        "metrics": {},
        "seconds": None,
        "error": "Solver produced non-finite parameter weights.",
    }
    result = {"task": "mlp", "label": "y", "train_rows": 1, "test_rows": 1, "features": ["a"], "metrics": {}}
    result |= {"plaintext": {"metrics": {}, "sklearn": got}, "parties": {}, "reveal_model_to": ["a"]}
    result |= {"seconds": 1.0, "wall_seconds": 1.0, "protocol": "rep3"}
    assert "MLPClassifier((8,)) on standardised features failed: Solver produced" in jobs.format_table(result)


# -- bad input: clear errors before any secret computation -------------------------------------------
def test_mismatched_columns(bc_job, no_computation):
    rewrite_csv(bc_job.parent / "hospital_b.csv", lambda c, r: (c[1:], [x[1:] for x in r]))
    with pytest.raises(
        JobError, match=r"party 'hospital_b' has no column 'mean radius' \(party 'hospital_a' has it\)"
    ):
        run_quiet(bc_job)
    rewrite_csv(bc_job.parent / "hospital_b_test.csv", lambda c, r: (c[1:], [x[1:] for x in r]))
    with pytest.raises(
        JobError, match=r"party 'hospital_b' has no column 'mean radius' \(party 'hospital_a' has it\)"
    ):
        run_quiet(bc_job)


def test_test_file_without_a_column_of_the_data_file(bc_job, no_computation):
    rewrite_csv(bc_job.parent / "hospital_b_test.csv", lambda c, r: (c[1:], [x[1:] for x in r]))
    with pytest.raises(
        DataError,
        match=r"party 'hospital_b': data file .*hospital_b_test.csv has no column 'mean radius'",
    ):
        run_quiet(bc_job)


def test_columns_in_another_order(bc_job):
    """Columns are matched by name: another order at one party gives the same job."""
    want = run_quiet(bc_job)["metrics"]

    def swap(c, r):
        return [c[1], c[0], *c[2:]], [[x[1], x[0], *x[2:]] for x in r]

    rewrite_csv(bc_job.parent / "hospital_c.csv", swap)
    rewrite_csv(bc_job.parent / "hospital_c_test.csv", swap)
    got = run_quiet(bc_job)
    assert got["features"][:2] == ["mean radius", "mean texture"]
    assert got["metrics"]["accuracy"] == pytest.approx(want["accuracy"], abs=0.02)


def test_missing_label_column(bc_job, no_computation):
    for f in ("hospital_c.csv", "hospital_c_test.csv"):
        rewrite_csv(bc_job.parent / f, lambda c, r: (c[:-1], [x[:-1] for x in r]))
    with pytest.raises(
        DataError, match=r"party 'hospital_c': label column 'malignant' \(job key label\) is not in data file"
    ):
        run_quiet(bc_job)


def test_non_numeric_column(bc_job, no_computation):
    def spoil(c, r):
        r[2][1] = "high"
        return c, r

    rewrite_csv(bc_job.parent / "hospital_b.csv", spoil)
    with pytest.raises(
        DataError, match=r"party 'hospital_b': .*column 'mean texture' holds text \(row 3 is not a number\)"
    ) as e:
        run_quiet(bc_job)
    assert "high" not in str(e.value)  # errors never echo values


@pytest.mark.parametrize(
    "bad,what", [("", "missing value"), ("nan", "missing value"), ("inf", "infinite value")]
)
def test_missing_or_nan_value(bc_job, no_computation, bad, what):
    def spoil(c, r):
        r[4][2] = bad
        return c, r

    rewrite_csv(bc_job.parent / "hospital_a_test.csv", spoil)
    with pytest.raises(DataError, match=rf"party 'hospital_a': .*column 'mean perimeter', row 5: {what}"):
        run_quiet(bc_job)


def test_missing_data_file(bc_job, no_computation):
    (bc_job.parent / "hospital_b.csv").unlink()
    with pytest.raises(DataError, match=r"party 'hospital_b': data file .*hospital_b.csv not found"):
        run_quiet(bc_job)


def test_data_path_that_is_a_directory(bc_job, no_computation):
    (bc_job.parent / "hospital_b.csv").unlink()
    (bc_job.parent / "hospital_b.csv").mkdir()
    with pytest.raises(
        DataError, match=r"^party 'hospital_b': data file .*hospital_b\.csv is a directory, not a file"
    ):
        run_quiet(bc_job)


def test_unreadable_data_file_says_why(bc_job, no_computation, monkeypatch):
    denied = bc_job.parent / "hospital_c_test.csv"
    real = Path.open

    def fake_open(self, *args, **kwargs):
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", fake_open)
    with pytest.raises(
        DataError,
        match=r"^party 'hospital_c': data file .*hospital_c_test\.csv cannot be read: permission denied(\n|$)",
    ):
        run_quiet(bc_job)


def test_job_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "job.toml"
    path.write_bytes('task = "mlp"\nlabel = "r\u00e9ponse"\n'.encode("latin-1"))
    with pytest.raises(JobError, match=r"job file .*job\.toml is not UTF-8 text \(byte 0xe9 at line 2\)"):
        load_job(path)


def test_single_class_label(bc_job, monkeypatch):
    import covault.ml as ml

    def no_fit(*a, **k):
        raise AssertionError("training started despite a single-class label")

    monkeypatch.setattr(ml.LogisticRegression, "fit", no_fit)
    for f in bc_job.parent.glob("hospital_*.csv"):
        rewrite_csv(f, lambda c, r: (c, [[*x[:-1], "1"] for x in r]))
    with pytest.raises(
        JobError, match=r"label 'malignant': the pooled training rows .* do not contain both classes"
    ):
        run_quiet(bc_job)


def test_single_class_in_held_out_rows(bc_job, monkeypatch):
    import covault.ml as ml

    monkeypatch.setattr(ml.LogisticRegression, "fit", lambda *a, **k: pytest.fail("training started"))
    for f in bc_job.parent.glob("hospital_*_test.csv"):
        rewrite_csv(f, lambda c, r: (c, [[*x[:-1], "0"] for x in r]))
    with pytest.raises(JobError, match=r"the pooled held-out rows .* do not contain both classes"):
        run_quiet(bc_job, transport="local")


def test_bad_label_values_and_range(bc_job, no_computation):
    def label_two(c, r):
        r[6][-1] = "2"
        return c, r

    rewrite_csv(bc_job.parent / "hospital_c.csv", label_two)
    with pytest.raises(
        DataError, match=r"party 'hospital_c': .*label column 'malignant', row 7: class labels must be 0 or 1"
    ):
        run_quiet(bc_job)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            {"compute": ["hospital_a", "hospital_b", "hospital_x"]},
            r"compute party 'hospital_x' is not one of the parties",
        ),
        (
            {"reveal_model_to": ["hospital_a", "bank_z"]},
            r"reveal_model_to: 'bank_z' is not one of the parties",
        ),
        ({"partition": "vertical"}, r"partition = 'vertical' needs id = 'COLUMN'"),
        ({"partition": "vertical", "id": "y"}, r"id and label name the same column"),
        ({"id": "pid"}, r"id is only used with partition = 'vertical'"),
        ({"task": "svm"}, r"task must be one of"),
        ({"label": ""}, r"label must name the label column"),
        ({"test_fraction": 1.5}, r"test_fraction must be a number in \[0, 1\)"),
        ({"seed": -1}, r"seed must be a non-negative integer"),
        ({"colour": "blue"}, r"unknown key 'colour' in the top level"),
    ],
)
def test_bad_job_keys(tmp_path, edit, message):
    top = {"protocol": "rep3", "task": "logistic_regression", "label": "y", **edit}
    parties = {n: {"data": f"{n}.csv"} for n in HOSPITALS}
    with pytest.raises(JobError, match=message):
        load_job(write_job(tmp_path / "j.toml", top, None, parties))


@pytest.mark.parametrize(
    "model,message",
    [
        ({"epochs": 0}, r"\[model\]: epochs must be a positive integer"),
        ({"learning_rate": "fast"}, r"\[model\]"),
        ({"hidden": [8]}, r"unknown key 'hidden' in \[model\] for task 'logistic_regression'"),
        ({"sigmoid": "tanh"}, r"\[model\]: sigmoid must be one of"),
        ({"learning_rate": 1e9}, r"\[model\]: learning_rate must be at most 10 .*, got 1000000000\.0"),
        ({"learning_rate": 10.5}, r"\[model\]: learning_rate must be at most 10 "),
    ],
)
def test_bad_model_keys(tmp_path, model, message):
    top = {"task": "logistic_regression", "label": "y"}
    parties = {n: {"data": f"{n}.csv"} for n in HOSPITALS}
    with pytest.raises(JobError, match=message):
        load_job(write_job(tmp_path / "j.toml", top, model, parties))


def test_party_roles_are_checked(tmp_path):
    top = {"protocol": "2pc", "task": "logistic_regression", "label": "y", "dealer": "d"}
    with pytest.raises(JobError, match=r"party 'd' is the 2pc dealer and cannot own data"):
        load_job(
            write_job(
                tmp_path / "j.toml", top, None, {"a": {"data": "a.csv"}, "b": {}, "d": {"data": "x.csv"}}
            )
        )
    with pytest.raises(JobError, match=r"party 'c' has a test file but no data file"):
        load_job(
            write_job(
                tmp_path / "j.toml",
                top,
                None,
                {"a": {"data": "a.csv"}, "b": {}, "c": {"test": "t.csv"}, "d": {}},
            )
        )
    with pytest.raises(JobError, match=r"party 'c' is neither a compute party, the dealer nor a data owner"):
        load_job(
            write_job(tmp_path / "j.toml", top, None, {"a": {"data": "a.csv"}, "b": {}, "c": {}, "d": {}})
        )
    with pytest.raises(JobError, match=r"reveal_model_to: 'd' is the 2pc dealer"):
        load_job(
            write_job(
                tmp_path / "j.toml",
                {**top, "reveal_model_to": ["d"]},
                None,
                {"a": {"data": "a.csv"}, "b": {}, "d": {}},
            )
        )
    with pytest.raises(JobError, match=r"no party owns data"):
        load_job(write_job(tmp_path / "j.toml", top, None, {"a": {}, "b": {}, "d": {}}))
    with pytest.raises(JobError, match=r"job file .* not found"):
        load_job(tmp_path / "nope.toml")


def test_job_defaults(tmp_path):
    parties = {
        "a": {"data": "a.csv", "test": "sub/a_test.csv"},
        "b": {"data": "/abs/b.csv"},
        "c": {},
        "e": {"data": "e.csv"},
    }
    job = load_job(
        write_job(tmp_path / "j.toml", {"task": "mlp", "label": "y", "model_out": "m.onnx"}, None, parties)
    )
    assert job.protocol == "rep3" and job.compute == ("a", "b", "c")
    assert job.data_parties == ("a", "b", "e") and job.data_only == ("e",)
    assert job.reveal_model_to == ("a", "b", "e")  # every data party
    assert job.test == {"a": tmp_path / "sub" / "a_test.csv"} and job.data["b"] == Path("/abs/b.csv")
    assert job.model_out == tmp_path / "m.onnx"
    assert job.model["hidden"] == (32,) and job.n_classes == 2 and job.test_fraction == 0.2


def test_agreement_rejects_a_different_job_file(tmp_path):
    parties = {n: {"data": f"{n}.csv"} for n in HOSPITALS}
    job = load_job(
        write_job(tmp_path / "j.toml", {"task": "logistic_regression", "label": "y"}, None, parties)
    )
    other = load_job(
        write_job(
            tmp_path / "k.toml", {"task": "logistic_regression", "label": "y", "seed": 9}, None, parties
        )
    )
    status = {"columns": ["a"], "kinds": {"a": "number"}, "train_rows": 5, "test_rows": 2}
    statuses = {n: {"job": job.fingerprint(), **status} for n in HOSPITALS}
    assert agree(job, statuses, "hospital_a").features == ["a"]
    statuses["hospital_c"]["job"] = other.fingerprint()
    with pytest.raises(JobError, match=r"party 'hospital_c' runs a different job"):
        agree(job, statuses, "hospital_a")
    statuses = {n: {"job": job.fingerprint(), **status, "test_rows": 0} for n in HOSPITALS}
    with pytest.raises(JobError, match=r"no held-out rows at any party"):
        agree(job, statuses, "hospital_a")


# -- connectors --------------------------------------------------------------------------------------
def test_csv_connector(tmp_path):
    cols, v = load_table(write_csv(tmp_path / "a.csv", ["x", "y"], [[" 1.5", "2"], ["-3e2", "0"]]))
    assert cols == ["x", "y"] and v.tolist() == [[1.5, 2.0], [-300.0, 0.0]]
    (tmp_path / "t.tsv").write_text("x\ty\n1\t2\n")
    assert load_table(tmp_path / "t.tsv")[1].tolist() == [[1.0, 2.0]]
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match=r"e.csv is empty"):
        load_table(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("x,y\n")
    with pytest.raises(DataError, match=r"has a header but no data rows"):
        load_table(tmp_path / "h.csv")
    (tmp_path / "r.csv").write_text("x,y\n1,2\n3\n")
    with pytest.raises(DataError, match=r"row 2 has 1 fields, the header has 2"):
        load_table(tmp_path / "r.csv")
    (tmp_path / "d.csv").write_text("x,x\n1,2\n")
    with pytest.raises(DataError, match=r"column 'x' appears twice"):
        load_table(tmp_path / "d.csv")
    with pytest.raises(DataError, match=r"unsupported type '.xlsx'"):
        load_table(tmp_path / "a.xlsx")


def test_parquet_connector(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.5], "n": [3, 4], "b": [True, False]}), tmp_path / "a.parquet")
    cols, v = load_table(tmp_path / "a.parquet")
    assert cols == ["x", "n", "b"] and v.tolist() == [[1.0, 3.0, 1.0], [2.5, 4.0, 0.0]]
    pq.write_table(pa.table({"x": [1.0, None], "s": ["a", "b"]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"column 'x', row 2: empty value"):
        load_table(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"s": ["a", "b"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"column 's' is not numeric \(row 1\)"):
        load_table(tmp_path / "s.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"a.parquet needs pyarrow: pip install 'covault\[parquet\]'"):
        load_table(tmp_path / "a.parquet")


# -- plaintext helpers -------------------------------------------------------------------------------
def test_split_and_auc_helpers():
    labels = np.array([0] * 30 + [1] * 10, dtype=float)
    tr, te = split_rows(labels, 0.2, 7, "p", stratify=True)
    assert len(te) == 8 and labels[te].sum() == 2 and np.intersect1d(tr, te).size == 0
    assert np.array_equal(split_rows(labels, 0.2, 7, "p", True)[1], te)  # reproducible
    assert not np.array_equal(split_rows(labels, 0.2, 7, "q", True)[1], te)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    gen = np.random.default_rng(1)
    y, s = gen.integers(0, 2, 200), np.round(gen.normal(size=200), 1)  # with ties
    assert roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s))


@pytest.mark.parametrize("protocol", ["rep3", "2pc"])
def test_rows_shared_in_blocks_pool_like_one_input(tmp_path, monkeypatch, protocol):
    """Owners share their rows in blocks of INPUT_ROWS (here 37: blocks straddle the
    training/held-out boundary); the pooled sets are the same rows in job order."""
    monkeypatch.setattr(job_program_module, "INPUT_ROWS", 37)
    path = make_breast_cancer_job(tmp_path, protocol=protocol)
    res = run_quiet(path, compare_plaintext=True)
    plain = res["plaintext"]
    assert res["train_rows"] == plain["train_rows"] and res["test_rows"] == plain["test_rows"]
    assert abs(res["metrics"]["accuracy"] - plain["metrics"]["accuracy"]) <= 0.01 + 1e-9
    assert abs(res["metrics"]["auc"] - plain["metrics"]["auc"]) < 0.01
