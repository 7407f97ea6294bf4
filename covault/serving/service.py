"""A long-lived private inference service: one session of the compute parties (and the 2pc
dealer) with one client party, answering its queries (``docs/serving.md``, "Service").

The session's parties are the config's compute parties, its dealer and the client alone (the
config's other data parties take no part); its id binds the model's name, so that a client and
a service of different models refuse each other. Every party loads the model (the client: its
public header only). Per query the client sends each serving party one public word, the number
of rows (0: the client is done), then :class:`~covault.serving.online.Query` shares the rows
and opens the answer to the client alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from covault.errors import ProtocolError, ShapeError
from covault.serving.model import SecretModel
from covault.serving.online import MAX_ROWS, Query

IDLE = 86400.0  # seconds a service waits for the client's next query


def service_config(config, client: str | None = None):
    """``config`` restricted to its compute parties, dealer and the client (default: its only
    data party); ConfigError naming the party where ``client`` is not a data party."""
    from covault.deploy.config import ConfigError

    data = config.data
    if client is None:
        if len(data) != 1:
            raise ConfigError(f"config {config.path}: name the client party (data parties: {list(data)})")
        client = data[0]
    if client not in data:
        raise ConfigError(
            f"client {client!r} must be a data party of the config (data parties: {list(data)}; "
            f"compute parties and the dealer serve)"
        )
    keep = {n: p for n, p in config.parties.items() if n not in data or n == client}
    return dataclasses.replace(config, parties=keep)


def session_job(model: str) -> str:
    """The job part of the service session's id: the parties agree on the model's name."""
    return f"covault serve {model}"


def serving_parties(session) -> list[str]:
    return [*session.compute_parties, *((session.dealer,) if session.dealer else ())]


def check_rows(session, model: SecretModel, rows: Any, client: str) -> np.ndarray:
    """The client's rows as an ``(n, features)`` float64 array, or ShapeError / EncodingError
    naming the client, the model and the problem (width, NaN or inf, fixed-point range)."""
    what = f"query of client {client!r} to model {model.name!r}"
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{what}: rows must be numbers: {exc}") from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != model.n_features or not 0 < arr.shape[0] <= MAX_ROWS:
        raise ShapeError(
            f"{what}: rows must have shape (n, {model.n_features}) with 1 <= n <= {MAX_ROWS}, got {arr.shape}"
        )
    session.fxp.encode(arr, what=what)  # NaN, inf, out of range: raised here, nothing sent
    return arr


def announce(session, rows: int) -> None:
    """At the client: the next query's row count (0: done) to every serving party."""
    session.net.exchange({p: [np.array([rows], dtype=np.int64)] for p in serving_parties(session)})


def next_query(session, client: str, idle: float) -> int:
    """At a serving party: wait up to ``idle`` seconds for the client's next row count."""
    net = session.net
    timeout, net.timeout = net.timeout, float(idle)
    try:
        word = net.exchange(recv_from=[client])[client][0]
    finally:
        net.timeout = timeout
    if word.shape != (1,) or not 0 <= int(word[0]) <= MAX_ROWS:
        raise ProtocolError(f"client {client!r} announced a query of {word.tolist()} rows (0 to {MAX_ROWS})")
    return int(word[0])


def serve(session, model: SecretModel, client: str, *, idle: float = IDLE, pool: bool = True) -> int:
    """At every serving party: answer the client's queries until it says it is done; the
    number of queries answered. ``pool``: the 2pc dealer deals each next query ahead."""
    answered = 0
    with Query(session, client, model.n_features, model.forward, pool=pool) as query:
        while next_query(session, client, idle):
            query(None)
            answered += 1
    return answered


def serve_party(
    config,
    name: str,
    model: str,
    *,
    client: str | None = None,
    model_dir=None,
    idle: float = IDLE,
    transcript_dir=None,
) -> dict[str, Any]:
    """Party ``name`` (a compute party or the dealer) of ``config`` serves ``model`` to the
    client until it is done: ``{"party", "model", "client", "queries"}``. ``transcript_dir``:
    record every message it sends (:mod:`covault.transport.transcript`)."""
    from covault.deploy.config import ConfigError
    from covault.runtime import config_session
    from covault.serving.keys import store_folders
    from covault.serving.model import load_model

    restricted = service_config(config, client)
    client = restricted.data[0]
    if name == client:
        raise ConfigError(f"party {name!r} is the client: it queries the service (covault predict)")
    folder, keys = store_folders(config, model_dir)
    job = session_job(model)
    with config_session(restricted, name, job=job, transcript_dir=transcript_dir) as session:
        secret = load_model(session, folder, model, key_dir=keys)
        queries = serve(session, secret, client, idle=idle)
    return {"party": name, "model": model, "client": client, "queries": queries}
