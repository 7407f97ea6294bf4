"""ONNX models with preprocessing: raw columns in, the same scores as Preprocessing.apply
followed by the plain model (onnxruntime and onnx's reference evaluator)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from covault.ingest.table import Column, Table
from covault.ingest.transforms import fit_plain, parse_transforms
from covault.jobs.errors import JobError

onnx = pytest.importorskip("onnx")
from covault.jobs.onnx_export import build_onnx, model_preprocessing, run_onnx, write_onnx  # noqa: E402

NAN = float("nan")
INPUTS = (
    ("amount", "number"),
    ("age", "number"),
    ("country code", "text"),
    ("x", "number"),
    ("vip", "bool"),
    ("features", "number"),  # a raw column named like the model's own input
)
TRANSFORMS = parse_transforms(
    {
        "amount": {"log1p": True, "impute": "mean"},
        "age": {"clip": [18, 100], "impute": 40},
        "country code": {"categories": ["DE", "FR", "NL"]},
        "x": {"impute": 0, "scale": 1e-3},
        "vip": {"impute": "mean"},
        "features": {"impute": "mean"},
    }
)


def _table(seed: int, n: int) -> Table:
    gen = np.random.default_rng(seed)
    amount = np.round(gen.uniform(-2e6, 9e6, n))  # millions, exact in float32
    amount[::7] = NAN
    age = np.round(gen.uniform(5, 120, n))
    age[3::5] = NAN
    x = np.round(gen.uniform(-8e6, 8e6, n))  # 8e3 after scale: auto scale 2^-3
    x[2] = NAN
    vip = (gen.uniform(0, 1, n) > 0.6).astype(np.float64)
    vip[5] = NAN
    feats = np.round(gen.normal(0, 3000, n))  # auto scale 2^-4 or so
    feats[1] = NAN
    country = gen.choice(np.array(["DE", "FR", "NL", "US", None], dtype=object), n)
    return Table(
        [
            Column("amount", "number", amount),
            Column("age", "number", age),
            Column("country code", "text", country),
            Column("x", "number", x),
            Column("vip", "bool", vip),
            Column("features", "number", feats),
        ],
        "data file t.csv",
    )


def _weights(task: str, d: int):
    gen = np.random.default_rng(3)
    if task == "mlp":
        return {"coefs": [gen.normal(0, 0.004, (d, 5)).tolist(), gen.normal(0, 0.3, (5, 3)).tolist()],
                "intercepts": [gen.normal(0, 0.1, 5).tolist(), gen.normal(0, 0.1, 3).tolist()]}  # fmt: skip
    return {"coef": gen.normal(0, 0.004, d).tolist(), "intercept": 0.3}


@pytest.fixture(scope="module")
def fitted():
    owners = [_table(1, 40), _table(2, 25)]
    return fit_plain(owners, INPUTS, TRANSFORMS)


@pytest.mark.parametrize("task", ["logistic_regression", "linear_regression", "mlp"])
@pytest.mark.parametrize("runtime", ["onnxruntime", "reference"])
def test_raw_rows_score_like_apply_then_the_plain_model(fitted, task, runtime, monkeypatch):
    if runtime == "reference":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # fall back to onnx.reference
    else:
        pytest.importorskip("onnxruntime")
    pre = fitted
    assert (
        pre.factors["x"] == 2.0**-3 and pre.factors["amount"] == 1.0 and pre.factors["country code=DE"] == 1.0
    )
    d = len(pre.outputs)
    w = _weights(task, d)
    model = build_onnx(task, w, list(pre.outputs), "y", pre)
    plain = build_onnx(task, w, list(pre.outputs), "y")
    rows = _table(9, 60)  # fresh rows: NaN cells, an unknown country, values in the millions
    assert "US" in set(rows["country code"].values) and None in set(rows["country code"].values)
    want = run_onnx(plain, pre.apply(rows))
    np.testing.assert_allclose(run_onnx(model, rows), want, atol=1e-5, rtol=1e-5)
    cols = {c: rows[c].values.tolist() for c in rows.names}  # plain lists, None for missing text
    np.testing.assert_allclose(run_onnx(model, cols), want, atol=1e-5, rtol=1e-5)


def test_graph_inputs_metadata_and_refusals(fitted, tmp_path):
    pre = fitted
    model = build_onnx(
        "logistic_regression", _weights("logistic_regression", len(pre.outputs)), pre.names, "y", pre
    )
    ins = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(ins) == ["amount", "age", "country_code", "x", "vip", "features_2"]
    assert ins["country_code"].elem_type == onnx.TensorProto.STRING
    assert ins["amount"].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in ins["age"].shape.dim][1] == 1
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["covault.features"]) == list(pre.outputs)
    assert json.loads(meta["covault.inputs"])["country code"] == "country_code"
    assert model_preprocessing(model) == pre
    ops = {n.op_type for n in model.graph.node}
    assert {"IsNaN", "Where", "Clip", "Log", "Sign", "LabelEncoder", "Equal", "Concat", "Mul"} <= ops
    path = write_onnx("linear_regression", _weights("linear", len(pre.outputs)), list(pre.outputs), "y",
                      tmp_path / "m.onnx", preprocessing=pre)  # fmt: skip
    rows = _table(4, 8)
    assert run_onnx(path, rows).shape == (8, 1)
    with pytest.raises(JobError, match="this model takes raw columns"):
        run_onnx(path, pre.apply(rows))
    with pytest.raises(JobError, match=r"raw column 'vip'; it is not among"):
        run_onnx(path, {c: rows[c].values for c in rows.names if c != "vip"})
    with pytest.raises(JobError, match="neither the preprocessing's raw columns"):
        build_onnx("linear_regression", _weights("linear", 3), ["a", "b", "c"], "y", pre)
    plain = build_onnx("linear_regression", _weights("linear", 2), ["a", "b"], "y")
    with pytest.raises(JobError, match="no preprocessing"):
        run_onnx(plain, {"a": [1.0], "b": [2.0]})
