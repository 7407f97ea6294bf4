"""Transport interface and the accounting wrapper every protocol talks to.

A :class:`Transport` moves lists of numpy arrays between named parties, FIFO per ordered pair.
:class:`Network` wraps one and is what protocols use: one :meth:`Network.exchange` call is one
communication round; it counts bytes, messages and rounds in :class:`Stats`, turns silence past
the timeout into a :class:`~covault.errors.PeerError` naming the peer, and can record every
outgoing message (the transcript) for audit and leakage tests.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from covault.errors import PartyError

Message = list[np.ndarray]


class Transport(ABC):
    """Moves messages (lists of arrays) between this party and its peers."""

    party: str
    peers: tuple[str, ...]

    @abstractmethod
    def send(self, to: str, message: Message) -> None:
        """Queue ``message`` for ``to``; may return before it is delivered."""

    @abstractmethod
    def recv(self, frm: str, timeout: float) -> Message:
        """Next message from ``frm``; raise PeerError after ``timeout`` seconds of silence."""

    def exchange(
        self, sends: Mapping[str, Message], recv_from: Sequence[str], timeout: float
    ) -> dict[str, Message]:
        """Send every message of ``sends``, then receive one message from each of ``recv_from``
        (transports that can overlap the two override this)."""
        for to, msg in sends.items():
            self.send(to, msg)
        return {frm: self.recv(frm, timeout) for frm in recv_from}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; further use is an error."""


@dataclass
class Stats:
    """Communication counters of one party (payload bytes, without framing)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    rounds: int = 0

    def copy(self) -> Stats:
        return Stats(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __sub__(self, other: Stats) -> Stats:
        return Stats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Network:
    """Round-structured messaging for one party, with cost accounting."""

    def __init__(self, transport: Transport, timeout: float = 30.0):
        self.transport = transport
        self.party = transport.party
        self.peers = tuple(transport.peers)
        self.timeout = float(timeout)
        self.stats = Stats()
        self._recorders: list[Callable[[str, str, Message], None]] = []

    # -- accounting -----------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self) -> Iterator[Stats]:
        """Yield a Stats that, on exit, holds the cost of the enclosed block."""
        before = self.stats.copy()
        result = Stats()
        try:
            yield result
        finally:
            delta = self.stats - before
            for f in fields(Stats):
                setattr(result, f.name, getattr(delta, f.name))

    def add_recorder(self, fn: Callable[[str, str, Message], None]) -> None:
        """Call ``fn(direction, peer, message)`` for every message sent ('sent') or received."""
        self._recorders.append(fn)

    def _check_peer(self, peer: str) -> None:
        if peer not in self.peers:
            raise PartyError(f"party {self.party!r} has no peer {peer!r} (peers: {list(self.peers)})")

    # -- messaging ------------------------------------------------------------------------
    def exchange(
        self, sends: Mapping[str, Message] | None = None, recv_from: Sequence[str] = ()
    ) -> dict[str, Message]:
        """One communication round: send every message in ``sends``, then receive one
        message from each party in ``recv_from``."""
        return self._move(sends, recv_from, rounds=1)

    def _move(self, sends: Mapping[str, Message] | None, recv_from: Sequence[str], rounds: int):
        peers, stats, recorders = self.peers, self.stats, self._recorders
        if sends:
            prepared = {}
            for to, message in sends.items():
                if to not in peers:
                    self._check_peer(to)
                msg = [
                    a if type(a) is np.ndarray and a.flags.c_contiguous else _contiguous(a) for a in message
                ]
                for rec in recorders:
                    rec("sent", to, msg)
                prepared[to] = msg
                stats.messages_sent += 1
                for a in msg:
                    stats.bytes_sent += a.nbytes
            sends = prepared
        for frm in recv_from:
            if frm not in peers:
                self._check_peer(frm)
        if not sends and not recv_from:
            return {}
        out = self.transport.exchange(sends or {}, recv_from, self.timeout)
        stats.rounds += rounds
        for frm in recv_from:
            msg = out[frm]
            for rec in recorders:
                rec("received", frm, msg)
            stats.messages_received += 1
            for a in msg:
                stats.bytes_received += a.nbytes
        return out

    def send_offline(self, to: str, message: Message) -> None:
        """Send input-independent material (dealer tuples); counted in bytes, not in rounds."""
        self._move({to: message}, (), rounds=0)

    def recv_offline(self, frm: str) -> Message:
        """Receive input-independent material sent with :meth:`send_offline`."""
        return self._move(None, (frm,), rounds=0)[frm]

    def close(self) -> None:
        self.transport.close()


def _contiguous(a) -> np.ndarray:
    """C-contiguous array view of ``a`` (unlike ``np.ascontiguousarray``, keeps 0-d arrays 0-d)."""
    arr = a if type(a) is np.ndarray else np.asarray(a)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")
