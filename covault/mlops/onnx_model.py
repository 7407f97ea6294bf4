"""The revealed model of a job result as ONNX, with an input example of public values only."""

from __future__ import annotations

from typing import Any

import numpy as np


def result_onnx(result: dict[str, Any]) -> Any:
    """The ``onnx.ModelProto`` of the model in ``result`` (the graph ``model_out`` holds)."""
    from covault.ingest.transforms import Preprocessing
    from covault.jobs.onnx_export import build_onnx

    if result.get("model") is None:
        raise ValueError("the job result holds no model: it was revealed to nobody (reveal_model_to = [])")
    pre = result.get("preprocessing")
    return build_onnx(
        result["task"],
        result["model"],
        list(result.get("model_inputs") or result["features"]),
        result["label"],
        None if pre is None else Preprocessing.from_json(pre),
    )


def input_example(proto: Any, rows: int = 2) -> dict[str, np.ndarray] | np.ndarray:
    """An input of the graph made of public values (zeros, empty text), never a party's rows:
    the feature matrix, or ``{input: column}`` for a model that takes raw columns."""
    from onnx import TensorProto

    feeds = {}
    for inp in proto.graph.input:
        t = inp.type.tensor_type
        width = t.shape.dim[1].dim_value or 1
        if t.elem_type == TensorProto.STRING:
            feeds[inp.name] = np.full((rows, width), "", dtype=object)
        else:
            feeds[inp.name] = np.zeros((rows, width), dtype=np.float32)
    if list(feeds) == ["features"]:
        return feeds["features"]
    return feeds


def predict(proto: Any, example: dict[str, np.ndarray] | np.ndarray) -> np.ndarray:
    """The model's output on ``example`` (onnxruntime, one thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = example if isinstance(example, dict) else {proto.graph.input[0].name: example}
    return np.asarray(sess.run(None, feed)[0])
