"""ONNX export of a revealed model, for serving with any ONNX runtime.

Graphs (input ``features``: float32 ``(N, d)``, the raw feature columns in the job's order):

- logistic regression: ``MatMul -> Add -> Sigmoid``, output ``probability`` ``(N, 1)`` = P(class 1);
- linear regression: ``MatMul -> Add``, output ``prediction`` ``(N, 1)``;
- MLP: ``Gemm -> Relu -> ... -> Gemm -> Softmax``, output ``probabilities`` ``(N, n_classes)``.

Opset 17, IR version 8. Metadata: ``covault.task``, ``covault.label``, ``covault.features``
(JSON list). ``onnx`` is an optional dependency (``pip install 'covault[onnx]'``);
:func:`run_onnx` uses ``onnxruntime`` if installed, else ``onnx``'s reference evaluator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from covault.jobs.errors import JobError

OPSET = 17
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


def build_onnx(task: str, weights: dict[str, Any], features: list[str], label: str):
    """The ``onnx.ModelProto`` of a revealed model (weights as from
    :func:`covault.jobs.model.model_to_dict`)."""
    onnx = require_onnx()
    from onnx import TensorProto, helper

    d = len(features)
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
        out_shape = ["N", len(bs[-1])]
    else:
        inits += [
            _init(onnx, "coef", np.asarray(weights["coef"]).reshape(d, 1)),
            _init(onnx, "intercept", [weights["intercept"]]),
        ]
        nodes.append(helper.make_node("MatMul", ["features", "coef"], ["xw"], name="matmul"))
        last = "logit" if task == "logistic_regression" else "prediction"
        nodes.append(helper.make_node("Add", ["xw", "intercept"], [last], name="add"))
        if task == "logistic_regression":
            nodes.append(helper.make_node("Sigmoid", ["logit"], ["probability"], name="sigmoid"))
        out_shape = ["N", 1]
    graph = helper.make_graph(
        nodes,
        f"covault_{task}",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info(OUTPUTS[task], TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="covault", ir_version=IR_VERSION
    )
    model.doc_string = f"{task} trained with covault on secret-shared data; label {label!r}"
    helper.set_model_props(
        model, {"covault.task": task, "covault.label": label, "covault.features": json.dumps(features)}
    )
    onnx.checker.check_model(model)
    return model


def write_onnx(task: str, weights: dict[str, Any], features: list[str], label: str, path: str | Path) -> Path:
    """Build the model and write it to ``path`` atomically (several receivers sharing a folder
    write the same bytes)."""
    model = build_onnx(task, weights, features, label)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(model.SerializeToString())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def run_onnx(model: str | Path | Any, x: np.ndarray) -> np.ndarray:
    """Evaluate an exported model (path or ModelProto) on rows ``x``; its single output."""
    onnx = require_onnx()
    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
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
