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

- **Input** (owner D), written once from the scheme's share layout (:mod:`covault.schemes`:
  ``n`` compute parties, party ``i`` holding components ``i, i+1, ...`` mod ``n``): component
  ``c_i`` of every compute party but the last comes from the D-P_i pairwise PRG, the last is
  ``x - c_0 - ...``; D sends each party the components it holds but cannot draw. 2pc: P1
  receives ``x - c0`` (1 element). rep3: P0 receives ``c1``, P1 ``c2 = x - c0 - c1``, P2
  ``(c2, c0)`` (4 elements, 1 round).
- **Reveal** to D: every compute party sends D one component (2pc: its share; rep3: its first
  component), 1 round.
"""

from __future__ import annotations

import numpy as np

from covault import ring, schemes
from covault.protocols.base import Protocol


class Bystander(Protocol):
    """Data party outside the compute set of a scheme (``scheme``: its name in
    :mod:`covault.schemes`)."""

    ncomp = 0

    def __init__(self, party, compute, dealer, net, data=(), scheme: str = schemes.DEFAULT):
        super().__init__(party, compute, dealer, net, data)
        self.name = scheme
        self.components = schemes.get(scheme).components

    @property
    def public_slot(self) -> int | None:
        return None

    def share(self, value, owner, shape):
        if owner != self.party:
            return self.empty(shape)
        self.net.exchange(self._input_sends(value, shape))
        return self.empty(shape)

    def _input_sends(self, value, shape):
        n = len(self.compute)
        comps = [self.prg[p].ring(shape) for p in self.compute[:-1]]  # drawn by P_i as well
        last = value
        for c in comps:
            last = last - c
        comps.append(last)
        sends = {}
        for i, p in enumerate(self.compute):
            held = [(i + t) % n for t in range(self.components)]
            missing = [comps[j] for j in held if j != i or i == n - 1]
            if missing:
                sends[p] = missing
        return sends

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
