"""The two-party channel oblivious transfer runs over, and its adapter onto a party's network.

OT needs one peer and ordered messages: :class:`OTChannel` is ``send(message)`` /
``recv() -> message`` (a message is a list of numpy arrays) plus the peer's name for errors.
:class:`PeerChannel` puts it on :class:`~covault.transport.base.Network` (``session.net``), the
in-process transport or TCP with mutual TLS alike, so bytes and rounds land in the party's
counters. A round is a flight: consecutive messages in one direction (batches of one OT call, or
random OTs, which need no reply) cost one latency, so only the first message of a flight counts
a round (``net.exchange``), the rest are counted in bytes only (``send_offline`` /
``recv_offline``). With ``offline=True`` nothing counts rounds (input-independent
correlations, as the dealer's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from covault.errors import PartyError

if TYPE_CHECKING:
    from covault.session import Session

Message = list[np.ndarray]


class OTChannel(Protocol):
    """Ordered messages to and from one peer."""

    peer: str

    def send(self, message: Message) -> None: ...

    def recv(self) -> Message: ...


class PeerChannel:
    """:class:`OTChannel` over a party's network (``exchange``, ``send_offline`` and
    ``recv_offline``; only the last two with ``offline=True``) to the party ``peer``."""

    def __init__(self, net: Any, peer: str, *, offline: bool = False) -> None:
        if not isinstance(peer, str) or not peer:
            raise PartyError(f"oblivious transfer: peer must be a party name, got {peer!r}")
        self.net = net
        self.peer = peer
        self.offline = bool(offline)
        self._last = ""  # direction of the flight under way: "send", "recv" or none yet

    def send(self, message: Message) -> None:
        if self.offline or self._last == "send":
            self.net.send_offline(self.peer, message)
        else:
            self.net.exchange({self.peer: message})
        self._last = "send"

    def recv(self) -> Message:
        same = self.offline or self._last == "recv"
        self._last = "recv"
        if same:
            return self.net.recv_offline(self.peer)
        return self.net.exchange(None, (self.peer,))[self.peer]


def session_channel(session: Session, peer: str | None = None, *, offline: bool = False) -> PeerChannel:
    """The channel from ``session``'s party to ``peer`` (default: the other compute party of a
    two-party computation)."""
    if peer is None:
        others = [p for p in session.compute_parties if p != session.party]
        if session.party not in session.compute_parties or len(others) != 1:
            raise PartyError(
                f"oblivious transfer at party {session.party!r}: name the peer (compute parties: "
                f"{list(session.compute_parties)})"
            )
        peer = others[0]
    if peer == session.party or peer not in session.parties:
        raise PartyError(f"oblivious transfer at party {session.party!r}: no peer {peer!r}")
    return PeerChannel(session.net, peer, offline=offline)
