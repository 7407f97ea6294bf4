"""A long-lived private inference service for many clients (``docs/serving.md``, "Service").

The serving parties (the config's compute parties and its 2pc dealer) keep one session among
themselves, whose id binds the model's name, and run :func:`~covault.serving.batcher.
run_batches` in it; each compute party also opens its front door
(:class:`~covault.serving.frontdoor.FrontDoor`) where clients, data parties of the config,
send their shares of each query and receive their shares of its answer. When a serving party
stops, every pending query fails at its client naming that party; the others re-open the
session (waiting up to ``rejoin`` seconds for the party to come back), load the model again
and check that it is the same save, then serve again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from covault.errors import PeerError, ShapeError
from covault.serving.online import MAX_ROWS

IDLE = 86400.0  # seconds a one-client service waits for the client's next query
RETRY = 0.2  # seconds between attempts to re-open the session
log = logging.getLogger("covault.serving")


def service_config(config, client: str | None = None):
    """``config`` restricted to its compute parties and dealer (the serving parties), after
    checking that ``client`` (if given) is a data party; ConfigError naming it otherwise."""
    from covault.deploy.config import ConfigError

    if client is not None and client not in config.data:
        raise ConfigError(
            f"client {client!r} must be a data party of the config (data parties: {list(config.data)}; "
            f"compute parties and the dealer serve)"
        )
    keep = {n: p for n, p in config.parties.items() if n not in config.data}
    return dataclasses.replace(config, parties=keep)


def session_job(model: str) -> str:
    """The job part of the service session's id: the parties agree on the model's name."""
    return f"covault serve {model}"


def check_rows(fxp, model: Any, rows: Any, client: str) -> np.ndarray:
    """The client's rows as an ``(n, features)`` float64 array, or ShapeError / EncodingError
    naming the client, the model and the problem (width, NaN or inf, fixed-point range).
    ``fxp``: the service's :class:`~covault.encoding.FixedPoint`."""
    what = f"query of client {client!r} to model {model.name!r}"
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ShapeError(f"{what}: rows must be numbers: {exc}") from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != model.n_features or not 0 < arr.shape[0] <= MAX_ROWS:
        raise ShapeError(
            f"{what}: rows must have shape (n, {model.n_features}) with 1 <= n <= {MAX_ROWS}, got {arr.shape}"
        )
    fxp.encode(arr, what=what)  # NaN, inf, out of range: raised here, nothing sent
    return arr


@dataclasses.dataclass
class _State:
    """What one party keeps across sessions: the model's id, the answered count, its door."""

    door: Any = None
    max_query_rows: int | None = None
    model_id: str | None = None
    answered: int = 0  # over every session of the service (counted batch by batch)
    batch: list[Any] = dataclasses.field(default_factory=list)

    def count(self, answered: int) -> None:
        self.answered += answered


def serve_party(
    config,
    name: str,
    model: str,
    *,
    client: str | None = None,
    many: bool = False,
    model_dir=None,
    idle: float = IDLE,
    rejoin: float | None = None,
    share_wait: float = 2.0,
    max_rows: int | None = None,
    max_query_rows: int | None = None,
    transcript_dir=None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Party ``name`` (a compute party or the dealer) of ``config`` serves ``model``.

    ``many``: every data party of the config may query, until ``stop()`` is true (covault
    serve: SIGTERM). Otherwise one client, ``client`` (default: the config's only data party),
    and the service ends when it is done, or after ``idle`` seconds without a query. ``rejoin``
    (default: the config's timeout): how long the others wait for a stopped serving party to
    come back before they stop too, with the PeerError naming it. ``max_query_rows``: rows of
    one query (default :data:`~covault.serving.frontdoor.MAX_QUERY_ROWS`; a larger one is
    refused to its client). ``share_wait``: how long a query may wait for its shares to reach
    every compute party (:mod:`~covault.serving.batcher`: announced again meanwhile, while the
    other queries go on) before it fails naming the party that lacks them. Another error while a batch runs (out of memory, a malformed
    message) fails that batch's queries naming this party, and the session is opened again.
    Returns ``{"party", "model", "client" (None with ``many``), "queries"}``."""
    from covault.deploy.config import ConfigError

    if name in config.data:
        raise ConfigError(f"party {name!r} is a client: it queries the service (covault predict)")
    if name not in config.parties:
        raise ConfigError(f"party {name!r} is not in the config (parties: {sorted(config.parties)})")
    if not 0 <= share_wait < float("inf"):
        raise ConfigError(
            f"party {name!r}: the share wait must be a finite number of seconds >= 0, got {share_wait}"
        )
    if not many:
        if client is None:
            if len(config.data) != 1:
                raise ConfigError(
                    f"config {config.path}: name the client party (data parties: {list(config.data)})"
                )
            client = config.data[0]
        service_config(config, client)
    clients = sorted(config.data) if many else [client]
    rejoin = config.timeout if rejoin is None else float(rejoin)
    state = _State(max_query_rows=max_query_rows)
    asked = stop or (lambda: False)
    last = [time.monotonic()]

    def ending() -> bool:
        if asked():
            return True
        if many or state.door is None:
            return False
        if state.door.said_bye(client):
            return True
        return time.monotonic() - last[0] > idle

    def on_batch(batch: list[Any]) -> None:
        state.batch = batch
        if batch:
            last[0] = time.monotonic()

    try:
        _serve_sessions(
            config, name, model, clients, state, model_dir, transcript_dir, rejoin,
            dict(share_wait=share_wait, stop=ending, leave=asked, on_batch=on_batch, **({"max_rows": max_rows} if max_rows else {})),
        )  # fmt: skip
    finally:
        if state.door is not None:
            state.door.close()
    return {"party": name, "model": model, "client": None if many else client, "queries": state.answered}


def _serve_sessions(config, name, model, clients, state, model_dir, transcript_dir, rejoin, kw) -> None:
    """Open the session, serve; on a stopped party fail the pending queries and re-open."""
    from covault.runtime import config_session
    from covault.serving.batcher import run_batches
    from covault.serving.keys import store_folders
    from covault.serving.model import load_model
    from covault.serving.policy import forward_args

    restricted = service_config(config)
    folder, keys = store_folders(config, model_dir)
    job = session_job(model)
    lost: PeerError | None = None
    deadline = time.monotonic() + config.timeout  # the first set-up: refusals retried meanwhile
    while True:
        opened = serving = False
        try:
            with config_session(restricted, name, job=job, transcript_dir=transcript_dir) as session:
                opened = True
                secret = load_model(session, folder, model, key_dir=keys)
                if name in session.compute_parties:
                    _check_same(state, config, folder, model, name, session, clients, secret)
                if lost is not None:
                    log.warning("party %r: the service of model %r is back after %s", name, model, lost)
                lost = None
                serving = True
                run_batches(
                    session,
                    secret,
                    state.door,
                    clients,
                    forward=forward_args(secret.info, secret.name),
                    on_answered=state.count,
                    **kw,
                )
                if kw["leave"]() and name != session.compute_parties[0]:
                    _say_stopped(session, name)
                return
        except Exception as exc:
            if not isinstance(exc, PeerError) and not serving:
                raise  # a model, key or config problem: the service cannot start
            if not isinstance(exc, PeerError):
                log.error("party %r: a batch failed here (%s: %s)", name, type(exc).__name__, exc)
                exc = PeerError(name, f"a batch failed ({type(exc).__name__}: {exc})")
            if state.door is not None:
                why = f"serving party {exc.party!r} stopped ({exc})"
                for p in state.batch:
                    state.door.fail(p, exc.party, why)
                state.batch = []
                n = state.door.fail_all(exc.party, why)
                log.warning("party %r: %s; %d pending queries failed", name, why, n)
            if kw["leave"]():
                return  # this party is stopping anyway (SIGTERM): no session to re-open
            if opened:
                lost = exc
                deadline = time.monotonic() + rejoin
            if time.monotonic() >= deadline:
                raise (lost or exc) from None
            log.warning("party %r: opening the service session again (%s)", name, lost or exc)
            time.sleep(RETRY)


def _say_stopped(session, name: str) -> None:
    """A party that leaves the service on SIGTERM or Ctrl-C tells the others why (its
    transport's abort frame), so that their logs and their clients' errors read as a stop, not
    as a crash."""
    abort = getattr(session.net.transport, "abort", None)
    if abort is not None:
        abort(f"party {name!r} was stopped by its operator (SIGTERM or Ctrl-C)")


def _check_same(state, config, folder, model, name, session, clients, secret) -> None:
    """The model id of every (re-)opened session must be the first one's; the front door opens
    with the first."""
    from covault.serving.frontdoor import FrontDoor
    from covault.serving.store import ModelStoreError
    from covault.serving.wire import door_address
    from covault.transport.tcp import open_listener
    from covault.transport.tls import TlsIdentity

    public = secret.header
    if state.model_id is not None:
        if public["model_id"] != state.model_id:
            raise ModelStoreError(
                f"party {name!r}: the re-opened service loaded model {model!r} of save {public['model_id']}, "
                f"not {state.model_id} as before"
            )
        return
    state.model_id = public["model_id"]
    host, port = door_address(config, name)
    tls = None if config.plaintext else TlsIdentity.from_dir(config.certs, name)
    components = int(session.protocol.empty((1,)).shape[0])
    blob = json.dumps(public, sort_keys=True).encode()
    listener = open_listener(host, port)
    state.door = FrontDoor(
        name, listener, tls, model, blob, clients, secret.n_features, components, stall=config.timeout,
        **({"max_query_rows": state.max_query_rows} if state.max_query_rows else {}),
    ).start()  # fmt: skip


def start_signal_stop() -> Callable[[], bool]:
    """A stop flag set by SIGTERM or SIGINT in the main thread (``covault serve``)."""
    import signal

    flag = threading.Event()

    def handler(signum, frame) -> None:
        flag.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return flag.is_set
