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
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covault.errors import BoundError
from covault.nn import Linear, ReLU, Sequential, Sigmoid, Softmax
from covault.nn.module import Module
from covault.serving.keys import party_key
from covault.serving.store import ModelStoreError, check_name, model_file, read_shares, write_shares
from covault.tensor import SecretTensor

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax")
OUTPUTS = ("scores", "logits", "decision")
FSS_MODES = ("auto", "all", "off")
FSS_ELEMENTS = 64  # the most elements a ReLU, sigmoid or decision takes the FSS gates for
FSS_DECISIONS = 1  # fss="auto": the most elements a decision on the rows' score takes the FSS gate for
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
    linear layer; ``info``: public facts (the job's model inputs and preprocessing, the source);
    ``header``: the public header :func:`load_model` authenticated (empty otherwise)."""

    name: str
    kind: str
    layers: list[dict[str, Any]]
    weights: list[SecretTensor]
    info: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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

    def forward(
        self,
        x: SecretTensor,
        *,
        output: str = "scores",
        threshold: float | None = None,
        scores: bool | None = None,
        fss: str = "auto",
    ) -> SecretTensor:
        """Secret outputs for the secret rows ``x`` (n, n_features).

        ``output``: ``"scores"`` (probabilities after a final sigmoid or softmax; the
        predictions of a regressor), ``"logits"`` (before them) or ``"decision"`` (a
        classifier's class: ``probability > threshold`` (default 0.5) for a sigmoid or a
        two-class softmax, the first largest logit's index otherwise). A decision never
        computes the final activation: its last linear layer keeps the product's fractional
        bits (:func:`~covault.serving.online.affine`, no truncation) and one comparison of
        the margin ``logit - logit(threshold)`` decides; a two-class softmax is computed as the
        sigmoid of the margin. ``fss``: where the one- and two-round FSS gates of
        :mod:`covault.ops.fss` replace the generic ones, on tensors of at most
        :data:`FSS_ELEMENTS` elements in 2pc with a dealer (:func:`_fss`): ``"auto"`` for
        sigmoids (2 rounds against 16, within 1e-3 against 2.1e-4) and a single row's decision
        on a linear model's score (1 round against 4), ``"all"`` for ReLU and every decision
        too (1 round against 4, at more CPU: for networks whose round trip costs more than
        about 0.3 ms), ``"off"`` for none (docs/serving.md, "Online
        cost"). Every party must pass the same. Logistic and linear regression give shape (n,), like the
        job's ONNX model; a decision is an integer class of shape (n,). ``scores=False`` is
        ``output="logits"`` (older callers)."""
        from covault.ops.compare import fuses_trunc, relu_trunc
        from covault.serving.online import affine

        if scores is not None:
            output = "scores" if scores else "logits"
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ModelStoreError(
                f"model {self.name!r} takes rows of {self.n_features} features, got {x.shape}"
            )
        final = self.layers[-1]["op"] if self.layers[-1]["op"] in ("sigmoid", "softmax") else None
        width = int([la for la in self.layers if la["op"] == "linear"][-1]["out"])
        margin = _check_output(self.name, output, threshold, final, width)
        if fss not in FSS_MODES:
            raise ModelStoreError(f"model {self.name!r}: fss must be one of {FSS_MODES}, got {fss!r}")
        # a softmax over two classes is the sigmoid of the margin z1 - z0: one comparison
        # (or one sigmoid) on one column instead of the softmax's exponentials and reciprocal
        pair = final == "softmax" and width == 2 and output != "logits"
        body = self.layers[:-1] if final else self.layers
        last = max(i for i, la in enumerate(body) if la["op"] == "linear")
        direct = last == len(body) - 1  # the final activation takes the last layer's outputs
        weights = iter(self.weights)
        h = x
        fused = None  # a hidden layer's relu that takes its truncation with it
        for i, layer in enumerate(body):
            op = layer["op"]
            if op == "linear":
                w, b = next(weights), next(weights)
                if i == last and pair and direct:  # two classes: the margin of class 1
                    w, b = w[:, 1:2] - w[:, 0:1], b[1:2] - b[0:1]
                exact = i == last and output == "decision"  # a decision's last layer: no rounding
                size = h.shape[0] * w.shape[-1]
                # a generic relu after a layer takes the layer's truncation into its
                # comparison's first round (where fss="all" would take the FSS gate, it stays)
                fuse = (
                    not exact
                    and i + 1 < len(body)
                    and body[i + 1]["op"] == "relu"
                    and fuses_trunc(x.proto, size)
                    and (fss != "all" or size > FSS_ELEMENTS)
                )
                h = affine(h, w, b, exact=exact or fuse)
                if fuse:
                    fused = i + 1
                    h = relu_trunc(h, h.frac - x.session.frac_bits)
            elif i != fused:
                h = _activation(op, h, fss)
        if pair and not direct:  # an activation after the last layer: the margin of its outputs
            h = h[:, 1:2] - h[:, 0:1]
        if output == "scores" and pair:
            p1 = _activation("sigmoid", h, fss)
            h = np.concatenate([1 - p1, p1], axis=-1)
        elif output == "scores" and final is not None:
            h = _activation(final, h, fss)
        elif output == "decision":
            h = _decide(h, margin, threshold, fss, hidden=last > 0)
        if self.kind in ("logistic_regression", "linear_regression") or output == "decision":
            h = h.reshape(h.shape[0])
        return h

    __call__ = forward


def _check_output(name: str, output: str, threshold: float | None, final: str | None, width: int) -> bool:
    """ModelStoreError naming the model unless ``output`` (and ``threshold``) suit it; True
    where the decision compares one margin (a sigmoid, or a softmax over two classes)."""
    if output not in OUTPUTS:
        raise ModelStoreError(f"model {name!r}: output must be one of {OUTPUTS}, got {output!r}")
    margin = (final == "sigmoid" and width == 1) or (final == "softmax" and width == 2)
    if output != "decision":
        if threshold is not None:
            raise ModelStoreError(f"model {name!r}: a threshold applies to output='decision' only")
        return False
    if final is None:
        raise ModelStoreError(
            f"model {name!r}: a decision needs a classifier (a final sigmoid or softmax); "
            "this model predicts values"
        )
    if threshold is not None:
        if not margin:
            raise ModelStoreError(
                f"model {name!r}: a threshold needs one probability (a sigmoid, or a softmax over "
                f"two classes); this model has {width} classes: its decision is the argmax"
            )
        if not (isinstance(threshold, int | float) and 0.0 < float(threshold) < 1.0):
            raise ModelStoreError(
                f"model {name!r}: threshold must be a probability in (0, 1), got {threshold!r}"
            )
    return margin


def _fss(x: SecretTensor, mode: str, op: str):
    """:mod:`covault.ops.fss` where it serves ``x`` best, else None: 2pc with a dealer, a public
    bound within the gates' domain, and at most :data:`FSS_ELEMENTS` elements. A comparison
    gate saves three rounds (0.1-0.3 ms each on loopback TLS) against the generic comparison
    (4 rounds with the radix-4 carry tree), the sigmoid's gate 14, but costs the dealer key
    generation (0.11-0.16 ms for one element on 32 bits, 20-40 us per element from 64
    elements) against about 1 us per element for the generic comparison
    (``benchmarks/results/fss.txt``): single rows take the gates, batches the generic
    comparisons. ``mode`` (:meth:`SecretModel.forward`'s ``fss``) and ``op`` say which gates
    are wanted: ``"auto"`` takes the sigmoid, and the ``"decision"`` on a linear model's score
    (no hidden layer) for at most :data:`FSS_DECISIONS` element (docs/serving.md, "Online
    cost": faster at p50 for the logistic regression's decision; the MLP's decision, ``op``
    ``"positive"``, was not). The choice depends on public shapes, bounds and arguments only:
    every party makes the same."""
    from covault.ops import fss

    if mode == "off" or (mode == "auto" and op not in ("sigmoid", "decision")):
        return None
    if mode == "auto" and op == "decision" and x.size > FSS_DECISIONS:
        return None
    if x.size > FSS_ELEMENTS or not fss.available(x):
        return None
    try:
        fss.domain_bits(x, "choice")
    except BoundError:
        return None
    return fss


def _activation(op: str, h: SecretTensor, mode: str) -> SecretTensor:
    if op == "relu":
        fast = _fss(h, mode, op)
        return fast.relu(h) if fast else h.relu()
    if op == "softmax":
        return h.softmax(axis=-1)
    if op == "sigmoid":
        fast = _fss(h, mode, op)
        return fast.sigmoid(h) if fast else h.sigmoid()
    return h.tanh()


def _decide(
    h: SecretTensor, margin: bool, threshold: float | None, mode: str, *, hidden: bool
) -> SecretTensor:
    """The class from the last layer's outputs ``h`` (fractional bits kept): ``margin > logit(t)``
    for one margin, else the index of the first largest output. ``hidden``: the model has
    layers before its last linear one (:func:`_fss`'s ``"auto"`` rule)."""
    if not margin:
        onehot = h.argmax(axis=-1)
        return (onehot * np.arange(h.shape[-1], dtype=np.int64)).sum(axis=-1)
    t = 0.5 if threshold is None else float(threshold)
    if t != 0.5:
        h = h - math.log(t / (1.0 - t))
    fast = _fss(h, mode, "positive" if hidden else "decision")
    return fast.positive(h) if fast else h > 0


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
    return SecretModel(
        public["model"], public["kind"], public["layers"], weights, public.get("info", {}), header=public
    )
