"""Oblivious transfer between two parties (semi-honest): Chou-Orlandi base OT over Curve25519
(:mod:`covault.protocols.ot.base`) and IKNP/ALSZ OT extension with a fixed-key-AES hash
(:mod:`covault.protocols.ot.extension`): random, chosen-message and correlated OT over
Z_2^64, batched in numpy; :mod:`covault.protocols.ot.channel` runs them over ``session.net``."""

from covault.protocols.ot.channel import OTChannel, PeerChannel, session_channel
from covault.protocols.ot.extension import OTExtReceiver, OTExtSender

__all__ = ["OTChannel", "OTExtReceiver", "OTExtSender", "PeerChannel", "session_channel"]
