"""In-process transport: parties are threads, messages go through queues.

Used by fast tests and single-process demos. Arrays are copied on send so that no party can
observe another party's later in-place writes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

from covault.errors import PeerError
from covault.transport.base import Message, Transport

_ABORT = object()


class LocalHub:
    """Queues for every ordered pair of parties, shared by the threads of one run."""

    def __init__(self, parties: Sequence[str]):
        self.parties = tuple(parties)
        self._queues = {(a, b): queue.Queue() for a in parties for b in parties if a != b}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()

    def transport(self, party: str) -> LocalTransport:
        return LocalTransport(self, party)

    def abort(self, party: str, reason: str) -> None:
        """Mark ``party`` as failed: everyone waiting on it wakes with a PeerError."""
        with self._lock:
            self._failed.setdefault(party, reason)
        for other in self.parties:
            if other != party:
                self._queues[(party, other)].put(_ABORT)


class LocalTransport(Transport):
    def __init__(self, hub: LocalHub, party: str):
        self.hub = hub
        self.party = party
        self.peers = tuple(p for p in hub.parties if p != party)

    def send(self, to: str, message: Message) -> None:
        self.hub._queues[(self.party, to)].put([a.copy() for a in message])

    def recv(self, frm: str, timeout: float) -> Message:
        try:
            item = self.hub._queues[(frm, self.party)].get(timeout=timeout)
        except queue.Empty:
            raise PeerError(frm, f"no message within {timeout:g} s (peer stalled)") from None
        if item is _ABORT:
            reason = self.hub._failed.get(frm, "failed")
            raise PeerError(frm, f"peer stopped: {reason}")
        return item
