"""Plaintext models read at their owner for import (``covault model import``).

Each reader returns a :class:`PlainModel`: the public layer list of
:class:`covault.serving.model.SecretModel` and float64 weights ``(in, out)`` and biases
``(out,)``. Supported: ONNX graphs of Gemm, MatMul, Add, Relu, Sigmoid, Tanh and Softmax
(:func:`read_onnx`), a PyTorch ``nn.Sequential`` of Linear, ReLU, Sigmoid, Tanh and Softmax
saved with ``torch.save`` (:func:`read_torch`, loaded with ``weights_only=True``), and
safetensors files with an explicit layer list (:func:`read_safetensors`). Anything else raises
:class:`~covault.serving.store.ModelStoreError` naming the operator or the problem.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covault.serving.store import ModelStoreError

ACTIVATION_OPS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax"}
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


@dataclass
class PlainModel:
    """Public ``layers`` and the plaintext ``weights`` ``[W, b]`` per linear layer."""

    layers: list[dict]
    weights: list[np.ndarray]


class _Builder:
    """Layers appended in order; a bias may follow its linear layer (MatMul, then Add)."""

    def __init__(self, source: str):
        self.source, self.layers, self.weights = source, [], []

    def linear(self, w: np.ndarray, b: np.ndarray | None) -> None:
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2:
            raise ModelStoreError(f"{self.source}: a linear layer's weight has shape {w.shape}, not 2-D")
        b = np.zeros(w.shape[1]) if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
        if b.shape != (w.shape[1],):
            raise ModelStoreError(f"{self.source}: bias of shape {b.shape} for a weight of shape {w.shape}")
        self.layers.append({"op": "linear", "in": int(w.shape[0]), "out": int(w.shape[1])})
        self.weights += [w, b]

    def add_bias(self, b: np.ndarray) -> None:
        if not self.layers or self.layers[-1]["op"] != "linear":
            raise ModelStoreError(f"{self.source}: an Add that does not follow a linear layer")
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if b.shape != self.weights[-1].shape:
            raise ModelStoreError(
                f"{self.source}: Add of shape {b.shape} after a layer of {self.weights[-1].shape}"
            )
        self.weights[-1] = self.weights[-1] + b

    def activation(self, op: str) -> None:
        self.layers.append({"op": op})

    def done(self) -> PlainModel:
        if not self.layers:
            raise ModelStoreError(f"{self.source}: no layers")
        for w in self.weights:
            if not np.all(np.isfinite(w)):
                raise ModelStoreError(f"{self.source}: a weight is NaN or infinite")
        return PlainModel(self.layers, self.weights)


def read_model(path: str | Path, layers: str | None = None) -> PlainModel:
    """The model in ``path`` by its suffix: ``.onnx``, ``.pt``/``.pth``, ``.safetensors``
    (which needs ``layers``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return read_onnx(path)
    if suffix in (".pt", ".pth"):
        return read_torch(path)
    if suffix == ".safetensors":
        if not layers:
            raise ModelStoreError(f"{path}: a safetensors file needs --layers (e.g. 'fc1,relu,fc2,softmax')")
        return read_safetensors(path, layers)
    raise ModelStoreError(f"{path}: unknown model format {suffix!r} (.onnx, .pt, .pth, .safetensors)")


def read_onnx(path: str | Path) -> PlainModel:
    """A chain of Gemm / MatMul (+ Add) / Relu / Sigmoid / Tanh / Softmax nodes, each taking
    the previous node's output, weights as initializers."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelStoreError(
            "reading ONNX models needs the onnx package (pip install 'covault[onnx]')"
        ) from None
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError and others
        raise ModelStoreError(f"{path}: not a readable ONNX model ({exc})") from None
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    feeds = [i.name for i in graph.input if i.name not in init]
    if len(feeds) != 1:
        raise ModelStoreError(f"{path}: the graph must have one input, has {feeds}")
    out, cur = _Builder(str(path)), feeds[0]
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        args = list(node.input)
        if not args or args[0] != cur:
            raise ModelStoreError(
                f"{path}: node {node.name or node.op_type} ({node.op_type}) does not follow the chain"
            )
        params = [init.get(a) for a in args[1:]]
        if any(p is None for p in params):
            raise ModelStoreError(
                f"{path}: {node.op_type} takes a non-constant second input; only chains are supported"
            )
        if node.op_type == "Gemm":
            if attrs.get("transA", 0):
                raise ModelStoreError(f"{path}: Gemm with transA = 1 is not supported")
            w = params[0].T if attrs.get("transB", 0) else params[0]
            b = params[1] * float(attrs.get("beta", 1.0)) if len(params) > 1 else None
            out.linear(np.asarray(w, np.float64) * float(attrs.get("alpha", 1.0)), b)
        elif node.op_type == "MatMul":
            out.linear(params[0], None)
        elif node.op_type == "Add":
            out.add_bias(params[0])
        elif node.op_type in ACTIVATION_OPS:
            if node.op_type == "Softmax" and attrs.get("axis", -1) not in (-1, 1):
                raise ModelStoreError(f"{path}: Softmax over axis {attrs['axis']} (only the last axis)")
            out.activation(ACTIVATION_OPS[node.op_type])
        else:
            raise ModelStoreError(
                f"{path}: unsupported ONNX operator {node.op_type!r} "
                "(supported: Gemm, MatMul, Add, Relu, Sigmoid, Tanh, Softmax)"
            )
        cur = node.output[0]
    return out.done()


def read_torch(path: str | Path) -> PlainModel:
    """A ``torch.save``-d ``nn.Sequential`` of Linear, ReLU, Sigmoid, Tanh, Softmax, loaded with
    ``weights_only=True`` (only those classes are allowed to be unpickled)."""
    import torch
    from torch import nn

    allowed = [nn.Sequential, nn.Linear, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax]
    try:
        with torch.serialization.safe_globals(allowed):
            model = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError naming a class outside the allowed ones, or IO
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = (
            f"unsupported layer {found.group(1).rsplit('.', 1)[-1]!r} ({found.group(1)})"
            if found
            else str(exc)
        )
        raise ModelStoreError(
            f"{path}: not a PyTorch nn.Sequential of Linear, ReLU, Sigmoid, Tanh, Softmax: {what}"
        ) from None
    if not isinstance(model, nn.Sequential):
        raise ModelStoreError(f"{path}: holds a {type(model).__name__}, not an nn.Sequential")
    out = _Builder(str(path))
    names = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Softmax: "softmax"}
    for m in model:
        if isinstance(m, nn.Linear):
            b = None if m.bias is None else m.bias.detach().double().numpy()
            out.linear(m.weight.detach().double().numpy().T, b)
        elif type(m) in names:
            if isinstance(m, nn.Softmax) and m.dim not in (None, -1, 1):
                raise ModelStoreError(f"{path}: Softmax over dim {m.dim} (only the last axis)")
            out.activation(names[type(m)])
        else:
            raise ModelStoreError(f"{path}: unsupported layer {type(m).__name__!r}")
    return out.done()


def read_safetensors_file(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file (8-byte little-endian header length, JSON header of
    ``{name: {dtype, shape, data_offsets}}``, raw little-endian data) as float64 arrays."""
    path = Path(path)
    blob = path.read_bytes()
    if len(blob) < 8:
        raise ModelStoreError(f"{path}: not a safetensors file (too short)")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ModelStoreError(f"{path}: not a safetensors file (header of {n} bytes)")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelStoreError(f"{path}: not a safetensors file (bad JSON header)") from None
    if not isinstance(header, dict):
        raise ModelStoreError(f"{path}: not a safetensors file (the header is not a JSON object)")
    data = memoryview(blob)[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, lo, hi = _safetensors_entry(path, name, t, len(data))
        a = np.frombuffer(data[lo:hi], dtype=SAFETENSORS_DTYPES[dtype])
        if dtype == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(np.float64).reshape(shape)
    return out


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _safetensors_entry(path: Path, name: str, t, size: int) -> tuple[str, tuple[int, ...], int, int]:
    """``(dtype, shape, lo, hi)`` of tensor ``name``'s header entry ``t`` in a file of ``size``
    data bytes; ModelStoreError naming the file and the tensor unless ``t`` is a JSON object
    with a supported dtype, a shape of integers >= 0 and ``data_offsets`` ``[lo, hi]`` with
    ``0 <= lo <= hi <= size`` and ``hi - lo`` the shape's bytes."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(t, dict):
        raise ModelStoreError(f"{where}: its header entry is not a JSON object ({type(t).__name__})")
    dtype = t.get("dtype")
    if dtype not in SAFETENSORS_DTYPES:
        raise ModelStoreError(f"{where} has dtype {dtype!r} (supported: {sorted(SAFETENSORS_DTYPES)})")
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(_int(v) and v >= 0 for v in shape):
        raise ModelStoreError(f"{where}: shape must be a list of integers >= 0, got {shape!r}")
    offsets = t.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_int(v) for v in offsets)):
        raise ModelStoreError(f"{where}: data_offsets must be two integers [lo, hi], got {offsets!r}")
    lo, hi = offsets
    if not 0 <= lo <= hi <= size:
        raise ModelStoreError(
            f"{where}: data_offsets {offsets} outside 0 <= lo <= hi <= {size} (the data's bytes)"
        )
    want = math.prod(shape) * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
    if hi - lo != want:
        raise ModelStoreError(
            f"{where}: data_offsets {offsets} hold {hi - lo} bytes; shape {shape} {dtype} takes {want}"
        )
    return dtype, tuple(shape), lo, hi


def read_safetensors(path: str | Path, layers: str) -> PlainModel:
    """``layers``: comma-separated; an activation (relu, sigmoid, tanh, softmax) or the prefix
    ``P`` of a linear layer stored PyTorch-style as ``P.weight`` (out, in) and ``P.bias``."""
    tensors = read_safetensors_file(path)
    out = _Builder(str(path))
    for token in (t.strip() for t in layers.split(",")):
        if token in ("relu", "sigmoid", "tanh", "softmax"):
            out.activation(token)
            continue
        if f"{token}.weight" not in tensors:
            raise ModelStoreError(
                f"{path}: no tensor {token + '.weight'!r} for layer {token!r} (has {sorted(tensors)})"
            )
        out.linear(tensors[f"{token}.weight"].T, tensors.get(f"{token}.bias"))
    return out.done()
