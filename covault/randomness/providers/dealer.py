"""``dealer``: correlated randomness dealt by a third party, seed-compressed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from covault.errors import ProtocolError
from covault.randomness import fss
from covault.randomness.prg import PRG
from covault.randomness.providers.base import Channel, CorrelationProvider, Shape

MASK63 = np.int64(0x7FFF_FFFF_FFFF_FFFF)


@lru_cache(maxsize=64)
def _product_steps(k: int, subsets: tuple[tuple[int, ...], ...]) -> tuple[tuple[np.ndarray, ...], ...]:
    """Index steps that build ``AND_{i in S} r_i`` for ``subsets`` (sorted tuples, each one's
    prefixes of length >= 2 listed too) in a table ``[r_1 .. r_k, products]``, one numpy step
    per size: ``table[at] = table[frm] & table[var]``."""
    index = {(i,): i for i in range(k)}
    index.update({s: k + j for j, s in enumerate(subsets)})
    steps = []
    for size in sorted({len(s) for s in subsets}):
        group = [s for s in subsets if len(s) == size]
        cols = ([index[s] for s in group], [index[s[:-1]] for s in group], [s[-1] for s in group])
        steps.append(tuple(_frozen(c) for c in cols))
    return tuple(steps)


def _frozen(values: list[int]) -> np.ndarray:
    """A read-only index array (the steps are cached and shared)."""
    a = np.array(values, dtype=np.intp)
    a.flags.writeable = False
    return a


class DealerProvider(CorrelationProvider):
    """Tuples dealt by a third party, seed-compressed.

    The dealer shares one AES-CTR seed with each compute party. P0's whole tuple and the uniform
    parts of P1's are expanded locally from those seeds; the dealer computes the correlated
    parts and sends P1 only their corrections (``true - p0_part`` or ``true ^ p0_part``), as
    input-independent ("offline") traffic. The same object serves all three roles.
    """

    def __init__(self, party: str, p0: str, p1: str, dealer: str, prg: dict[str, PRG], channel: Channel):
        self.party, self.p0, self.p1, self.dealer = party, p0, p1, dealer
        self.prg = prg
        self.channel = channel

    def _deal(
        self,
        spec: Sequence[tuple[Shape, Any, bool]],
        make: Callable[[list[np.ndarray], list[np.ndarray | None]], list[np.ndarray]],
    ) -> list[np.ndarray] | None:
        """``spec`` lists ``(shape, dtype, uniform_at_p1)``; ``make(parts0, parts1)`` (dealer
        only) returns P1's corrections for the parts that are not uniform at P1, in order."""
        if self.party == self.dealer:
            g0, g1 = self.prg[self.p0], self.prg[self.p1]
            parts0 = g0.many([(s, d) for s, d, _ in spec])
            drawn1 = iter(g1.many([(s, d) for s, d, uniform in spec if uniform]))
            parts1 = [next(drawn1) if uniform else None for _, _, uniform in spec]
            self.channel.send_offline(self.p1, make(parts0, parts1))
            return None
        g = self.prg[self.dealer]
        if self.party == self.p0:
            return g.many([(s, d) for s, d, _ in spec])
        drawn = iter(g.many([(s, d) for s, d, uniform in spec if uniform]))
        mine = [next(drawn) if uniform else None for _, _, uniform in spec]
        corrections = iter(self.channel.recv_offline(self.dealer))
        return [m if m is not None else next(corrections) for m in mine]

    def beaver(self, sx, sy, sz, op):
        spec = [(sx, np.int64, True), (sy, np.int64, True), (sz, np.int64, False)]
        return self._deal(spec, lambda p0, p1: [op(p0[0] + p1[0], p0[1] + p1[1]) - p0[2]])

    def beaver_late(self, sx, sy, sz, op):
        """P1 draws ``a1, b1`` now and receives the correction of ``c`` when the function is
        called (the dealer's message waits in the transport meanwhile)."""
        if self.party != self.p1:
            return super().beaver_late(sx, sy, sz, op)
        g = self.prg[self.dealer]
        a, b = g.words(sx, np.int64), g.words(sy, np.int64)
        return a, b, lambda: self.channel.recv_offline(self.dealer)[0]

    def and_triple(self, shape, dtype):
        spec = [(shape, dtype, True), (shape, dtype, True), (shape, dtype, False)]
        return self._deal(spec, lambda p0, p1: [((p0[0] ^ p1[0]) & (p0[1] ^ p1[1])) ^ p0[2]])

    deals_mask_products = True

    def mask_products(self, shape, dtype, k, subsets, sums=()):
        """Masks seed-expanded at both compute parties (those of ``sums`` then XORed from two
        others, locally); P1 receives the corrections of the products, one message."""
        spec = [((k, *shape), dtype, True), ((len(subsets), *shape), dtype, False)]

        def make(p0, p1):
            table = np.empty((k + len(subsets), *shape), dtype=dtype)
            np.bitwise_xor(p0[0], p1[0], out=table[:k])
            for i, j, m in sums:
                table[i] = table[j] ^ table[m]
            for at, frm, var in _product_steps(k, subsets):
                table[at] = table[frm] & table[var]
            return [table[k:] ^ p0[1]]

        parts = self._deal(spec, make)
        if parts is not None:
            for i, j, m in sums:
                parts[0][i] = parts[0][j] ^ parts[0][m]
        return parts

    def trunc_mask(self, shape, bits):
        spec = [(shape, np.int64, True), (shape, np.int64, False), (shape, np.int64, False)]

        def make(p0, p1):
            r = p0[0] + p1[0]
            u = (r.view(np.uint64) >> np.uint64(63)).view(np.int64) << np.int64(63 - bits)
            v = (r & MASK63) >> np.int64(bits)
            return [u - p0[1], v - p0[2]]

        return self._deal(spec, make)

    def dabit(self, shape):
        spec = [(shape, np.uint8, True), (shape, np.int64, False)]
        return self._deal(spec, lambda p0, p1: [((p0[0] ^ p1[0]) & 1).astype(np.int64) - p0[1]])

    def dabit_beaver(self, sr, sa):
        sc = np.broadcast_shapes(sr, sa)
        spec = [(sr, np.uint8, True), (sr, np.int64, False), (sa, np.int64, True), (sc, np.int64, False)]

        def make(p0, p1):
            r = ((p0[0] ^ p1[0]) & 1).astype(np.int64)
            return [r - p0[1], r * (p0[2] + p1[2]) - p0[3]]

        return self._deal(spec, make)

    def dcf(self, shape, bits, make, words, extras):
        """The mask shares, the DCF roots and P0's extras come from the seeds; the correction
        words go to BOTH compute parties (P0 receives from the dealer here, and only here),
        followed at P1 by the corrections of its extras. The key is received when the function
        is called (the dealer's key generation overlaps the opening)."""
        n = int(np.prod(shape, dtype=np.int64))
        if self.party == self.dealer:
            g0, g1 = self.prg[self.p0], self.prg[self.p1]
            r0, root0 = g0.ring(shape), g0.words((n, 2), np.uint64)
            e0 = [g0.ring(shape) for _ in range(extras)]
            r1, root1 = g1.ring(shape), g1.words((n, 2), np.uint64)
            alpha, beta, values = make((r0 + r1).reshape(-1))
            key, _ = fss.keygen(alpha, beta, bits, root0, root1)
            cw = key.corrections()
            self.channel.send_offline(self.p0, cw)
            self.channel.send_offline(self.p1, cw + [v.reshape(shape) - p for v, p in zip(values, e0)])
            return None
        g = self.prg[self.dealer]
        r, root = g.ring(shape), g.words((n, 2), np.uint64)
        mine = [g.ring(shape) for _ in range(extras)] if self.party == self.p0 else None

        def receive() -> tuple[fss.DcfKey, list[np.ndarray]]:
            msg = self.channel.recv_offline(self.dealer)
            key = fss.DcfKey.from_corrections(root, msg, bits, party=self.party, sender=self.dealer)
            got = len(msg) - 4 if mine is None else extras
            if key.cw_out.shape[1] != words or got != extras:
                raise ProtocolError(
                    f"dcf at {self.party!r}: the dealer sent {key.cw_out.shape[1]} payload words "
                    f"and {got} extras, expected {words} and {extras}"
                )
            return key, mine if mine is not None else [e.reshape(shape) for e in msg[4:]]

        return r, receive
