"""One private query in a long-lived session: the client's rows in, only the client's answer out.

A :class:`Query` is run by every party of the session alike (SPMD): the client secret-shares
its rows of ``features`` columns (the compute parties and the dealer learn their number, never
their values; other data parties, such as a model owner, take no part and learn nothing),
the compute parties and the dealer evaluate ``fn`` on the secret rows, and the result is opened
to the client alone (:meth:`~covault.tensor.SecretTensor.reveal` with ``to=client``): the
compute parties and the dealer see shares and masked values only. :func:`affine` is a layer
that can skip its truncation before a comparison. Costs per model kind: ``docs/serving.md``,
"Online cost".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from covault import bounds
from covault.errors import CovaultError, ProtocolError, ShapeError
from covault.randomness.providers.dealer import DealerProvider
from covault.randomness.replay import Recorder, replay
from covault.session import Session
from covault.tensor import SecretTensor

MAX_ROWS = 1 << 20  # rows per query


class Query:
    """``query(rows)`` at every party: ``rows`` (an ``(n, features)`` array) at the client,
    None elsewhere; returns the answer (numpy) at the client and None elsewhere.

    ``bound``: the public bound on the rows' magnitudes, checked at the client (default: the
    fixed-point range); ``fn`` maps the secret rows to the secret answer.

    ``pool=True`` (sessions with a dealer; use the query as a context manager): the dealer
    deals the correlated randomness of the next single-row query ahead of it, on entry and
    right after each single-row query, so that the compute parties find every tuple of a
    single-row query already sent: its online path is their own rounds only. A query of
    ``n != 1`` rows after a dealt one first runs ``fn`` on a zero row at the compute parties (a
    dummy, never opened) to use up the dealt tuples, then takes its own, dealt in line; leaving
    the ``with`` block does the same. Every serving party follows this rule from the announced
    row counts. While tuples are dealt ahead, the session's dealer stream belongs to the query:
    any other step that needs dealt randomness raises :class:`ProtocolError` instead of taking
    them out of order. ``fn`` must take the same steps for every single-row query (it may not
    change with the query's count or the time): the dealer replays its first one
    (:meth:`_deal_next`), and a compute party that finds the dealer's stream out of step with
    its own draws raises :class:`ProtocolError`.
    """

    def __init__(
        self,
        session: Session,
        client: str | None,
        features: int,
        fn: Callable[[SecretTensor], SecretTensor],
        *,
        bound: float | None = None,
        pool: bool = False,
    ) -> None:
        if client is not None:
            session.check_party(client, "query client")
            if client in session.compute_parties or client == session.dealer:
                raise ProtocolError(
                    f"query client {client!r} must be a data party, not a compute party or the dealer"
                )
        self.session, self.client, self.features, self.fn = session, client, int(features), fn
        self.frac: int | None = None
        self.bound = None if bound is None else session.fxp.check_bound(bound, f"query of client {client!r}")
        self.serving = (*session.compute_parties, *((session.dealer,) if session.dealer else ()))
        self.pool = pool and session.dealer is not None and session.party in self.serving
        self.pooled = False  # the next single-row query's tuples are dealt (same at every serving party)
        self._provider: Any = None
        self._pack: list[np.ndarray] | None = None  # a compute party's dealt batch, received ahead
        self._trace: tuple | None = None  # the dealer's provider calls of a single-row query
        self._recorded = False  # the dealer recorded them once (replayable or not)

    def __enter__(self) -> Query:
        if self.pool:
            self._prepare()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.drain()
        else:
            self._release()

    def __call__(self, rows: Any) -> np.ndarray | None:
        s = self.session
        if s.party != self.client and s.party not in self.serving:
            return None  # another data party: not part of this query
        x = self._share(rows)
        if s.party == self.client:
            if self.frac is not None:  # a data party computes nothing: just receive
                raw = s.protocol.reveal(x.shares, (self.client,))
                return raw if self.frac == 0 else raw.astype(np.float64) / float(1 << self.frac)
            y = self.fn(x)
            self.frac = y.frac  # fixed by fn: the client runs fn (on empty shares) once
            return y.reveal(to=self.client)
        y = self.evaluate(x)
        return None if y is None else y.reveal(to=self.client)

    def evaluate(self, x: SecretTensor) -> SecretTensor | None:
        """At the serving parties: ``fn`` on the secret rows ``x`` (the dealer: empty shares of
        the same shape), with the pool's rules; the secret answer (None at the dealer), not yet
        opened. A service whose rows arrive by another way than :meth:`__call__`'s sharing
        calls this with their shares."""
        s = self.session
        n = x.shape[0]
        if self.pooled and n != 1:
            self.drain()
        dealt, self.pooled = self.pooled, False
        self._release()
        if s.party == s.dealer:
            if not dealt:
                self.fn(x)  # this query's tuples, in line
            if self.pool and n == 1:
                self._prepare()
            return None
        y = self._batched(lambda: self.fn(x)) if dealt else self.fn(x)
        if self.pool and n == 1:
            self._hold()
        return y

    def drain(self) -> None:
        """Use up tuples dealt ahead (a dummy zero row at the compute parties) and give the
        dealer stream back to the session."""
        s = self.session
        if self.pooled and s.party in s.compute_parties:
            self._release()
            p, shape = s.protocol, (1, self.features)
            zero = self._secret(p.add_public(p.empty(shape), np.zeros(shape, np.int64)))
            self._batched(lambda: self.fn(zero))
        self.abandon()

    def abandon(self) -> None:
        """Leave without using up the tuples dealt ahead (this party leaves the session: the
        others stop, so nothing is left to stay in step with)."""
        self.pooled = False
        self._release()

    def _prepare(self) -> None:
        """The dealer deals the next single-row query's tuples now (the compute parties receive
        them now, in one message each, and use them with their seeds when that query comes)."""
        s = self.session
        self._release()
        if s.party == s.dealer:
            self._batched(self._deal_next)
        self.pooled = True
        self._hold()

    def _deal_next(self) -> None:
        """The dealer's side of the next single-row query: the provider calls recorded at the
        first one, replayed (:mod:`covault.randomness.replay`: the dealer's dealing depends on
        public shapes only), or ``fn`` on empty rows again where that recording could not be
        sure to do all of it (a draw outside the provider, an argument that is not plain data,
        a message). ``fn`` must make the same steps for every single-row query; should it not,
        the compute parties find the dealer's stream out of step (:meth:`_batched`) and raise."""
        s = self.session
        provider = s.protocol.provider
        if self._trace is not None:
            replay(provider, self._trace)
            return
        if self._recorded:  # recorded once, not replayable: no recorder on the hot path
            self.fn(self._secret(s.protocol.empty((1, self.features))))
            return
        self._recorded = True
        recorder = Recorder(provider, s.protocol.prg)
        moved = s.net.stats.messages_sent + s.net.stats.messages_received
        s.protocol.provider = recorder
        try:
            self.fn(self._secret(s.protocol.empty((1, self.features))))
        finally:
            s.protocol.provider = provider
        quiet = s.net.stats.messages_sent + s.net.stats.messages_received == moved
        if recorder.replayable and quiet:
            self._trace = tuple(recorder.calls)

    def _batched(self, run: Callable[[], Any]) -> Any:
        """``run()`` with the dealer's messages of a query dealt ahead in ONE message per compute
        party: the dealer collects what it sends each of them and sends it together (an empty
        batch too, so that every compute party knows what to wait for); each compute party
        receives its batch first and takes the messages one by one; all of them, or
        ProtocolError."""
        s = self.session
        provider = s.protocol.provider
        if not isinstance(provider, DealerProvider):
            return run()
        channel = provider.channel
        if s.party == s.dealer:
            batch = _Batch()
            streams = {p: s.protocol.prg[p] for p in s.compute_parties}
            before = {p: g.drawn for p, g in streams.items()}
            provider.channel = batch
            try:
                out = run()
            finally:
                provider.channel = channel
            for p, g in streams.items():
                channel.send_offline(p, batch.pack(p, g.drawn - before[p]))
            return out
        packed, self._pack = self._pack, None
        batch = _Batch(channel.recv_offline(s.dealer) if packed is None else packed)
        stream = s.protocol.prg[s.dealer]
        before = stream.drawn
        provider.channel = batch
        hint = "does the query's function change between queries?"
        try:
            out = run()
        except CovaultError:
            raise
        except (ValueError, IndexError) as exc:  # numpy's, on tuples dealt for other steps
            raise ProtocolError(
                f"query of client {self.client!r}: the dealer's tuples dealt ahead do not fit this "
                f"party's steps ({type(exc).__name__}: {exc}): {hint}"
            ) from exc
        finally:
            provider.channel = channel
        if stream.drawn - before != batch.drawn:
            raise ProtocolError(
                f"query of client {self.client!r}: the dealer's tuples do not follow this party's "
                f"program ({batch.drawn} bytes of their shared stream drawn there, "
                f"{stream.drawn - before} here): {hint}"
            )
        if batch.messages:
            raise ProtocolError(
                f"query of client {self.client!r}: {len(batch.messages)} of the dealer's messages dealt "
                "ahead were left unused (the model differs between the dealer and the compute parties?)"
            )
        return out

    def _hold(self) -> None:
        """The next single-row query's tuples are dealt: a compute party receives the dealer's
        batch now (so that the session's later messages from the dealer come in order) and
        keeps the provider's place until that query."""
        s = self.session
        provider = self._provider or s.protocol.provider
        if self._pack is None and s.party in s.compute_parties and isinstance(provider, DealerProvider):
            self._pack = provider.channel.recv_offline(s.dealer)
        self.pooled = True
        if self._provider is None:
            self._provider = self.session.protocol.provider
            self.session.protocol.provider = _Held(self.client)

    def _release(self) -> None:
        if self._provider is not None:
            self.session.protocol.provider, self._provider = self._provider, None

    def secret(self, shares: np.ndarray) -> SecretTensor:
        """This party's ``shares`` of rows (the dealer: empty ones) as a secret tensor with the
        query's bound."""
        return self._secret(shares)

    def _secret(self, shares: np.ndarray) -> SecretTensor:
        s = self.session
        bound = s.fxp.max_abs if self.bound is None else self.bound
        return SecretTensor(s, shares, s.frac_bits, bound)

    def _share(self, rows: Any) -> SecretTensor:
        """The client's rows as a secret tensor, in one round: the client sends their count to
        the compute parties and the dealer only, with the components it sends them anyway
        (``Protocol.share_rows``)."""
        s, what = self.session, f"query of client {self.client!r}"
        enc = None
        if s.party == self.client:
            rows = np.asarray(rows, dtype=np.float64)
            if rows.ndim != 2 or rows.shape[1] != self.features or not 0 < rows.shape[0] <= MAX_ROWS:
                raise ShapeError(
                    f"{what}: rows must have shape (n, {self.features}) with 1 <= n <= {MAX_ROWS}, "
                    f"got {rows.shape}"
                )
            enc = s.fxp.encode(rows, what=what, bound=self.bound)
        try:
            shares = s.protocol.share_rows(enc, self.client, self.features, MAX_ROWS)
        except ShapeError as exc:
            raise ShapeError(f"{what}: {exc}") from None
        return self._secret(shares)


class _Batch:
    """The dealer's messages of one query, one batch per compute party: collected at the
    dealer (``send_offline``, ``pack``), replayed at the compute party (``recv_offline``)."""

    def __init__(self, packed: list[np.ndarray] | None = None) -> None:
        self.messages: deque[list[np.ndarray]] = deque()
        self.sent: dict[str, list[list[np.ndarray]]] = {}
        self.drawn = 0  # bytes the dealer drew from its stream with this party for the query
        if packed is not None:
            head = packed[0] if packed else None
            if not isinstance(head, np.ndarray) or head.dtype != np.int64 or head.shape[:1] == (0,):
                raise ProtocolError("the dealer's batch of a query dealt ahead has no header")
            counts = [int(k) for k in head[1:]]
            if any(k < 0 for k in counts) or sum(counts) != len(packed) - 1:
                raise ProtocolError("the dealer's batch of a query dealt ahead is malformed")
            self.drawn = int(head[0])
            rest = iter(packed[1:])
            for k in counts:
                self.messages.append([next(rest) for _ in range(k)])

    def send_offline(self, to: str, message: list[np.ndarray]) -> None:
        self.sent.setdefault(to, []).append(list(message))

    def recv_offline(self, frm: str) -> list[np.ndarray]:
        if not self.messages:
            raise ProtocolError("a query dealt ahead asked for more of the dealer's messages than were dealt")
        return self.messages.popleft()

    def pack(self, to: str, drawn: int) -> list[np.ndarray]:
        """Every message for party ``to``, as one: the bytes ``drawn`` from the dealer's stream
        with ``to`` (the party checks them against its own draws) and the messages' lengths,
        then their arrays."""
        sent = self.sent.get(to, [])
        head = np.array([drawn, *(len(m) for m in sent)], dtype=np.int64)
        return [head, *(a for m in sent for a in m)]


class _Held:
    """The provider's place while a query's tuples are dealt ahead: every use raises."""

    def __init__(self, client: str) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        raise ProtocolError(
            f"dealt randomness ({name}) was asked for while the next query of client {self.client!r} "
            "is dealt ahead: leave the query's with-block (or call drain()) before other steps"
        )


def affine(x: SecretTensor, w: SecretTensor, b: SecretTensor, *, exact: bool = False) -> SecretTensor:
    """``x @ w + b`` of secret tensors. ``exact=True`` keeps the product's fractional bits
    (``x.frac + w.frac``) instead of truncating back to the session's: no truncation round and
    no truncation error, for a comparison that follows (``> threshold``, ``argmax``); ``b`` is
    shifted up to those bits (exact, local). Where the tracked bounds cannot show that the
    result stays below 2^62 ring units at those bits, it truncates as ``exact=False`` does."""
    x._same_session(w)
    frac = x.frac + w.frac
    if exact and None not in (x.bound, w.bound, b.bound):
        bound = x.bound * w.bound * int(x.shape[-1])
        if (bound + b.bound) * 2.0**frac < bounds.EXACT_LIMIT:
            z = SecretTensor(x.session, x.proto.matmul(x.shares, w.shares), frac, bound)
            return z + b
    return x @ w + b
