"""The protocol as seen by a data party that is not a compute party.

A data owner (a fifth bank, say, when three banks compute) runs the same program as everyone
else, but holds no shares: its share arrays have shape ``(0, *S)``, so every linear step is
free, and every interactive step returns an empty result without sending anything. It talks
to the compute parties only to secret-share its own inputs and to receive values revealed to
it: the client-server setting of SecureML (Mohassel-Zhang 2017) and ABY3 (Mohassel-Rindal
2018), where clients secret-share their data to the servers.

Data parties come last in every party's order (compute parties, dealer, data parties). Like
everyone, they agree on a pairwise PRG seed with every peer (:meth:`Protocol.setup`) and receive
each input's shape header, so they run over any transport: ``covault.run(...,
data_parties=[...])`` (threads, or one process each with ``transport="tcp"``) and consortium
configs, where every party that is neither a compute party nor the dealer is a data party.

- **Input** (owner D): 2pc: P0's share is drawn from the D-P0 pairwise PRG, P1 receives
  ``x - x0`` (1 element). rep3: components ``c0``, ``c1`` come from the D-P0 and D-P1 PRGs;
  D sends ``c1`` to P0, ``c2 = x - c0 - c1`` to P1, and ``(c2, c0)`` to P2 (4 elements, 1 round).
- **Reveal** to D: every compute party sends D one component (2pc: its share; rep3: its first
  component), 1 round.
"""

from __future__ import annotations

import numpy as np

from covault import ring
from covault.protocols.base import Protocol


class Bystander(Protocol):
    """Data party outside the compute set of a ``2pc`` or ``rep3`` protocol."""

    ncomp = 0

    def __init__(self, party, compute, dealer, net, data=(), scheme: str = "rep3"):
        super().__init__(party, compute, dealer, net, data)
        self.name = scheme

    @property
    def public_slot(self) -> int | None:
        return None

    def share(self, value, owner, shape):
        if owner != self.party:
            return self.empty(shape)
        if self.name == "2pc":
            p0, p1 = self.compute
            x0 = self.prg[p0].ring(shape)
            self.net.exchange({p1: [value - x0]})
        else:
            p0, p1, p2 = self.compute
            c0, c1 = self.prg[p0].ring(shape), self.prg[p1].ring(shape)
            c2 = value - c0 - c1
            self.net.exchange({p0: [c1], p1: [c2], p2: [c2, c0]})
        return self.empty(shape)

    def _receive(self, to, xor):
        if self.party not in to:
            return None
        got = self.net.exchange(recv_from=list(self.compute))
        parts = [got[p][0] for p in self.compute]
        out = parts[0]
        for p in parts[1:]:
            out = (out ^ p) if xor else (out + p)
        return out

    def reveal(self, x, to):
        self.check_receivers(to)
        return self._receive(to, xor=False)

    def reveal_bool(self, x, to):
        self.check_receivers(to)
        return self._receive(to, xor=True)

    def mul(self, x, y):
        return self.empty(np.broadcast_shapes(x.shape[1:], y.shape[1:]))

    def matmul(self, x, y):
        return self.empty(ring.matmul_shape(x.shape[1:], y.shape[1:]))

    def mul_trunc(self, x, y, bits, matmul=False):
        return self.matmul(x, y) if matmul else self.mul(x, y)

    def trunc(self, x, bits):
        return self.empty(x.shape[1:])

    def and_(self, x, y):
        return self.empty(x.shape[1:], x.dtype)

    def b2a_bit(self, b):
        return self.empty(b.shape[1:])

    def msb_addends(self, x):
        return x, x
