"""What one compute party sees when covault trains the model under MPC, read as an attacker.

:func:`train_under_mpc` runs covault's MLP training (the images' owner a data party, the
compute parties over TCP with mutual TLS, every message recorded by
:mod:`covault.transport.transcript`). :func:`party_view` collects every array one compute
party received (from any party), every array it sent (its own share-derived values), what the
two add up to where they open a value (same peer, round and shape) and its final shares.
:func:`candidates` turns that view into candidate images the most generous way an attacker
could: every array read as fixed-point values at 0, 16 and 32 fractional bits, cut into
64-pixel rows and columns, and every ``(64, h)`` array divided column-wise by every
``h``-vector (the analytic inversion of a first layer, as if the pair were its gradient).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from covault.privacy.attacks.digits import CLASSES, PIXELS

DATA_PARTY = "client"
FRAC_READINGS = (0, 16, 32)


def train_program(session, x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, batch: int, seed: int):
    """The covault program: ``client`` inputs its images and labels; the compute parties train
    an MLP 64 -> hidden -> 10 on them (SGD, no standardisation, the model kept secret); each
    compute party returns its shares of the trained weights (``None`` elsewhere)."""
    from covault.ml import MLPClassifier

    mine = session.party == DATA_PARTY
    xs = session.input(x if mine else None, owner=DATA_PARTY)
    ys = session.input(y if mine else None, owner=DATA_PARTY, integer=True)
    model = MLPClassifier(
        hidden=(hidden,),
        n_classes=CLASSES,
        epochs=epochs,
        batch_size=batch,
        learning_rate=0.1,
        momentum=0.0,
        standardize=False,
        shuffle="none",
        seed=seed,
    )
    model.fit(xs, ys)
    if session.party not in session.compute_parties:
        return None
    return [np.array(t.shares) for t in (*model.secret_coefs_, *model.secret_intercepts_)]


def train_under_mpc(
    x: np.ndarray,
    y: np.ndarray,
    directory: str | os.PathLike,
    *,
    protocol: str = "2pc",
    transport: str = "tcp",
    hidden: int = 32,
    epochs: int = 1,
    batch: int | None = None,
    seed: int = 0,
) -> dict:
    """Train under MPC with every party's transcript in ``directory``; ``{party: shares or None}``."""
    from covault import schemes
    from covault.runtime import run

    program = functools.partial(
        train_program,
        x=np.asarray(x, dtype=np.float64),
        y=np.asarray(y, dtype=np.int64),
        hidden=hidden,
        epochs=epochs,
        batch=batch or len(x),
        seed=seed,
    )
    n = schemes.get(protocol).parties
    return run(program, n, protocol, transport=transport, data_parties=[DATA_PARTY], transcript_dir=directory)


def party_view(directory: str | os.PathLike, party: str, shares: Iterable[np.ndarray] = ()) -> dict:
    """``{"received": [...], "sent": [...], "opened": [...], "shares": [...]}`` of ``party``
    (arrays in arrival order per sender, senders in name order) from the transcripts in ``directory``."""
    from covault.transport.transcript import SUFFIX, read_transcript

    received, sent, opened = [], [], []
    got: dict[tuple, list[np.ndarray]] = {}
    files = sorted(Path(directory).glob(f"*{SUFFIX}"))
    if not any(f.name == f"{party}{SUFFIX}" for f in files):
        raise FileNotFoundError(f"attack view: no transcript of party {party!r} in {directory}")
    for f in files:
        header, messages = read_transcript(f)
        sender = header["party"]
        for m in messages:
            if sender == party:
                sent += [(m["to"], m["round"], a) for a in m["arrays"]]
            elif m["to"] == party:
                received += m["arrays"]
                for a in m["arrays"]:
                    got.setdefault((sender, m["round"], a.shape, a.dtype.str), []).append(a)
    for peer, rnd, a in sent:  # an opening: what the peer sent back in the same round, same shape
        pile = got.get((peer, rnd, a.shape, a.dtype.str))
        if pile:
            opened.append(_ring(pile.pop(0)) + _ring(a))
    return {
        "received": received,
        "sent": [a for _, _, a in sent],
        "opened": opened,
        "shares": [np.asarray(s) for s in shares],
    }


def _ring(a: np.ndarray) -> np.ndarray:
    """Words of 8 bytes as int64 ring elements (bit patterns kept); narrower words as integers."""
    a = np.ascontiguousarray(a)
    return a.view(np.int64) if a.dtype.itemsize == 8 else a.astype(np.int64)


def _arrays(view: dict) -> list[np.ndarray]:
    """Every array of the view as ring elements; a share split into its components."""
    out = []
    for key in ("received", "sent", "opened", "shares"):
        for a in view[key]:
            r = _ring(a)
            out += list(r) if key == "shares" and r.ndim > 1 else [r]
    return out


def _minmax(c: np.ndarray) -> np.ndarray:
    lo, hi = c.min(axis=1, keepdims=True), c.max(axis=1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (c - lo) / span


def candidates(view: dict, hidden: int = 32) -> np.ndarray:
    """Every candidate image of the view (module docstring), each clipped to [0, 1] and, again,
    min-max scaled to [0, 1]: shape ``(k, 64)``."""
    rows, vectors, firsts = [], [], []
    for r in _arrays(view):
        real = r.astype(np.float64)
        flat = real.reshape(-1)
        if flat.size >= PIXELS:
            rows.append(flat[: flat.size // PIXELS * PIXELS].reshape(-1, PIXELS))
        if real.ndim >= 2 and real.shape[-2] == PIXELS:
            rows.append(np.moveaxis(real, -2, -1).reshape(-1, PIXELS))
            if real.shape[-1] == hidden:
                firsts += list(real.reshape(-1, PIXELS, hidden))
        if real.shape and real.shape[-1] == hidden and (real.ndim == 1 or real.shape[-2] < PIXELS):
            vectors.append(real.reshape(-1, hidden))
    raw = [np.concatenate(rows)] if rows else []
    out = [c * 2.0**-f for c in raw for f in FRAC_READINGS]
    if firsts and vectors:
        vec = np.concatenate(vectors)
        with np.errstate(all="ignore"):
            out += [(w.T[None, :, :] / vec[:, :, None]).reshape(-1, PIXELS) for w in firsts]
    if not out:
        return np.empty((0, PIXELS))
    c = np.nan_to_num(np.concatenate(out), nan=0.0, posinf=1.0, neginf=0.0)
    return np.concatenate([np.clip(c, 0.0, 1.0), _minmax(c)])


def gradient_guess(view: dict, hidden: int = 32) -> list[np.ndarray] | None:
    """The attacker's one reading of the view as the model's update, chosen without the
    originals: for each parameter the first array of its size it received (else opened, sent,
    or a component of its shares), weights read in covault's ``(in, out)`` layout at 16
    fractional bits, returned in torch's layout; None if the view has no array of some size."""
    pool = [_ring(a) for a in (*view["received"], *view["opened"], *view["sent"])]
    pool += [c for a in view["shares"] for c in _ring(a).reshape(-1, *np.shape(a)[1:])]
    pick = []
    for shape in [(PIXELS, hidden), (hidden,), (hidden, CLASSES), (CLASSES,)]:
        found = next((a for a in pool if a.size == int(np.prod(shape))), None)
        if found is None:
            return None
        g = found.astype(np.float64).reshape(shape) * 2.0**-16
        pick.append(g.T.copy() if g.ndim == 2 else g)
    return pick


def public_model(hidden: int = 32, seed: int = 0):
    """The model covault starts from, as torch float64: weights Glorot-uniform from the public
    seed (every party knows them), biases zero."""
    import torch

    from covault.ml import MLPClassifier
    from covault.privacy.attacks.model import mlp

    ws = MLPClassifier(hidden=(hidden,), n_classes=CLASSES, seed=seed)._init_weights(PIXELS)
    model = mlp(hidden)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, w in zip(linears, ws):
            layer.weight.copy_(torch.as_tensor(np.asarray(w, dtype=np.float64).T))
            layer.bias.zero_()
    return model
