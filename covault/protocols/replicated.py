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
from covault.protocols.additive import Additive2PC
from covault.protocols.base import Protocol, _align, b2a_mul_shape
from covault.randomness.prg import PRG, new_seed
from covault.randomness.providers.dealer import DealerProvider

BIAS_BITS = 62
ROTATE_MIN = 4096  # truncations of this many elements or more rotate the dealer over thirds


def _pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.stack([a, b])`` for two arrays of one shape, about twice as fast for large ones."""
    out = np.empty((2, *np.shape(a)), dtype=np.result_type(a, b))
    out[0, ...] = a
    out[1, ...] = b
    return out


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
        self._dabits: list[tuple[np.ndarray, np.ndarray]] = []  # ready: (bits uint8, arith int64)
        self._ready = 0  # daBits in self._dabits
        self._riders: list[list] = []  # [generator, its next message] of daBit batches in progress
        self._pending = 0  # daBits still in progress
        self._own = PRG(new_seed())  # private randomness (masks only this party knows)
        self._view: Additive2PC | None = None

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

    # -- sharing and opening ----------------------------------------------------------------
    def share(self, value, owner, shape):
        """Owner P_k: components k and k+1 come from its pairwise streams; it sends
        ``x_{k+2} = x - x_k - x_{k+1}`` to both others (1 round, 1 element to each)."""
        if owner in self.data:  # see covault.protocols.bystander
            return self._input_from(owner, shape, self.net.exchange(recv_from=[owner])[owner])
        k = self.compute.index(owner)
        if self.index == k:
            a, b = self._rand_pair(shape)
            last = value - a - b
            self.net.exchange({self.next: [last], self.prev: [last]})
            return _pair(a, b)
        if self.index == (k + 1) % 3:  # holds (k+1, k+2): k+1 shared with owner (prev)
            a = self.prg[self.prev].ring(shape)
            last = self.net.exchange(recv_from=[owner])[owner][0]
            return _pair(a, last)
        b = self.prg[self.next].ring(shape)  # holds (k+2, k): k shared with owner (next)
        last = self.net.exchange(recv_from=[owner])[owner][0]
        return _pair(last, b)

    def _input_from(self, owner, shape, got):
        """A data party's input: P0 and P1 draw their first component from their pairwise stream
        and receive the second; P2 receives both."""
        self._check_components(owner, shape, got, 2 if self.index == 2 else 1)
        if self.index == 2:
            return _pair(got[0], got[1])
        return _pair(self.prg[owner].ring(shape), got[0])

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

    def _round(self, payload: list[np.ndarray]) -> list[np.ndarray]:
        """One exchange in which P_i sends ``payload`` to P_{i-1} and receives the same from
        P_{i+1}; the daBit batches in progress ride along (one step each, see :meth:`prepare_b2a`)."""
        riders, self._riders = self._riders, []
        msg = list(payload) + [r[1] for r in riders]
        got = self.net.exchange({self.prev: msg}, [self.next])[self.next]
        k = len(payload)
        for rider, part in zip(riders, got[k:]):
            try:
                rider[1] = rider[0].send(part)
                self._riders.append(rider)
            except StopIteration:
                pass
        return got[:k]

    def _reshare(self, z, xor=False):
        """From a 3-out-of-3 sharing (``z``: this party's term, unmasked) to replicated: add (XOR)
        a PRSS zero share to ``z`` in place, send it to P_{i-1}, receive P_{i+1}'s (1 round,
        1 element each). Arrays are never modified once sent (a transport may still hold them)."""
        z = self._mask_zero(z, xor)
        return _pair(z, self._round([z])[0])

    def _mask_zero(self, z, xor=False):
        """``z`` plus (XOR) this party's term of a fresh PRSS zero sharing, in place."""
        a, b = self._rand_pair(z.shape, z.dtype)
        if xor:
            z ^= a
            z ^= b
        else:
            z += a
            z -= b
        return z

    @staticmethod
    def _cross(x, y, matmul=False):
        """This party's term of the 3-out-of-3 sharing of ``x * y`` (or ``x @ y``):
        ``x_i y_i + x_i y_{i+1} + x_{i+1} y_i`` (a fresh array)."""
        if matmul:
            z = ring.matmul(x[0, ...], y[0, ...] + y[1, ...])
            z += ring.matmul(x[1, ...], y[0, ...])
            return z
        z = np.empty(np.broadcast_shapes(x.shape[1:], y.shape[1:]), dtype=np.int64)
        np.add(y[0, ...], y[1, ...], out=z)
        z *= x[0, ...]
        z += x[1, ...] * y[0, ...]
        return z

    # -- multiplication -----------------------------------------------------------------------
    def mul(self, x, y):
        """``z_i = x_i y_i + x_i y_{i+1} + x_{i+1} y_i + alpha_i`` (alpha: zero sharing), then
        reshare (Araki et al. 2016). Cost: 1 round, 1 ring element per party per product."""
        return self._reshare(self._cross(x, y))

    def matmul(self, x, y):
        """As :meth:`mul` with matrix products: two ring matmuls per party, 1 round,
        1 ring element per output entry."""
        return self._reshare(self._cross(x, y, matmul=True))

    # -- truncation ---------------------------------------------------------------------------
    def trunc(self, x, bits):
        """Probabilistic truncation (Escudero, Ghosh, Keller, Rachuri, Scholl, CRYPTO 2020) with
        each party in turn as an in-protocol dealer for the other two.

        From ``ROTATE_MIN`` (4096) elements on, the elements are split into three contiguous
        thirds; in third ``j`` the dealer is ``D = P_j``, ``R1 = P_{j+1}``, ``R2 = P_{j+2}``.
        Smaller tensors have one part, dealt by P0 (fewer, larger messages: latency counts
        more than balance there). R1 and R2 hold a 2-out-of-2 view of ``x``
        for free (``x_{j+1} + x_{j+2}`` and ``x_j``); D, which never sees the opened value, deals
        the mask as the 2pc dealer does, its seeds being the pairwise keys:

        1. ``r = s1 + s2``, ``s1`` from key(D,R1), ``s2`` from key(D,R2); D sends R2 the
           corrections of ``u = msb(r) 2^(63-bits)`` and ``v = (r mod 2^63) >> bits`` (their
           other shares ``t_u, t_v`` come from key(D,R1)).
        2. R1 sends ``x_{j+1} + x_{j+2} + s1 + 2^62`` to R2, R2 sends ``x_j + s2`` to R1: both
           learn ``c = x + 2^62 + r``.
        3. Each of R1, R2 forms its 2-out-of-2 share of ``y`` as in 2pc.
        4. Back to replicated: ``y_j`` from key(D,R2), ``y_{j+1}`` from key(D,R1); R1 and R2
           exchange their share minus the one of these they know and both set ``y_{j+2}`` to the
           sum.
        All three thirds share the same two exchanges. Cost: 2 rounds; each party sends 2
        elements per element of ``x`` (below 4096 elements P0 takes part in the first round only).
        Output is ``floor(x / 2^bits)`` or one more for every ``|x| < 2^62``.
        Privacy: R1 sees ``x_j + s2`` and R2 sees ``x_{j+1} + x_{j+2} + s1 + 2^62``, each masked
        by a key the receiver lacks; the corrections are masked by ``t_u, t_v`` (key(D,R1)),
        the returned shares by ``y_j``, ``y_{j+1}``; D receives nothing for its third.
        """
        return self._trunc_open(x, bits, fused=False)

    @staticmethod
    def _thirds(n):
        """Slices of the three contiguous thirds of ``n`` elements (the first ones one longer)."""
        q, extra = divmod(n, 3)
        cuts = [0]
        for j in range(3):
            cuts.append(cuts[-1] + q + (j < extra))
        return [slice(cuts[j], cuts[j + 1]) for j in range(3)]

    def _trunc_open(self, z, bits, fused):
        """Shared steps of :meth:`trunc` (``z`` replicated, ``(2, *S)``) and :meth:`mul_trunc`
        (``z`` is this party's unmasked term of a 3-out-of-3 sharing, ``(*S)``)."""
        shape = z.shape if fused else z.shape[1:]
        n = int(np.prod(shape, dtype=np.int64))
        flat = z.reshape(-1) if fused else z.reshape(2, n)
        i = self.index
        thirds = self._thirds(n) if n >= ROTATE_MIN else [slice(0, n), slice(n, n), slice(n, n)]
        sd, s1, s2 = thirds[i], thirds[(i - 1) % 3], thirds[(i + 1) % 3]  # this party: D, R1, R2
        has_d, has_1, has_2 = sd.stop > sd.start, s1.stop > s1.start, s2.stop > s2.start
        out = np.empty((2, n), dtype=np.int64)
        nxt, prv = self.prg[self.next], self.prg[self.prev]
        for j in range(3):  # draws in the same order at both ends of every pairwise stream
            if j == i:  # key(D,R1) = nxt: s1, t_u, t_v, y_{j+1}; key(D,R2) = prv: s2, y_j
                d_r1 = nxt.ring((3, sd.stop - sd.start))
                nxt.bytes_into(out[1, sd])
                d_s2 = prv.ring(sd.stop - sd.start)
                prv.bytes_into(out[0, sd])
            elif j == (i - 1) % 3:  # as R1, key with D = prv: s, t_u, t_v, then y_{j+1} (slot 0)
                r1 = prv.ring((3, s1.stop - s1.start))
                prv.bytes_into(out[0, s1])
            else:  # as R2, key with D = nxt: s, then y_j (slot 1)
                r2_s = nxt.ring(s2.stop - s2.start)
                nxt.bytes_into(out[1, s2])
        to_next, to_prev = [], []
        if has_d:  # dealer: the mask r and the corrections of u, v
            r = d_r1[0] + d_s2
            if fused:  # this party's own term, masked for both receivers by a private value
                mu = self._own.ring(r.shape)
                r += mu
                mu += flat[sd]
                to_next.append(mu)
                to_prev.append(mu)
            u = r >> np.int64(63)  # 0 or -1
            u &= np.int64(1 << (63 - bits))
            u -= d_r1[1]
            r &= ring.MASK63
            r >>= np.int64(bits)
            r -= d_r1[2]  # the correction of v
            to_prev += [u, r]
        if has_1:  # R1: masked view of x, and the input-independent part of its output
            if fused:
                m1 = flat[s1] + r1[0]
            else:
                m1 = flat[0, s1] + flat[1, s1]
                m1 += r1[0]
            m1 += np.int64(1 << BIAS_BITS)
            base1 = r1[2] + np.int64(1 << (BIAS_BITS - bits))
            base1 += out[0, s1]
            to_next.append(m1)
        if has_2:  # R2: masked view of x
            m2 = (flat[s2] if fused else flat[1, s2]) + r2_s
            to_prev.append(m2)
        # from prev: its dealt term (it deals third j1) and its m1 (it is R1 of third j2);
        # from next: its dealt term and corrections (third j2) and its m2 (R2 of third j1)
        sends = {p: msg for p, msg in ((self.next, to_next), (self.prev, to_prev)) if msg}
        recv = [
            p for p, want in ((self.prev, (fused and has_1) or has_2), (self.next, has_1 or has_2)) if want
        ]
        got = self.net.exchange(sends, recv)
        from_prev, from_next = iter(got.get(self.prev, ())), iter(got.get(self.next, ()))
        a_prev = next(from_prev) if fused and has_1 else None
        m1_prev = next(from_prev) if has_2 else None
        a_next = next(from_next) if fused and has_2 else None
        t_u, t_v = (next(from_next), next(from_next)) if has_2 else (None, None)
        m2_next = next(from_next) if has_1 else None
        sends, recv = {}, []
        if has_1:
            # R1: c = m1 + m2 + the dealer's term;
            # y_R1 = (c mod 2^63) >> bits + msb(c) 2^(63-bits) + (1 - 2 msb(c)) t_u - t_v - 2^(62-bits),
            # the first two terms being the logical shift of c, and (1 - 2 msb) t = (t ^ m) - m
            # for m = c >> 63 (arithmetic: 0 or -1); minus y_{j+1}, it goes to R2 (next)
            c1 = m1 + m2_next
            if fused:
                c1 += a_prev
            neg = c1 >> np.int64(63)
            h1 = r1[1] ^ neg
            h1 -= neg
            h1 -= base1
            h1 += ring.lshr(c1, bits)
            sends[self.next] = [h1]
            recv.append(self.next)
        if has_2:
            # R2: c = m2 + m1 + the dealer's term; y_R2 = (1 - 2 msb(c)) (u - t_u) - (v - t_v);
            # minus y_j, it goes to R1 (prev)
            c2 = m2 + m1_prev
            if fused:
                c2 += a_next
            neg = c2 >> np.int64(63)
            h2 = t_u ^ neg
            h2 -= neg
            h2 -= t_v
            h2 -= out[1, s2]
            sends[self.prev] = [h2]
            recv.append(self.prev)
        if sends:
            got = self.net.exchange(sends, recv)
            if has_1:
                np.add(h1, got[self.next][0], out=out[1, s1])  # y_{j+2} of third j1
            if has_2:
                np.add(h2, got[self.prev][0], out=out[0, s2])  # y_{j+2} of third j2
        return out.reshape(2, *shape)

    def mul_trunc(self, x, y, bits, matmul=False):
        """Fixed-point product in 2 rounds: the product's 3-out-of-3 sharing feeds :meth:`trunc`.

        1. Locally ``z_i = x_i y_i + x_i y_{i+1} + x_{i+1} y_i`` (no zero share).
        2. Round 1 as in :meth:`trunc`, third ``j``: D sends ``z_D + mu`` to R1 and R2 (``mu``
           from D's private PRG; ``r = s1 + s2 + mu``) and R2 the corrections; R1 sends
           ``z_R1 + s1 + 2^62`` to R2, R2 sends ``z_R2 + s2`` to R1: both learn
           ``c = z + 2^62 + r``.
        3. Round 2: R1 and R2 return to replicated form as in :meth:`trunc`.
        Privacy: R1 receives ``z_D + mu`` and ``z_R2 + s2``, masked by two independent values
        it does not know (``mu``: private to D; ``s2``: key(D,R2)); R2 likewise (``mu``, ``s1``).
        So each receiver sees two uniform values, then ``c``, itself uniform; D receives nothing
        for its part. (Sending D's term to R1 only, for R1 to forward it, would save D one element
        but cost a third round.) Cost: 2 rounds; a party sends 4 elements per output of the part
        it deals and 2 per output of the others: 8/3 on average from 4096 outputs on (exact for
        sizes divisible by 3); below, P0 sends 4 (1 round), P1 and P2 2 (unfused: 3 rounds).
        """
        return self._trunc_open(self._cross(x, y, matmul), bits, fused=True)

    # -- the dealt two-party view ----------------------------------------------------------
    def dealt_view(self) -> Additive2PC:
        """The ``2pc`` protocol in which P1 and P2 compute and P0 deals, over this party's
        network and pairwise keys (no set-up traffic).

        With :meth:`to_view` and :meth:`from_view`, a step can run there instead: P0 then only
        deals (seed-compressed tuples, sent without waiting for anyone), so on a shared host two
        processes, not three, compete for the cores. The trust is the one P0 already has in
        :meth:`trunc`: P0 knows the masks of the tuples it deals but receives nothing of P1's and
        P2's openings; a semi-honest P0 not colluding with P1 or P2 (honest majority) learns
        nothing."""
        if self._view is None:
            p0, p1, p2 = self.compute
            view = Additive2PC(self.party, (p1, p2), p0, self.net)
            view.prg = self.prg
            view.provider = DealerProvider(self.party, p1, p2, p0, self.prg, self.net)
            self._view = view
        return self._view

    def dealt(self, fn, x):
        """``fn`` on the shares of :meth:`dealt_view` (P0 only deals), back to replicated shares
        in one round (:meth:`from_view`)."""
        return self.from_view(fn(self.dealt_view(), self.to_view(x)))

    def to_view(self, x):
        """Shares of :meth:`dealt_view` for replicated ``x``, free: P1 ``x1 + x2``, P2 ``x0``, P0
        none (shape ``(0, *S)``, as a dealer's)."""
        if self.index == 0:
            return x[:0]
        if self.index == 1:
            return (x[0] + x[1])[None]
        return x[1:2].copy()

    def from_view(self, u):
        """Replicated shares of the value of :meth:`dealt_view` shares ``u`` (1 round): ``y0``
        from key(P0,P2), ``y1`` from key(P0,P1); P1 sends P2 ``u_P1 - y1``, P2 sends P1
        ``u_P2 - y0`` (each masked by a key the receiver lacks), and both set ``y2`` to the sum
        (as the last step of :meth:`trunc`). P0 receives nothing."""
        p0, p1, p2 = self.compute
        shape = u.shape[1:]
        if self.index == 0:
            y0 = self.prg[p2].ring(shape)
            return _pair(y0, self.prg[p1].ring(shape))
        mine = self.prg[p0].ring(shape)  # y1 at P1, y0 at P2
        h = u[0] - mine
        other = p2 if self.index == 1 else p1
        y2 = h + self.net.exchange({other: [h]}, [other])[other][0]
        return _pair(mine, y2) if self.index == 1 else _pair(y2, mine)

    def to_terms(self, x):
        """Component ``x_i``: P_i's term of the 3-out-of-3 sharing ``x = x0 + x1 + x2``."""
        return x[:1]

    def product_terms(self, x, y):
        """P_i's term ``x_i y_i + x_i y_{i+1} + x_{i+1} y_i`` of ``x @ y`` (as :meth:`matmul`,
        without its resharing round: no traffic)."""
        return self._cross(x, y, matmul=True)[None]

    def from_terms(self, z, bits):
        """Terms to replicated shares: with ``bits``, the fused truncation of :meth:`mul_trunc`
        (2 rounds; the dealer's term is masked there); without, the resharing of :meth:`mul`
        (PRSS zero share, 1 round). So a product feeding a truncation costs no round of its own
        (Araki et al. 2016; Escudero et al. 2020)."""
        if bits:
            return self._trunc_open(np.ascontiguousarray(z[0]), bits, fused=True)
        return self._reshare(np.array(z[0]))

    def mul_add_trunc(self, x, y, add, bits):
        """``(x * y + add) / 2^bits`` in 2 rounds: ``add``'s component ``i`` (3-out-of-3 for free)
        joins this party's product term before the fused truncation of :meth:`mul_trunc`."""
        z = self._cross(x, y)
        z += add[0, ...]
        return self._trunc_open(z, bits, fused=True)

    # -- boolean ---------------------------------------------------------------------------
    def and_(self, x, y):
        """Replicated AND: ``z_i = x_i&y_i ^ x_i&y_{i+1} ^ x_{i+1}&y_i ^ alpha_i``, reshare
        (Araki et al. 2016). Cost: 1 round, 1 word per party."""
        z = np.bitwise_xor(y[0, ...], y[1, ...])
        z &= x[0, ...]
        z ^= x[1, ...] & y[0, ...]
        return self._reshare(z, xor=True)

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

    # -- daBits and bit injection -----------------------------------------------------------
    def prepare_b2a(self, n):
        """Start ``n`` daBits (a uniform bit as boolean and arithmetic shares; Rotaru-Wood,
        INDOCRYPT 2019) that ride along the next two exchanges of the resharing pattern (products,
        ANDs: every comparison has 8), so that :meth:`b2a` / :meth:`b2a_mul` of the announced bits
        take one round. No extra round; each party sends ``8 (n + n_i)`` bytes, ``n_i`` the size
        of its third below (10.7 bytes per daBit for ``n`` divisible by 3).

        Per daBit: PRSS boolean shares of ``r = r_j ^ r_{j+1} ^ r_{j+2}`` (component ``c`` from the
        key of P_{c-1} and P_c: no traffic, no single party knows ``r``). Arithmetically
        ``r = r_j + r_{j+1} + r_{j+2} - 2 (r_j r_{j+1} + r_{j+1} r_{j+2} + r_{j+2} r_j)
        + 4 r_j r_{j+1} r_{j+2}``; in third ``j`` of the batch P_j (holding ``r_j, r_{j+1}``)
        plays A, P_{j+1} B, P_{j+2} C:

        1. A sends C ``w = r_j r_{j+1} + m``, ``m`` from key(A,B) (uniform to C).
        2. 3-out-of-3 terms: A ``r_j ^ r_{j+1}``; B ``r_{j+2} (1 - 2 r_{j+1} - 4 m)``;
           C ``r_{j+2} (4 w - 2 r_j)``; they sum to ``r``. Masked by a PRSS zero share and
           reshared (as :meth:`mul`).

        Both messages go from P_i to P_{i-1}, as in every resharing. The daBits wait in a
        per-protocol FIFO pool until used; all parties run the same program, so they fill and
        drain it in step.
        """
        if n > 0:
            steps = self._dabit_steps(int(n))
            self._riders.append([steps, next(steps)])
            self._pending += int(n)

    def _dabit_steps(self, n):
        """Generator of the two messages of :meth:`prepare_b2a`; fills the pool."""
        u, v = self._rand_pair((n,), np.uint8)
        rb = _pair(u, v)
        rb &= 1
        s0, s1 = rb[0], rb[1]  # components i and i+1 of r
        thirds = self._thirds(n)
        i = self.index
        ta, tb, tc = thirds[i], thirds[(i - 1) % 3], thirds[(i + 1) % 3]  # roles A, B, C
        z = np.empty(n, dtype=np.int64)
        w = (s0[ta] & s1[ta]).astype(np.int64)
        w += self.prg[self.next].ring(w.shape)  # m: key(A,B)
        np.bitwise_xor(s0[ta], s1[ta], out=z[ta], casting="unsafe")
        m = self.prg[self.prev].ring(tb.stop - tb.start)  # key(A,B), A being P_{i-1}
        m *= -4
        m -= 2 * s0[tb].astype(np.int64)
        m += 1
        np.multiply(m, s1[tb], out=z[tb])
        got = (yield w) * 4  # w from C's A = P_{i+1}
        got -= 2 * s1[tc].astype(np.int64)
        np.multiply(got, s0[tc], out=z[tc])
        z = self._mask_zero(z)
        ra = _pair(z, (yield z))
        self._dabits.append((rb, ra))
        self._ready += n
        self._pending -= n

    def _take_dabits(self, shape):
        """``n`` daBits from the pool as ``(bits (2, *shape) uint8, arith (2, *shape))``, finishing
        batches in progress if needed (one round each step); None when too few were announced."""
        n = int(np.prod(shape, dtype=np.int64))
        if n == 0:
            return np.zeros((2, *shape), dtype=np.uint8), np.zeros((2, *shape), dtype=np.int64)
        if self._ready < n <= self._ready + self._pending:
            while self._ready < n and self._riders:
                self._round([])
        if self._ready < n:
            return None
        bits, arith, need = [], [], n
        while need:
            rb, ra = self._dabits[0]
            if rb.shape[1] <= need:
                self._dabits.pop(0)
            else:
                self._dabits[0] = (rb[:, need:], ra[:, need:])
                rb, ra = rb[:, :need], ra[:, :need]
            bits.append(rb)
            arith.append(ra)
            need -= rb.shape[1]
        self._ready -= n
        rb = bits[0] if len(bits) == 1 else np.concatenate(bits, axis=1)
        ra = arith[0] if len(arith) == 1 else np.concatenate(arith, axis=1)
        return rb.reshape(2, *shape), ra.reshape(2, *shape)

    def _open_masked(self, b, rb, extra=()):
        """Open ``c = b ^ r`` (packed bits) in one round with the messages ``extra``; returns
        ``c`` (int64 0/1) and what came with it."""
        cb = b.astype(np.uint8, copy=False) ^ rb
        cb &= 1
        got = self._round([np.packbits(cb[1].reshape(-1)), *extra])
        third = np.unpackbits(got[0], count=cb[0].size).reshape(cb.shape[1:])
        third ^= cb[0]
        third ^= cb[1]
        return third.astype(np.int64), got[1:]

    def b2a(self, b):
        """One round with announced daBits (:meth:`prepare_b2a`): open ``c = b ^ r`` (1 bit,
        packed), ``[b] = c + (1 - 2c)[r]``. Without them: :meth:`b2a_bit` (2 rounds)."""
        dab = self._take_dabits(b.shape[1:])
        if dab is None:
            return self.b2a_bit(b)
        rb, ra = dab
        c, _ = self._open_masked(b, rb)
        return self._from_dabit(c, ra)

    def _from_dabit(self, c, ra):
        """``[b] = c + (1 - 2c)[r]`` for the opened ``c = b ^ r``."""
        out = c * -2
        out += 1
        out = out * ra
        if self.public_slot is not None:
            out[self.public_slot] += c
        return out

    def b2a_mul(self, b, x, extra=None):
        """Bit injection in one round with announced daBits (:meth:`prepare_b2a`; daBits:
        Rotaru-Wood, INDOCRYPT 2019; the product as in :meth:`mul`, Araki et al. 2016).

        1. Locally: boolean shares of ``c = b ^ r`` and the 3-out-of-3 term ``z_i`` of
           ``r x`` (as :meth:`mul`, masked by a PRSS zero share).
        2. One exchange: P_i sends P_{i-1} its second component of ``c`` (packed, with the bits
           of ``extra`` masked the same way) and ``z_i``: everyone opens ``c``; ``[r x]`` is
           replicated.
        3. Locally: ``[b] = c + (1 - 2c)[r]``, ``[b x] = c x + (1 - 2c)[r x]``.
        ``c`` is uniform (``r`` is a uniform bit no party knows). Cost: 1 round, each party
        sends 1 bit per bit and 1 element per product element (plus the daBits' 10.7 bytes per
        bit, sent along earlier rounds: :meth:`prepare_b2a`). Without announced daBits:
        :meth:`b2a_bit` then :meth:`mul` (3 rounds).
        """
        sz = b2a_mul_shape(b, x)
        sb = b.shape[1:]
        nb = int(np.prod(sb, dtype=np.int64))
        se = extra.shape[1:] if extra is not None else ()
        ne = int(np.prod(se, dtype=np.int64)) if extra is not None else 0
        dab = self._take_dabits((nb + ne,))
        if dab is None:
            return super().b2a_mul(b, x, extra)
        rb, ra = dab
        bb = b.reshape(2, nb)
        if extra is not None:
            bb = np.concatenate(
                [bb.astype(np.uint8, copy=False), extra.reshape(2, ne).astype(np.uint8)], axis=1
            )
        rab = ra[:, :nb].reshape(2, *sb)
        x2 = _align(x, sz)
        z = self._mask_zero(self._cross(_align(rab, sz), x2))
        c_all, (zz,) = self._open_masked(bb, rb, [z])
        c = c_all[:nb].reshape(sb)
        flip = c * -2
        flip += 1
        prod = _pair(z, zz)
        prod *= flip
        prod += c * x2
        bits = self._from_dabit(c, rab)
        if extra is None:
            return bits, prod
        return bits, prod, self._from_dabit(c_all[nb:].reshape(se), ra[:, nb:].reshape(2, *se))

    def msb_addends(self, x):
        """Full adder over the three components (one AND round):
        ``x0 + x1 + x2 = (x0 ^ x1 ^ x2) + 2 maj(x0, x1, x2)``. The boolean components of
        ``x0 ^ x1 ^ x2`` are the arithmetic ones; ``maj = x0 x1 ^ x1 x2 ^ x2 x0``, and P_i holds
        both factors of ``x_i x_{i+1}``: its term of a 3-out-of-3 sharing, reshared."""
        maj = self._reshare(x[0, ...] & x[1, ...], xor=True)
        maj <<= maj.dtype.type(1)
        return x, maj
