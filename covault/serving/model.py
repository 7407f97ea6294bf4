"""A secret-shared model ready for inference, and its storage at each compute party.

A :class:`SecretModel` is a public list of layers (``linear`` with its input and output
widths, ``relu``, ``sigmoid``, ``tanh``, ``softmax``) and the secret weight ``(in, out)``
and bias ``(out,)`` of every ``linear`` layer. :func:`save_model` writes this party's shares
(:mod:`covault.serving.store`, encrypted under :func:`covault.serving.keys.party_key`);
:func:`load_model` reads them into a session of the same protocol, compute parties and
fixed-point bits, checking in one round that every compute party loaded the same model.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covault.nn import Linear, ReLU, Sequential, Sigmoid, Softmax
from covault.nn.module import Module
from covault.serving.keys import party_key
from covault.serving.store import ModelStoreError, check_name, model_file, read_shares, write_shares
from covault.tensor import SecretTensor

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax")
KINDS = ("logistic_regression", "linear_regression", "mlp", "sequential")
FORMAT = 1


class Tanh(Module):
    """``tanh`` for inference (no backward pass)."""

    def forward(self, x: SecretTensor) -> SecretTensor:
        return x.tanh()


@dataclass
class SecretModel:
    """A model whose weights are secret tensors of one session. ``layers``: public ``{"op":
    "linear", "in": a, "out": b}`` or ``{"op": ACTIVATION}``; ``weights``: ``[W, b]`` per
    linear layer; ``info``: public facts (the job's model inputs and preprocessing, the source)."""

    name: str
    kind: str
    layers: list[dict[str, Any]]
    weights: list[SecretTensor]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_layers(self.layers, [tuple(w.shape) for w in self.weights], self.name)
        if self.kind not in KINDS:
            raise ModelStoreError(f"model {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def n_features(self) -> int:
        return int(self.layers[0]["in"])

    def network(self, *, scores: bool = True) -> Sequential:
        """The layers as :mod:`covault.nn` modules in evaluation mode; ``scores=False`` leaves out
        a final sigmoid or softmax (logits)."""
        layers = self.layers
        if not scores and layers[-1]["op"] in ("sigmoid", "softmax"):
            layers = layers[:-1]
        mods: list[Module] = []
        w = iter(self.weights)
        for layer in layers:
            op = layer["op"]
            if op == "linear":
                mods.append(Linear(layer["in"], layer["out"], weight=next(w), bias_value=next(w)))
            else:
                mods.append({"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax}[op]())
        return Sequential(*mods).eval()

    def forward(self, x: SecretTensor, *, scores: bool = True) -> SecretTensor:
        """Secret outputs for the secret rows ``x`` (n, n_features): probabilities (a final
        sigmoid or softmax; ``scores=False``: the logits before it) or predictions. Logistic
        and linear regression give shape (n,), like the job's ONNX model."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ModelStoreError(
                f"model {self.name!r} takes rows of {self.n_features} features, got {x.shape}"
            )
        out = self.network(scores=scores)(x)
        if self.kind in ("logistic_regression", "linear_regression"):
            out = out.reshape(out.shape[0])
        return out

    __call__ = forward


def check_layers(layers: list[dict[str, Any]], shapes: list[tuple[int, ...]], name: str) -> None:
    """ModelStoreError naming the model unless ``layers`` is a chain of linear layers and
    activations whose widths match ``shapes`` (weight, bias per linear layer)."""
    if not layers or layers[0].get("op") != "linear":
        raise ModelStoreError(f"model {name!r}: the first layer must be linear, got {layers[:1]}")
    want: list[tuple[int, ...]] = []
    width = None
    for layer in layers:
        op = layer.get("op")
        if op == "linear":
            a, b = int(layer["in"]), int(layer["out"])
            if width is not None and a != width:
                raise ModelStoreError(
                    f"model {name!r}: a linear layer takes {a} inputs after a layer of {width}"
                )
            want += [(a, b), (b,)]
            width = b
        elif op not in ACTIVATIONS:
            raise ModelStoreError(
                f"model {name!r}: unknown layer {op!r} (known: linear, {', '.join(ACTIVATIONS)})"
            )
    if want != list(shapes):
        raise ModelStoreError(f"model {name!r}: weights of shapes {shapes}, the layers need {want}")


def from_estimator(est, name: str, kind: str, info: dict[str, Any] | None = None) -> SecretModel:
    """The trained secure estimator ``est`` (``covault.ml`` linear model or MLP) as a model."""
    if kind == "mlp":
        ws, bs = est.secret_coefs_, est.secret_intercepts_
        layers: list[dict[str, Any]] = []
        for i, w in enumerate(ws):
            layers.append({"op": "linear", "in": w.shape[0], "out": w.shape[1]})
            layers.append({"op": "relu" if i < len(ws) - 1 else "softmax"})
        weights = [t for pair in zip(ws, bs) for t in pair]
    else:
        d = est.secret_coef_.shape[0]
        layers = [{"op": "linear", "in": d, "out": 1}]
        if kind == "logistic_regression":
            layers.append({"op": "sigmoid"})
        weights = [est.secret_coef_.reshape(d, 1), est.secret_intercept_.reshape(1)]
    return SecretModel(name, kind, layers, weights, dict(info or {}))


def _public(session, model: SecretModel, model_id: str) -> dict[str, Any]:
    """The part of the header every party of the model shares (not ``party``)."""
    return {
        "format": FORMAT,
        "model": model.name,
        "kind": model.kind,
        "layers": model.layers,
        "tensors": [{"shape": list(w.shape), "frac": w.frac, "bound": w.bound} for w in model.weights],
        "protocol": session.protocol_name,
        "compute": list(session.compute_parties),
        "frac_bits": session.frac_bits,
        "model_id": model_id,
        "info": model.info,
    }


def _digest(public: dict[str, Any]) -> np.ndarray:
    blob = json.dumps(public, sort_keys=True, separators=(",", ":")).encode()
    return np.frombuffer(hashlib.sha256(blob).digest(), dtype=np.uint8).copy()


def save_model(session, model: SecretModel, store_dir: str | Path, key_dir: str | Path) -> dict[str, Any]:
    """Every party of the session: each compute party writes its shares of ``model`` to
    ``store_dir/NAME.PARTY.shares`` under its key in ``key_dir``. The first compute party
    draws the model id (16 random bytes) and sends it to the others (one round). Returns
    ``{"model", "model_id", "path", "bytes", "seconds"}`` (``path`` None at parties that hold
    no shares)."""
    check_name(model.name)
    t0 = time.perf_counter()
    me, compute = session.party, session.compute_parties
    first = compute[0]
    if me == first:
        mid = os.urandom(16)
        session.net.exchange({p: [np.frombuffer(mid, np.uint8).copy()] for p in session.parties if p != me})
    else:
        mid = session.net.exchange(recv_from=[first])[first][0].astype(np.uint8).tobytes()
    out: dict[str, Any] = {"model": model.name, "model_id": mid.hex(), "path": None, "bytes": 0}
    if me in compute:
        header = {
            **_public(session, model, mid.hex()),
            "party": me,
            "components": model.weights[0].shares.shape[0],
        }
        path = model_file(store_dir, model.name, me)
        out["bytes"] = write_shares(path, party_key(key_dir, me), header, [w.shares for w in model.weights])
        out["path"] = str(path)
    out["seconds"] = time.perf_counter() - t0
    return out


def load_model(session, store_dir: str | Path, name: str, key_dir: str | Path | None = None) -> SecretModel:
    """Every party of the session: model ``name`` as secret tensors of ``session``. Compute
    parties read and decrypt their file (key in ``key_dir``, default ``store_dir``'s own
    ``keys`` folder); the first sends the public header to the other parties and every compute
    party checks it against its own (one round): a file of another model, party, protocol,
    set of compute parties or fixed-point setting is refused, naming the party and the file."""
    check_name(name)
    me, compute = session.party, session.compute_parties
    first = compute[0]
    public = arrays = None
    if me in compute:
        path = model_file(store_dir, name, me)
        key = party_key(Path(store_dir) / "keys" if key_dir is None else key_dir, me, create=False)
        expect = {
            "format": FORMAT, "model": name, "party": me, "protocol": session.protocol_name,
            "compute": list(compute), "frac_bits": session.frac_bits,
        }  # fmt: skip
        header, arrays = read_shares(path, key, me, expect)
        public = {k: v for k, v in header.items() if k not in ("party", "components")}
    others = [p for p in session.parties if p != me]
    if me == first:
        blob = np.frombuffer(json.dumps(public, sort_keys=True).encode(), np.uint8).copy()
        session.net.exchange({p: [blob, _digest(public)] for p in others})
    else:
        got = session.net.exchange(recv_from=[first])[first]
        theirs = json.loads(got[0].astype(np.uint8).tobytes())
        if public is None:
            public = theirs
        elif not np.array_equal(_digest(public), got[1]):
            diff = sorted(k for k in public if public.get(k) != theirs.get(k))
            raise ModelStoreError(
                f"party {me!r}: its model file {model_file(store_dir, name, me)} differs from party "
                f"{first!r}'s in {diff} (shares of different saves of {name!r} cannot be combined)"
            )
    if arrays is None:
        arrays = [session.protocol.empty(tuple(t["shape"])) for t in public["tensors"]]
    weights = [
        SecretTensor(session, a, int(t["frac"]), t["bound"]) for a, t in zip(arrays, public["tensors"])
    ]
    return SecretModel(public["model"], public["kind"], public["layers"], weights, public.get("info", {}))
