"""``rep3``: three compute parties with 2-out-of-3 replicated sharing, no dealer.

Sharing: ``x = x0 + x1 + x2`` (or XOR); party P_i holds ``(x_i, x_{i+1})`` (indices mod 3).
Randomness comes from pairwise AES-CTR keys: component ``c`` of a random sharing is drawn from
the stream shared by P_{c-1} and P_c, so random and zero sharings cost no traffic (PRSS, Cramer-
Damgard-Ishai 2005; Araki et al. CCS 2016). Threat model: semi-honest, honest majority (no two
parties collude).
"""

from __future__ import annotations

import numpy as np

from covault import ring
from covault.errors import ProtocolError
from covault.protocols.base import Protocol

BIAS_BITS = 62


class Replicated3PC(Protocol):
    """Replicated secret sharing among three parties (Araki et al. 2016; ABY3, Mohassel-Rindal 2018)."""

    name = "rep3"

    def __init__(self, party, compute, dealer, net, data=()):
        if len(compute) != 3 or dealer is not None:
            raise ProtocolError("rep3 needs exactly three compute parties and no dealer")
        super().__init__(party, compute, dealer, net, data)
        self.ncomp = 2
        i = self.index
        self.next = self.compute[(i + 1) % 3]
        self.prev = self.compute[(i - 1) % 3]

    @property
    def public_slot(self) -> int | None:
        return {0: 0, 1: None, 2: 1}[self.index]

    def _holder_slot(self, comp: int) -> int | None:
        """Where this party keeps component ``comp`` (0 or 1), or None."""
        d = (comp - self.index) % 3
        return d if d < 2 else None

    # -- randomness ---------------------------------------------------------------------------
    def _rand_pair(self, shape, dtype=np.int64):
        """Own components (c_i, c_{i+1}) of a fresh random sharing (no traffic)."""
        return self.prg[self.prev].words(shape, dtype), self.prg[self.next].words(shape, dtype)

    def _zero(self, shape, dtype=np.int64, xor=False):
        """This party's term of a 3-out-of-3 sharing of zero."""
        a, b = self._rand_pair(shape, dtype)
        return a ^ b if xor else a - b

    # -- sharing and opening ----------------------------------------------------------------
    def share(self, value, owner, shape):
        """Owner P_k: components k and k+1 come from its pairwise streams; it sends
        ``x_{k+2} = x - x_k - x_{k+1}`` to both others (1 round, 1 element to each)."""
        if owner in self.data:  # see covault.protocols.bystander
            got = self.net.exchange(recv_from=[owner])[owner]
            if self.index == 0:
                return np.stack([self.prg[owner].ring(shape), got[0]])
            if self.index == 1:
                return np.stack([self.prg[owner].ring(shape), got[0]])
            return np.stack([got[0], got[1]])
        k = self.compute.index(owner)
        if self.index == k:
            a, b = self._rand_pair(shape)
            last = value - a - b
            self.net.exchange({self.next: [last], self.prev: [last]})
            return np.stack([a, b])
        if self.index == (k + 1) % 3:  # holds (k+1, k+2): k+1 shared with owner (prev)
            a = self.prg[self.prev].ring(shape)
            last = self.net.exchange(recv_from=[owner])[owner][0]
            return np.stack([a, last])
        b = self.prg[self.next].ring(shape)  # holds (k+2, k): k shared with owner (next)
        last = self.net.exchange(recv_from=[owner])[owner][0]
        return np.stack([last, b])

    def _open(self, x, to, xor):
        """P_i sends its second component x_{i+1} to P_{i-1}, which misses exactly that one."""
        sends = {self.prev: [x[1, ...]]} if self.prev in to else {}
        sends.update({p: [x[0, ...]] for p in to if p in self.data})
        recv = [self.next] if self.party in to else []
        if not sends and not recv:
            return None
        got = self.net.exchange(sends, recv)
        if not recv:
            return None
        third = got[self.next][0]
        return (x[0, ...] ^ x[1, ...] ^ third) if xor else (x[0, ...] + x[1, ...] + third)

    def reveal(self, x, to):
        self.check_receivers(to)
        return self._open(x, to, xor=False)

    def reveal_bool(self, x, to):
        self.check_receivers(to)
        return self._open(x, to, xor=True)

    def _reshare(self, z, xor=False):
        """From a 3-out-of-3 sharing (z_i at P_i, already masked by a zero sharing) to
        replicated: P_i sends z_i to P_{i-1} (1 round, 1 element)."""
        got = self.net.exchange({self.prev: [z]}, [self.next])[self.next][0]
        return np.stack([z, got])

    # -- multiplication -----------------------------------------------------------------------
    def mul(self, x, y):
        """``z_i = x_i y_i + x_i y_{i+1} + x_{i+1} y_i + alpha_i`` (alpha: zero sharing), then
        reshare (Araki et al. 2016). Cost: 1 round, 1 ring element per party per product."""
        z = x[0, ...] * (y[0, ...] + y[1, ...]) + x[1, ...] * y[0, ...]
        return self._reshare(z + self._zero(z.shape))

    def matmul(self, x, y):
        """As :meth:`mul` with matrix products: two ring matmuls per party, 1 round,
        1 ring element per output entry."""
        z = ring.matmul(x[0, ...], y[0, ...] + y[1, ...]) + ring.matmul(x[1, ...], y[0, ...])
        return self._reshare(z + self._zero(z.shape))

    # -- truncation ---------------------------------------------------------------------------
    def trunc(self, x, bits):
        """Truncation with P0 as an in-protocol dealer for P1 and P2.

        P1 and P2 hold a 2-out-of-2 view of ``x`` for free (``u1 = x1 + x2``, ``u2 = x0``); P0,
        which never sees the opened value, deals the mask as the 2pc dealer does (Escudero et
        al. CRYPTO 2020), its seeds being the pairwise keys:
        1. ``r = s1 + s2``, ``s1`` from key(P0,P1), ``s2`` from key(P2,P0). P0 sends P2 the
           corrections of ``u = msb(r) 2^(63-bits)`` and ``v = (r mod 2^63) >> bits``.
        2. P1 sends ``u1 + s1 + 2^62``, P2 sends ``u2 + s2``: both learn ``c = x + 2^62 + r``.
        3. Each of P1, P2 forms its 2-out-of-2 share of ``y`` as in 2pc.
        4. Back to replicated: ``y0`` from key(P2,P0), ``y1`` from key(P0,P1); P1 and P2
           exchange ``y_P1 - y1`` and ``y_P2 - y0`` and both set ``y2`` to their sum.
        Cost: 2 rounds; P1 and P2 send 2 elements each, P0 sends 2 (input-independent).
        Output is ``floor(x / 2^bits)`` or one more for every ``|x| < 2^62``.
        """
        return self._trunc_open(x, bits, fused=False)

    def _trunc_open(self, x, bits, fused):
        """Shared steps of :meth:`trunc` (``x`` replicated) and :meth:`mul_trunc` (``x`` is this
        party's term of a masked 3-out-of-3 sharing)."""
        shape = x.shape[1:] if not fused else x.shape
        p0, p1, p2 = self.compute
        i = self.index
        if i == 0:
            g1, g2 = self.prg[p1], self.prg[p2]
            s1, t_u, t_v, y1 = (g1.ring(shape) for _ in range(4))
            s2, y0 = g2.ring(shape), g2.ring(shape)
            r = s1 + s2
            u = ring.msb(r) << np.int64(63 - bits)
            v = (r & ring.MASK63) >> np.int64(bits)
            if fused:
                self.net.exchange({p1: [x], p2: [x, u - t_u, v - t_v]})
            else:
                self.net.exchange({p2: [u - t_u, v - t_v]})
            return np.stack([y0, y1])
        g = self.prg[p0]
        if i == 1:
            s, t_u, t_v, y_fixed = (g.ring(shape) for _ in range(4))
            own = x if fused else x[0, ...] + x[1, ...]
            m = own + s + np.int64(1 << BIAS_BITS)
            got = self.net.exchange({p2: [m]}, [p0, p2] if fused else [p2])
            c = m + got[p2][0] + (got[p0][0] if fused else 0)
        else:
            s, y_fixed = g.ring(shape), g.ring(shape)
            m = (x if fused else x[1, ...]) + s
            got = self.net.exchange({p1: [m]}, [p0, p1])
            t_u, t_v = got[p0][-2:]
            c = m + got[p1][0] + (got[p0][0] if fused else 0)
        top = ring.msb(c)
        y = (1 - 2 * top) * t_u - t_v
        if i == 1:
            y += ((c & ring.MASK63) >> np.int64(bits)) + (top << np.int64(63 - bits))
            y -= np.int64(1 << (BIAS_BITS - bits))
        other = p2 if i == 1 else p1
        h = y - y_fixed
        y2 = h + self.net.exchange({other: [h]}, [other])[other][0]
        return np.stack([y_fixed, y2]) if i == 1 else np.stack([y2, y_fixed])

    def mul_trunc(self, x, y, bits, matmul=False):
        """Fixed-point product in 2 rounds: the product's 3-out-of-3 sharing feeds truncation.

        1. Locally ``z_i`` = this party's product term plus a PRSS zero share (uniform to
           each other party, as in :meth:`mul`).
        2. Round 1: P0 sends ``z0`` to P1 and P2 and P2 the mask corrections (as in
           :meth:`trunc`); P1 sends ``z1 + s1 + 2^62`` to P2 and P2 sends ``z2 + s2`` to P1, so
           both learn ``c = z + 2^62 + r``.
        3. Round 2: P1 and P2 return to replicated form as in :meth:`trunc`.
        Cost: 2 rounds; P0 sends 4 elements per output, P1 and P2 2 each (unfused: 3 rounds).
        """
        if matmul:
            z = ring.matmul(x[0, ...], y[0, ...] + y[1, ...]) + ring.matmul(x[1, ...], y[0, ...])
        else:
            z = x[0, ...] * (y[0, ...] + y[1, ...]) + x[1, ...] * y[0, ...]
        z = z + self._zero(z.shape)
        return self._trunc_open(z, bits, fused=True)

    # -- boolean ---------------------------------------------------------------------------
    def and_(self, x, y):
        """Replicated AND: ``z_i = x_i&y_i ^ x_i&y_{i+1} ^ x_{i+1}&y_i ^ alpha_i``, reshare
        (Araki et al. 2016). Cost: 1 round, 1 word per party."""
        z = (x[0, ...] & (y[0, ...] ^ y[1, ...])) ^ (x[1, ...] & y[0, ...])
        return self._reshare(z ^ self._zero(z.shape, z.dtype, xor=True), xor=True)

    def _lift(self, comp_values: dict[int, np.ndarray], like: np.ndarray) -> np.ndarray:
        """Sharing whose component c is ``comp_values[c]`` (known to its two holders), 0 else."""
        out = np.zeros_like(like)
        for c, v in comp_values.items():
            slot = self._holder_slot(c)
            if slot is not None:
                out[slot] = v
        return out

    def b2a_bit(self, b):
        """Bit ``b = b0 ^ b1 ^ b2``: each ``b_c`` is an arithmetic sharing for free (its two
        holders know it); combine with ``u ^ v = u + v - 2uv``: 2 products, 2 rounds."""
        comps = {c: b[s].astype(np.int64) & 1 for c in range(3) if (s := self._holder_slot(c)) is not None}
        like = np.zeros((2, *b.shape[1:]), dtype=np.int64)
        s0, s1, s2 = (self._lift({c: comps[c]} if c in comps else {}, like) for c in range(3))
        t = s0 + s1 - 2 * self.mul(s0, s1)
        return t + s2 - 2 * self.mul(t, s2)

    def msb_addends(self, x):
        """Full adder over the three components (local XOR plus one AND round):
        ``x0 + x1 + x2 = (x0 ^ x1 ^ x2) + 2 maj(x0, x1, x2)``, with
        ``maj = ((x0 ^ x1) & (x1 ^ x2)) ^ x1``."""
        comp = {c: x[s] for c in range(3) if (s := self._holder_slot(c)) is not None}
        a = x.copy()  # boolean components of x0 ^ x1 ^ x2 are the arithmetic ones
        s01 = self._lift({c: comp[c] for c in (0, 1) if c in comp}, x)
        s12 = self._lift({c: comp[c] for c in (1, 2) if c in comp}, x)
        s1 = self._lift({1: comp[1]} if 1 in comp else {}, x)
        maj = self.and_(s01, s12) ^ s1
        return a, maj << np.int64(1)
