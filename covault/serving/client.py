"""The client of a private inference service (``covault serve``): its rows in, its answers out.

``with Client(CONFIG, as_="bank_b", model="fraud") as c: c.predict(rows)`` connects to every
compute party's front door (:mod:`covault.serving.wire`, mutual TLS) and checks that they serve
the same save of the model (its public header). Each query's rows are read into the model's
inputs (:func:`~covault.serving.inputs.model_rows`) and checked (width, NaN or inf, fixed-point
range) before anything is sent; then the client secret-shares them itself (the layout of
``docs/architecture.md``, "Shares", from the CSPRNG), sends each compute party its share and
adds the parties' shares of the answer. A failed service raises PeerError naming the party; the
next ``predict`` connects again (or raises naming the party that is not back within the
timeout).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covault.encoding import FixedPoint
from covault.errors import CovaultError, PeerError, ProtocolError
from covault.randomness.prg import fresh_ring
from covault.serving.inputs import ModelInputs
from covault.serving.service import check_rows
from covault.serving.wire import (
    ANSWER,
    BYE,
    ERROR,
    HELLO_MAX,
    MAGIC,
    PEER,
    QUERY,
    Link,
    QueryRefused,
    Refused,
    door_address,
    op_of,
    text,
    untext,
)
from covault.transport.framing import FrameError
from covault.transport.handshake import prepare_socket
from covault.transport.transcript import TranscriptWriter


@dataclass
class ModelHeader:
    """The public header of a served model, as the client sees it (never a weight)."""

    name: str
    kind: str
    layers: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    model_id: str = ""
    frac_bits: int = 16

    @property
    def n_features(self) -> int:
        return int(self.layers[0]["in"])


class _Transcript(TranscriptWriter):
    """The client's transcript: every front-door message it sends."""

    def sent(self, peer: str, arrays: list[np.ndarray]) -> None:
        self._record("sent", peer, arrays)


class Client:
    """One client party of ``config`` (a path or a loaded consortium config) querying ``model``.
    ``timeout`` (default: the config's): seconds to connect and to wait for each answer;
    ``transcript_dir``: record every message it sends (:mod:`covault.transport.transcript`)."""

    def __init__(
        self,
        config: Any,
        *,
        as_: str,
        model: str,
        transcript_dir: Any = None,
        timeout: float | None = None,
    ) -> None:
        from covault.deploy.config import ConfigError, load_config

        self.config = load_config(config) if isinstance(config, str | Path) else config
        self.party, self.model_name, self.transcript_dir = as_, model, transcript_dir
        if as_ not in self.config.data:
            raise ConfigError(
                f"client {as_!r} must be a data party of the config (data parties: {list(self.config.data)}; "
                "compute parties and the dealer serve)"
            )
        self.timeout = float(self.config.timeout if timeout is None else timeout)
        self.model: Any = None
        self._inputs: Any = None
        self._links: dict[str, Link] | None = None
        self._caps: dict[str, int] = {}  # each front door's cap on a query's rows (its welcome)
        self._broken: PeerError | None = None
        self._qid = itertools.count(1)
        self._lock = threading.Lock()  # one query at a time on the links (predict from threads)
        self._fxp = FixedPoint(self.config.frac_bits)
        self._transcript: _Transcript | None = None
        self._tls: Any = None

    def __enter__(self) -> Client:
        from covault.transport.tls import TlsIdentity

        if not self.config.plaintext:
            self._tls = TlsIdentity.from_dir(self.config.certs, self.party)
        if self.transcript_dir is not None:
            self._transcript = _Transcript(
                self.transcript_dir, self.party, peers=list(self.config.compute), session="front door",
                protocol=self.config.protocol, tls=self._tls is not None,
            )  # fmt: skip
        try:
            self._connect()
        except BaseException:
            self._close_transcript()
            raise
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        links, self._links = self._links, None
        for link in (links or {}).values():
            with contextlib.suppress(OSError, ValueError):
                self._send(link, [np.array([BYE, 0], np.int64)])
                link.channel.close_write()
            link.close()
        self._close_transcript()

    close = __exit__

    def _close_transcript(self) -> None:
        if self._transcript is not None:
            self._transcript.close()

    # -- connections ----------------------------------------------------------------------------
    def _connect(self) -> None:
        """Links to every compute party's front door, retried until the timeout; the model's
        public header, the same at every party."""
        token = os.urandom(8)
        deadline = time.monotonic() + self.timeout
        links: dict[str, Link] = {}
        headers: dict[str, dict[str, Any]] = {}
        try:
            for p in self.config.compute:
                links[p], headers[p] = self._dial(p, token, deadline)
        except BaseException:
            for link in links.values():
                link.close()
            raise
        try:
            self._adopt(links, headers)
        except BaseException:
            for link in links.values():
                link.close()
            raise

    def _adopt(self, links: dict[str, Link], headers: dict[str, dict[str, Any]]) -> None:
        """Use ``links`` if every party serves the same save of the model (its header)."""
        first = self.config.compute[0]
        for p, h in headers.items():
            if h.get("model_id") != headers[first].get("model_id"):
                raise ProtocolError(
                    f"client {self.party!r}: parties {first!r} and {p!r} serve different saves of model "
                    f"{self.model_name!r} ({headers[first].get('model_id')} and {h.get('model_id')})"
                )
        h = headers[first]
        if self.model is not None and h.get("model_id") != self.model.model_id:
            raise ProtocolError(
                f"client {self.party!r}: the service now serves another save of model {self.model_name!r}"
            )
        self.model = ModelHeader(
            h["model"], h["kind"], h["layers"], h.get("info", {}), h.get("model_id", ""), int(h["frac_bits"])
        )
        if self.model.frac_bits != self._fxp.frac_bits:
            self._fxp = FixedPoint(self.model.frac_bits)
        m = self.model  # the header's preprocessing, parsed once per connection, not per query
        self._inputs = ModelInputs(m.info, m.name, m.n_features)
        self._caps = {p: int(h["max_query_rows"]) for p, h in headers.items() if "max_query_rows" in h}
        self._links, self._broken = links, None

    def _dial(self, party: str, token: bytes, deadline: float) -> tuple[Link, dict[str, Any]]:
        host, port = door_address(self.config, party)
        delay, last = 0.01, None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(
                    party,
                    f"its front door at {host}:{port} did not answer client {self.party!r} within "
                    f"{self.timeout:g} s (is covault serve running?); last attempt: {last}",
                )
            try:
                sock = socket.create_connection((host, port), timeout=min(left, 10.0))
            except OSError as exc:
                last = exc
                time.sleep(min(delay, max(0.0, left)))
                delay = min(2 * delay, 0.25)
                continue
            try:
                link = Link(prepare_socket(sock, self._tls, server_side=False))
                names = link.channel.peer_names
                if names is not None and names != frozenset({party}):
                    raise PeerError(party, f"its front door's certificate names {sorted(names)}")
                self._send(link, [text(MAGIC), text(self.party), text(self.model_name), text(token)], party)
                arrays = link.recv(HELLO_MAX)
                if len(arrays) != 2 or arrays[0].dtype != np.uint8 or arrays[0].tobytes() != MAGIC:
                    raise PeerError(party, "its front door answered something other than a welcome")
                header = json.loads(arrays[1].tobytes())
            except Refused as exc:
                sock.close()
                raise PeerError(party, f"refused client {self.party!r}: {exc}") from None
            except (OSError, EOFError, FrameError, ValueError) as exc:
                sock.close()
                last = exc
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(2 * delay, 0.25)
                continue
            except BaseException:
                sock.close()
                raise
            link.channel.settimeout(self.timeout)
            return link, header

    def _send(self, link: Link, arrays: list[np.ndarray], party: str | None = None) -> None:
        if self._transcript is not None and party is not None:
            self._transcript.sent(party, arrays)
        link.send(arrays)

    # -- queries ----------------------------------------------------------------------------------
    def predict(self, rows: Any, *, prepared: bool = False) -> np.ndarray:
        """The model's answer for ``rows`` (``(n, features)``, one row, or named raw columns:
        :func:`~covault.serving.inputs.model_rows`; ``prepared``: already the model's inputs), as
        :meth:`~covault.serving.model.SecretModel.forward` computes what the owner's policy
        allows. Malformed rows raise ShapeError or EncodingError before anything is sent; a
        failed service raises PeerError naming the party (the next call connects again). Safe to
        call from several threads: their queries go one at a time."""
        with self._lock:
            return self._predict(rows, prepared)

    def _predict(self, rows: Any, prepared: bool) -> np.ndarray:
        if self._links is None:
            raise CovaultError(f"client {self.party!r}: use the Client in a with-block (not open)")
        model = self.model
        if model.info.get("preprocessing") is not None or not _numeric(rows):
            rows = self._inputs.rows(rows, prepared=prepared)
        x = check_rows(self._fxp, model, rows, self.party)
        if self._broken is not None:
            self._connect()
        for p, cap in self._caps.items():  # each front door's cap, from its welcome: nothing sent
            if x.shape[0] > cap:
                raise QueryRefused(
                    p, f"a query has 1 to {cap} rows at this service (--max-query-rows), got {x.shape[0]}"
                )
        enc = self._fxp.encode(x, what=f"query of client {self.party!r} to model {model.name!r}")
        qid = next(self._qid)
        links = self._links
        try:
            for p, shares in zip(self.config.compute, self._split(enc)):
                try:
                    self._send(links[p], [np.array([QUERY, qid], np.int64), shares], p)
                except (OSError, ValueError) as exc:
                    raise PeerError(
                        p, f"front door closed while client {self.party!r} sent its query ({exc})"
                    ) from None
            parts = [self._answer(p, links[p], qid) for p in self.config.compute]
        except PeerError as exc:
            self._broken = exc
            for link in links.values():
                link.close()
            raise
        frac = {f for f, _ in parts}
        if len(frac) != 1:
            raise ProtocolError(
                f"client {self.party!r}: the parties' answers have different scales {sorted(frac)}"
            )
        shape = (x.shape[0], *parts[0][1].shape[1:])
        for p, (_, s) in zip(self.config.compute, parts):
            if s.shape != shape or s.ndim not in (1, 2):
                raise PeerError(
                    p,
                    f"answered query {qid} of client {self.party!r} with shares of shape {s.shape}, "
                    f"expected {shape} ({x.shape[0]} rows, the same at every party)",
                )
        y = parts[0][1].copy()
        for _, s in parts[1:]:
            y += s
        f = frac.pop()
        return y if f == 0 else y.astype(np.float64) / float(1 << f)

    def _split(self, enc: np.ndarray) -> list[np.ndarray]:
        """Each compute party's shares of ``enc``: 2pc ``x0`` from the CSPRNG and ``x - x0``;
        rep3 ``x0, x1`` from the CSPRNG, ``x2 = x - x0 - x1``, party i holding ``(x_i, x_i+1)``."""
        if len(self.config.compute) == 2:
            x0 = fresh_ring(enc.shape)
            return [x0[None], (enc - x0)[None]]
        x0, x1 = fresh_ring(enc.shape), fresh_ring(enc.shape)
        x = [x0, x1, enc - x0 - x1]
        return [np.stack([x[i], x[(i + 1) % 3]]) for i in range(3)]

    def _answer(self, party: str, link: Link, qid: int) -> tuple[int, np.ndarray]:
        """``(frac, share)`` of query ``qid``'s answer from ``party`` (earlier queries' late
        replies skipped), or PeerError naming the party at fault."""
        while True:
            try:
                arrays = link.recv()
            except TimeoutError:
                raise PeerError(
                    party, f"no answer to client {self.party!r} within {self.timeout:g} s"
                ) from None
            except (OSError, EOFError, FrameError) as exc:
                note = link.channel.eof_note() if isinstance(exc, EOFError) else f" ({exc})"
                raise PeerError(party, f"its front door closed{note}") from None
            except Refused as exc:
                raise PeerError(party, f"refused client {self.party!r}: {exc}") from None
            op = op_of(arrays)
            if int(op[1]) != qid:
                continue
            if op[0] == ERROR and len(arrays) == 3 and op.size == 3:
                named, why = untext(arrays[1], 255), untext(arrays[2])
                if int(op[2]) == PEER:
                    raise PeerError(named, f"query {qid} of client {self.party!r} failed: {why}")
                raise QueryRefused(
                    named, f"party {named!r} refused query {qid} of client {self.party!r}: {why}"
                )
            if op[0] != ANSWER or op.size != 3 or len(arrays) != 2 or arrays[1].dtype != np.int64:
                raise PeerError(party, f"sent a malformed answer to query {qid}")
            return int(op[2]), arrays[1]


def _numeric(rows: Any) -> bool:
    """Whether ``rows`` is a plain array or nested list of numbers (no column names)."""
    if isinstance(rows, np.ndarray):
        return rows.dtype.kind in "biuf"
    if isinstance(rows, list | tuple):
        return all(isinstance(r, int | float) or _numeric(r) for r in rows)
    return False
