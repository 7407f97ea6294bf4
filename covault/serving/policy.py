"""The model owner's answer policy: what a client of a secret model receives.

The policy is ``info["answer"]`` in the model's public header, authenticated with the rest of
it (:mod:`covault.serving.store`): ``{"output": "scores"}`` (probabilities, or a regressor's
predictions; the default where a header has no policy) or ``{"output": "decision",
"threshold": T}`` (the class alone: ``P(class 1) > T`` for a sigmoid or a two-class softmax;
a softmax over more classes has no threshold and answers the first largest probability's
index). ``covault model import --answer`` and the job key ``answer`` set it; the compute
parties compute only what it allows (:meth:`~covault.serving.model.SecretModel.forward` with
:func:`forward_args`), so a client never receives a probability the owner withholds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from covault.serving.store import ModelStoreError

ANSWERS = ("scores", "decision")
DEFAULT_THRESHOLD = 0.5


def make_answer(
    output: str, threshold: float | None, layers: Sequence[Mapping[str, Any]], name: str
) -> dict[str, Any]:
    """The policy ``{"output", "threshold"?}`` for a model of ``layers``, or ModelStoreError
    naming the model: ``decision`` needs a classifier (a final sigmoid or softmax), a threshold
    needs ``decision`` and one probability (a sigmoid or a two-class softmax) and lies in (0, 1);
    a decision on one probability without a threshold takes 0.5."""
    if output not in ANSWERS:
        raise ModelStoreError(f"model {name!r}: answer must be one of {ANSWERS}, got {output!r}")
    if output == "scores":
        if threshold is not None:
            raise ModelStoreError(f"model {name!r}: a threshold applies to answer 'decision' only")
        return {"output": "scores"}
    final = layers[-1].get("op") if layers else None
    if final not in ("sigmoid", "softmax"):
        raise ModelStoreError(
            f"model {name!r}: answer 'decision' needs a classifier (a final sigmoid or softmax); "
            "this model predicts values"
        )
    if not takes_threshold(layers):
        if threshold is not None:
            width = int([la for la in layers if la.get("op") == "linear"][-1]["out"])
            raise ModelStoreError(
                f"model {name!r}: a threshold needs one probability (a sigmoid or a softmax over two "
                f"classes); this model has {width} classes and answers the argmax"
            )
        return {"output": "decision"}
    t = DEFAULT_THRESHOLD if threshold is None else _probability(threshold, name)
    return {"output": "decision", "threshold": t}


def takes_threshold(layers: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a decision of the model of ``layers`` compares one probability with a threshold
    (a final sigmoid of one output, or a softmax over two), rather than taking the argmax."""
    linear = [la for la in layers if la.get("op") == "linear"]
    if not linear or layers[-1].get("op") not in ("sigmoid", "softmax"):
        return False
    width = int(linear[-1]["out"])
    return width == (1 if layers[-1]["op"] == "sigmoid" else 2)


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelStoreError(
            f"model {name!r}: the answer's threshold must be a finite number, got {value!r}"
        )
    if not 0.0 < float(value) < 1.0:
        raise ModelStoreError(
            f"model {name!r}: the answer's threshold {value!r} is outside the model's probabilities (0, 1)"
        )
    return float(value)


def check_answer(info: Mapping[str, Any], layers: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
    """The policy in ``info`` (the default ``scores`` where none is given), checked against the
    model's ``layers`` as :func:`make_answer` checks it."""
    policy = _policy(info, name)
    return make_answer(policy["output"], policy.get("threshold"), layers, name)


def _policy(info: Mapping[str, Any], name: str) -> dict[str, Any]:
    raw = info.get("answer") if isinstance(info, Mapping) else None
    if raw is None:
        return {"output": "scores"}
    if not isinstance(raw, Mapping) or set(raw) - {"output", "threshold"} or raw.get("output") not in ANSWERS:
        raise ModelStoreError(
            f"model {name!r}: its header's answer policy {raw!r} is malformed "
            '(expected {"output": "scores"} or {"output": "decision", "threshold": T})'
        )
    out = {"output": raw["output"]}
    if raw.get("threshold") is not None:
        if raw["output"] != "decision":
            raise ModelStoreError(f"model {name!r}: a threshold applies to answer 'decision' only")
        out["threshold"] = _probability(raw["threshold"], name)
    return out


def answer_of(info: Mapping[str, Any], name: str = "?") -> str:
    """``"scores"`` or ``"decision"``: what the owner of the model with header ``info`` lets a
    client receive (ModelStoreError naming the model for a malformed policy, never a silent
    ``scores``)."""
    return _policy(info, name)["output"]


def threshold_of(info: Mapping[str, Any], name: str = "?") -> float | None:
    """The decision's probability threshold (None: scores, or the argmax of several classes)."""
    return _policy(info, name).get("threshold")


def forward_args(info: Mapping[str, Any], name: str = "?") -> dict[str, Any]:
    """Keyword arguments of :meth:`~covault.serving.model.SecretModel.forward` that compute the
    answer the policy allows: ``{"output": ...}`` and, for a thresholded decision, ``threshold``."""
    policy = _policy(info, name)
    return {
        "output": policy["output"],
        **({"threshold": policy["threshold"]} if "threshold" in policy else {}),
    }
