"""Secret-share a plaintext model held by one party (``covault model import``).

The owner announces the public layer list and the model name (one round), then
secret-shares every weight and bias (``session.input``: the other parties never see them);
each compute party stores its shares with :func:`covault.serving.model.save_model`. A model
owner that is not a compute party keeps nothing but its file. The owner's answer policy
(:mod:`covault.serving.policy`: scores, or the decision alone) travels in the announced public
part and is stored in every compute party's authenticated header; every party checks it
against the layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from covault.serving.formats import PlainModel
from covault.serving.model import SecretModel, check_layers, save_model
from covault.serving.policy import check_answer, make_answer
from covault.serving.store import ModelStoreError, check_name


def import_model(
    session,
    owner: str,
    plain: PlainModel | None,
    store_dir: str | Path,
    key_dir: str | Path,
    *,
    name: str | None = None,
    info: dict[str, Any] | None = None,
    answer: str | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Every party: ``owner`` passes ``plain`` (others None) and the model ``name``; the others
    may pass ``name`` to check it. ``answer`` and ``threshold``: the owner's policy, what a
    client of the model receives (:func:`~covault.serving.policy.make_answer`; default scores);
    the others may pass them to check it. Returns :func:`save_model`'s dict with ``layers`` and
    ``answer`` added."""
    me = session.party
    session.check_party(owner, "model owner")
    if me == owner:
        if plain is None or name is None:
            raise ModelStoreError(f"party {owner!r} owns the model: it passes the model file and its name")
        check_name(name)
        check_layers(plain.layers, [w.shape for w in plain.weights], name)
        policy = make_answer(answer or "scores", threshold, plain.layers, name)
        public = {"model": name, "layers": plain.layers, "info": {**(info or {}), "answer": policy}}
        blob = np.frombuffer(json.dumps(public).encode(), np.uint8).copy()
        session.net.exchange({p: [blob] for p in session.parties if p != me})
    else:
        if plain is not None:
            raise ModelStoreError(f"party {me!r} passed a model file, but the model is {owner!r}'s")
        got = session.net.exchange(recv_from=[owner])[owner][0]
        public = json.loads(got.astype(np.uint8).tobytes())
        if name is not None and name != public["model"]:
            raise ModelStoreError(
                f"party {me!r} imports model {name!r}, the owner {owner!r} names it {public['model']!r}"
            )
        policy = check_answer(public["info"], public["layers"], public["model"])
        if answer is not None and policy != make_answer(answer, threshold, public["layers"], public["model"]):
            raise ModelStoreError(
                f"party {me!r} imports model {public['model']!r} answering {answer!r}"
                f"{'' if threshold is None else f' at {threshold:g}'}, the owner {owner!r} sets {policy}"
            )
        public["info"]["answer"] = policy
    weights = []
    for i, layer in enumerate(x for x in public["layers"] if x["op"] == "linear"):
        for j, shape in enumerate([(layer["in"], layer["out"]), (layer["out"],)]):
            value = plain.weights[2 * i + j] if me == owner else None
            weights.append(session.input(value, owner=owner))
            if weights[-1].shape != shape:
                raise ModelStoreError(f"model {public['model']!r}: the owner shared a tensor of shape "
                                      f"{weights[-1].shape}, its layers need {shape}")  # fmt: skip
    model = SecretModel(public["model"], "sequential", public["layers"], weights, public["info"])
    out = save_model(session, model, store_dir, key_dir)
    return {**out, "layers": public["layers"], "answer": public["info"]["answer"]}
