"""The public parameters of one SecAgg+ round, agreed by the server and every client.

``clients`` (n, ids ``0..n-1``), ``dim`` (entries per update), ``bits`` (the ring Z_2^bits),
``neighbours`` (k, even; default ``min(n - 1, 2 * ceil(2.5 * log2 n))``: 34 for n = 100), the
Shamir ``threshold`` (t; default ``max(2, ceil(0.4 * k))``: 14 for k = 34) and the public
round ``seed`` (the neighbour graph; the round id every key derivation is bound to).

What the parameters promise (semi-honest server and clients): the server, together with fewer
than ``t`` of an honest client's ``k`` neighbours, learns nothing about that client's update
beyond the sum; the sum is recovered when, for every client that reached round 2, at least
``t`` of its neighbours answer the unmasking round (n = 100, k = 34, t = 14 tolerates 20
of a client's 34 neighbours dropping).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from covault.fl.errors import SecAggError
from covault.fl.quantise import DTYPES


@dataclass(frozen=True)
class RoundConfig:
    clients: int
    dim: int
    seed: int
    neighbours: int = 0  # 0: the default for ``clients``
    threshold: int = 0  # 0: the default for ``neighbours``
    bits: int = 32
    round_id: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = self.clients
        if n < 2 or self.dim < 1:
            raise SecAggError(
                f"secure aggregation needs at least 2 clients and 1 entry, got {n} and {self.dim}"
            )
        if self.bits not in DTYPES:
            raise SecAggError(f"secure aggregation: the ring must be Z_2^32 or Z_2^64, got 2^{self.bits}")
        k = self.neighbours or min(n - 1, 2 * math.ceil(2.5 * math.log2(n)))
        k = min(k, n - 1)
        t = self.threshold or max(2, math.ceil(0.4 * k))
        if not 2 <= t <= k:
            raise SecAggError(f"secure aggregation: the threshold t = {t} must be in [2, k = {k}]")
        object.__setattr__(self, "neighbours", k)
        object.__setattr__(self, "threshold", t)
        digest = hashlib.sha256(f"covault secagg+ round {self.seed}".encode()).digest()[:16]
        object.__setattr__(self, "round_id", digest)

    @property
    def dtype(self) -> type:
        return DTYPES[self.bits]
