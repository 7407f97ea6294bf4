"""ONNX export of a revealed model, for serving with any ONNX runtime.

Graphs (input ``features``: float32 ``(N, d)``, the raw feature columns in the job's order):

- logistic regression: ``MatMul -> Add -> Sigmoid``, output ``probability`` ``(N, 1)`` = P(class 1);
- linear regression: ``MatMul -> Add``, output ``prediction`` ``(N, 1)``;
- MLP: ``Gemm -> Relu -> ... -> Gemm -> Softmax``, output ``probabilities`` ``(N, n_classes)``.

With a :class:`~covault.ingest.transforms.Preprocessing` the graph takes raw columns instead
of ``features``: one input per column (:func:`input_names`), float32 ``(N, 1)`` for number
and bool columns (NaN = missing), string ``(N, 1)`` for text, and computes ``features`` from
them with the job's transforms (IsNaN + Where, Clip, sign-preserving log1p, Mul, ai.onnx.ml
LabelEncoder + Equal for one-hot, Concat), see ``docs/transforms.md``.

Opset 17 (and ai.onnx.ml 2 with preprocessing), IR version 8. Metadata: ``covault.task``,
``covault.label``, ``covault.features`` (JSON list of the model's feature columns); with
preprocessing also ``covault.preprocessing`` (:meth:`Preprocessing.to_json`) and
``covault.inputs`` (JSON ``{column: graph input}``). ``onnx`` is an optional dependency
(``pip install 'covault[onnx]'``); :func:`run_onnx` uses ``onnxruntime`` if installed, else
``onnx``'s reference evaluator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from covault.ingest.table import Table
from covault.ingest.transforms import Preprocessing
from covault.jobs.errors import JobError

OPSET = 17
ML_DOMAIN, ML_OPSET = "ai.onnx.ml", 2  # LabelEncoder with keys_strings / values_int64s
IR_VERSION = 8
OUTPUTS = {"logistic_regression": "probability", "linear_regression": "prediction", "mlp": "probabilities"}


def require_onnx(load: bool = True):
    """The ``onnx`` module (with ``load=False``: only a check that it is installed, without the
    second its import takes), or a JobError saying how to install it."""
    missing = JobError("writing the model as ONNX needs the onnx package: pip install 'covault[onnx]'")
    if not load:
        if importlib.util.find_spec("onnx") is None:
            raise missing
        return None
    try:
        import onnx
    except ImportError:
        raise missing from None
    return onnx


def _init(onnx, name: str, value: Any):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _model_nodes(task: str, weights: dict[str, Any], d: int) -> tuple[list, list, list]:
    """The model's nodes and initialisers on the float32 ``(N, d)`` tensor ``features``, and
    its output shape."""
    onnx = require_onnx()
    from onnx import helper

    nodes, inits = [], []
    if task == "mlp":
        ws, bs = weights["coefs"], weights["intercepts"]
        h = "features"
        for i, (w, b) in enumerate(zip(ws, bs)):
            inits += [_init(onnx, f"W{i}", w), _init(onnx, f"b{i}", b)]
            out = f"h{i}"
            nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"b{i}"], [out], name=f"dense{i}"))
            h = out
            if i < len(ws) - 1:
                nodes.append(helper.make_node("Relu", [h], [f"r{i}"], name=f"relu{i}"))
                h = f"r{i}"
        nodes.append(helper.make_node("Softmax", [h], ["probabilities"], axis=1, name="softmax"))
        return nodes, inits, ["N", len(bs[-1])]
    inits += [
        _init(onnx, "coef", np.asarray(weights["coef"]).reshape(d, 1)),
        _init(onnx, "intercept", [weights["intercept"]]),
    ]
    nodes.append(helper.make_node("MatMul", ["features", "coef"], ["xw"], name="matmul"))
    last = "logit" if task == "logistic_regression" else "prediction"
    nodes.append(helper.make_node("Add", ["xw", "intercept"], [last], name="add"))
    if task == "logistic_regression":
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["probability"], name="sigmoid"))
    return nodes, inits, ["N", 1]


def build_onnx(
    task: str,
    weights: dict[str, Any],
    features: list[str],
    label: str,
    preprocessing: Preprocessing | None = None,
):
    """The ``onnx.ModelProto`` of a revealed model (weights as from
    :func:`covault.jobs.model.model_to_dict`).

    With ``preprocessing`` the graph takes one input per raw column and applies the
    transforms before the model (module docstring); ``features`` are then its raw columns
    (``preprocessing.inputs``) or its outputs, and the model has ``len(preprocessing.outputs)``
    feature columns."""
    onnx = require_onnx()
    from onnx import TensorProto, helper

    if preprocessing is None:
        d = len(features)
        nodes, inits, out_shape = _model_nodes(task, weights, d)
        graph_inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", d])]
        opsets = [helper.make_opsetid("", OPSET)]
        props = {"covault.task": task, "covault.label": label, "covault.features": json.dumps(features)}
    else:
        outputs, raw = list(preprocessing.outputs), preprocessing.names
        if list(features) not in (outputs, raw):
            raise JobError(
                f"the model's features {list(features)} are neither the preprocessing's raw "
                f"columns {raw} nor its outputs {outputs}"
            )
        nodes, inits, out_shape = _model_nodes(task, weights, len(outputs))
        names = input_names(preprocessing, _used_names(nodes, inits))
        pre_nodes, pre_inits, graph_inputs = _preprocessing_nodes(preprocessing, names)
        nodes, inits = pre_nodes + nodes, pre_inits + inits
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(ML_DOMAIN, ML_OPSET)]
        props = {
            "covault.task": task,
            "covault.label": label,
            "covault.features": json.dumps(outputs),
            "covault.inputs": json.dumps(names),
            "covault.preprocessing": json.dumps(preprocessing.to_json()),
        }
    graph = helper.make_graph(
        nodes,
        f"covault_{task}",
        graph_inputs,
        [helper.make_tensor_value_info(OUTPUTS[task], TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=opsets, producer_name="covault", ir_version=IR_VERSION)
    model.doc_string = f"{task} trained with covault on secret-shared data; label {label!r}"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def _used_names(nodes: list, inits: list) -> set[str]:
    used = {"features", *OUTPUTS.values()}
    for n in nodes:
        used.update(n.input)
        used.update(n.output)
    used.update(i.name for i in inits)
    return used


def input_names(preprocessing: Preprocessing, reserved: Iterable[str] = ()) -> dict[str, str]:
    """The graph input name of each raw column: the name with every character outside
    ``[A-Za-z0-9_]`` replaced by ``_`` (prefixed ``c_`` when it would start with a digit or be
    empty), made unique (``_2``, ``_3``, ...) and kept off the graph's own names and the
    ``pp_`` prefix of its preprocessing nodes."""
    out: dict[str, str] = {}
    taken = set(reserved)
    for name in preprocessing.names:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not base or base[0].isdigit() or base.startswith("pp_"):
            base = "c_" + base
        cand, i = base, 1
        while cand in taken:
            i += 1
            cand = f"{base}_{i}"
        taken.add(cand)
        out[name] = cand
    return out


def _preprocessing_nodes(pre: Preprocessing, names: dict[str, str]) -> tuple[list, list, list]:
    """Nodes computing ``features`` (float32 ``(N, len(outputs))``) from the raw inputs:
    IsNaN + Where (impute), Clip, Sign * Log(1 + Abs) (log1p), Mul (scale times the auto
    scale factor); text: ai.onnx.ml LabelEncoder (category -> index, else -1), Equal with
    ``0 .. K-1``, Cast; then Concat in output order."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, graph_inputs, parts = [], [], [], []

    def const(tag: str, value: Any, dtype=np.float32) -> str:
        name = f"pp_{tag}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, ins: list[str], tag: str, **attrs: Any) -> str:
        out = f"pp_{tag}"
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    for j, (col, kind) in enumerate(pre.inputs):
        src, t = names[col], pre.transform_of(col)
        if kind == "text":
            graph_inputs.append(helper.make_tensor_value_info(src, TensorProto.STRING, ["N", 1]))
            cats = list(t.categories or ())
            idx = node(
                "LabelEncoder",
                [src],
                f"{j}_index",
                domain=ML_DOMAIN,
                keys_strings=cats,
                values_int64s=list(range(len(cats))),
                default_int64=-1,
            )
            hit = node(
                "Equal", [idx, const(f"{j}_range", np.arange(len(cats)).reshape(1, -1), np.int64)], f"{j}_hit"
            )
            parts.append(node("Cast", [hit], f"{j}_onehot", to=TensorProto.FLOAT))
            continue
        graph_inputs.append(helper.make_tensor_value_info(src, TensorProto.FLOAT, ["N", 1]))
        x = src
        fill = pre.impute_value(col)
        if fill is not None:
            nan = node("IsNaN", [x], f"{j}_isnan")
            x = node("Where", [nan, const(f"{j}_impute", fill), x], f"{j}_imputed")
        if kind == "number":
            if t.clip is not None:
                x = node(
                    "Clip", [x, const(f"{j}_lo", t.clip[0]), const(f"{j}_hi", t.clip[1])], f"{j}_clipped"
                )
            if t.log1p:
                a = node("Abs", [x], f"{j}_abs")
                a = node("Add", [a, const(f"{j}_one", 1.0)], f"{j}_abs1")
                a = node("Log", [a], f"{j}_log")
                s = node("Sign", [x], f"{j}_sign")
                x = node("Mul", [s, a], f"{j}_log1p")
            factor = pre.factor(col)
            if factor != 1.0:
                x = node("Mul", [x, const(f"{j}_factor", factor)], f"{j}_scaled")
        parts.append(x)
    if len(parts) == 1:
        nodes.append(helper.make_node("Identity", parts, ["features"], name="pp_features"))
    else:
        nodes.append(helper.make_node("Concat", parts, ["features"], axis=1, name="pp_features"))
    return nodes, inits, graph_inputs


def write_onnx(
    task: str,
    weights: dict[str, Any],
    features: list[str],
    label: str,
    path: str | Path,
    *,
    preprocessing: Preprocessing | None = None,
) -> Path:
    """Build the model (:func:`build_onnx`) and write it to ``path`` atomically (several
    receivers sharing a folder write the same bytes)."""
    model = build_onnx(task, weights, features, label, preprocessing)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(model.SerializeToString())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def model_preprocessing(proto: Any) -> Preprocessing | None:
    """The Preprocessing stored in a model's metadata, or None."""
    meta = {p.key: p.value for p in proto.metadata_props}
    raw = meta.get("covault.preprocessing")
    return None if raw is None else Preprocessing.from_json(json.loads(raw))


def _raw_feed(proto: Any, pre: Preprocessing, x: Mapping[str, Any] | Table) -> dict[str, np.ndarray]:
    """Graph inputs from raw columns: floats (None -> NaN) for number/bool columns, stripped
    strings (None/NaN -> "", which matches no category) for text columns."""
    meta = {p.key: p.value for p in proto.metadata_props}
    names = json.loads(meta["covault.inputs"]) if "covault.inputs" in meta else input_names(pre)
    feed, rows = {}, set()
    for col, kind in pre.inputs:
        if isinstance(x, Table):
            values = x[col].values
        elif col in x:
            values = np.asarray(x[col], dtype=object if kind == "text" else None).reshape(-1)
        else:
            raise JobError(
                f"the model takes raw column {col!r}; it is not among the columns given ({', '.join(x)})"
            )
        if kind == "text":
            cells = [
                "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip() for v in values
            ]
            arr = np.array(cells, dtype=object).reshape(-1, 1)
        else:
            cells = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            arr = cells.astype(np.float32).reshape(-1, 1)
        rows.add(len(arr))
        feed[names[col]] = arr
    if len(rows) > 1:
        raise JobError(f"the raw columns given have different lengths {sorted(rows)}")
    return feed


def _matrix_columns(pre: Preprocessing, x: Any) -> dict[str, np.ndarray]:
    """The raw columns of a model with preprocessing from a matrix whose columns are its raw
    numeric inputs in order (models with text inputs need a dict or a Table)."""
    text = [n for n, k in pre.inputs if k == "text"]
    m = np.asarray(x, dtype=np.float64)
    if text or m.ndim != 2 or m.shape[1] != len(pre.inputs):
        raise JobError(
            "this model takes raw columns: pass a dict {column: values} or a Table with the columns "
            f"{pre.names}" + ("" if text else f" (or a matrix of {len(pre.inputs)} columns in that order)")
        )
    return {n: m[:, j] for j, n in enumerate(pre.names)}


def run_onnx(model: str | Path | Any, x: np.ndarray | Mapping[str, Any] | Table) -> np.ndarray:
    """Evaluate an exported model (path or ModelProto) on rows ``x``; its single output.
    ``x``: the feature matrix, or for a model with preprocessing the raw columns (a dict
    ``{column: values}`` or a :class:`~covault.ingest.table.Table`; a matrix of the raw columns
    in order where every input is numeric)."""
    onnx = require_onnx()
    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    pre = model_preprocessing(proto)
    if pre is not None:
        if not isinstance(x, Mapping | Table):
            x = _matrix_columns(pre, x)
        feed = _raw_feed(proto, pre, x)
    else:
        if isinstance(x, Mapping | Table):
            raise JobError("this model takes the feature matrix (it has no preprocessing), not raw columns")
        feed = {"features": np.asarray(x, dtype=np.float32)}
    try:
        import onnxruntime as ort
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        return np.asarray(ReferenceEvaluator(proto).run(None, feed)[0])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feed)[0])
