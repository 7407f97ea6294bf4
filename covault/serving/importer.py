"""Secret-share a plaintext model held by one party (``covault model import``).

The owner announces the public layer list and the model name (one round), then
secret-shares every weight and bias (``session.input``: the other parties never see them);
each compute party stores its shares with :func:`covault.serving.model.save_model`. A model
owner that is not a compute party keeps nothing but its file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from covault.serving.formats import PlainModel
from covault.serving.model import SecretModel, check_layers, save_model
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
) -> dict[str, Any]:
    """Every party: ``owner`` passes ``plain`` (others None) and the model ``name``; the others
    may pass ``name`` to check it. Returns :func:`save_model`'s dict with ``layers`` added."""
    me = session.party
    session.check_party(owner, "model owner")
    if me == owner:
        if plain is None or name is None:
            raise ModelStoreError(f"party {owner!r} owns the model: it passes the model file and its name")
        check_name(name)
        check_layers(plain.layers, [w.shape for w in plain.weights], name)
        public = {"model": name, "layers": plain.layers, "info": dict(info or {})}
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
    weights = []
    for i, layer in enumerate(x for x in public["layers"] if x["op"] == "linear"):
        for j, shape in enumerate([(layer["in"], layer["out"]), (layer["out"],)]):
            value = plain.weights[2 * i + j] if me == owner else None
            weights.append(session.input(value, owner=owner))
            if weights[-1].shape != shape:
                raise ModelStoreError(f"model {public['model']!r}: the owner shared a tensor of shape "
                                      f"{weights[-1].shape}, its layers need {shape}")  # fmt: skip
    model = SecretModel(public["model"], "sequential", public["layers"], weights, public["info"])
    return {**save_model(session, model, store_dir, key_dir), "layers": public["layers"]}
