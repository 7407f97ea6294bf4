"""``2pc``: two compute parties with additive shares and correlated randomness from a provider.

Sharing: ``x = x0 + x1 (mod 2^64)`` arithmetic, ``x = x0 ^ x1`` boolean; P0 and P1 each hold
one component, a dealer (where the provider has one) none. Threat model: semi-honest parties;
the dealer must not collude with a compute party.

Correlated randomness comes from a :class:`~covault.randomness.providers.base.CorrelationProvider`
chosen by name (:mod:`covault.randomness.providers`): ``ot`` has no dealer (P0 and P1 make every
correlation by oblivious transfer, over the OT extensions :meth:`Additive2PC._ot_extensions`
builds); the default :class:`~covault.randomness.providers.dealer.DealerProvider` is seed-compressed: P0's whole
tuple and the uniform parts of P1's are expanded from AES-CTR seeds each compute party shares
with the dealer; only P1's correction terms are sent (``send_offline``: counted in bytes, not
rounds, since they do not depend on inputs and the dealer streams them ahead).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covault import ring
from covault.errors import ProtocolError
from covault.protocols.base import Protocol, Rider, b2a_mul_shape
from covault.randomness.providers import choose
from covault.randomness.providers.base import CorrelationProvider

BIAS_BITS = 62  # truncation is exact for |x| < 2^62


class Additive2PC(Protocol):
    """Two-party additive sharing with a dealer (Beaver 1991; Mohassel-Zhang SecureML 2017)."""

    name = "2pc"

    def __init__(self, party, compute, dealer, net, data=(), provider: str | None = None):
        entry = choose(self.name, provider)
        if len(compute) != 2 or (dealer is None and entry.needs_dealer):
            needs = " and a dealer" if entry.needs_dealer else ""
            raise ProtocolError(f"2pc needs exactly two compute parties{needs} (provider {entry.name!r})")
        super().__init__(party, compute, dealer, net, data)
        self.provider_name = entry.name
        self.ncomp = 1 if self.is_compute else 0
        self.p0, self.p1 = self.compute
        self.is_dealer = party == dealer
        self.provider: CorrelationProvider | None = None

    def setup(self) -> None:
        super().setup()
        if self.provider is None:
            entry = choose(self.name, self.provider_name)
            ot = {"ot": self._ot_extensions()} if entry.uses_ot else {}
            self.provider = entry.load()(self.party, self.p0, self.p1, self.dealer, self.prg, self.net, **ot)

    def _ot_extensions(self):
        """OT extensions to the other compute party for a provider that uses OT: the sender of
        the OTs this party sends and the receiver of those it receives (base OTs on first use)."""
        from covault.protocols.ot import OTExtReceiver, OTExtSender, PeerChannel

        peer = self._other()
        return (
            OTExtSender(PeerChannel(self.net, peer), tag=f"2pc/{self.party}->{peer}".encode()),
            OTExtReceiver(PeerChannel(self.net, peer), tag=f"2pc/{peer}->{self.party}".encode()),
        )

    @property
    def public_slot(self) -> int | None:
        return 0 if self.index == 0 else None

    def _other(self) -> str:
        return self.p1 if self.index == 0 else self.p0

    # -- sharing and opening ----------------------------------------------------------------
    def share(self, value, owner, shape):
        """Owner P_i: the other's share is drawn from their pairwise PRG (no traffic).
        Owner = dealer: P0's share from the dealer seed, P1 receives ``x - x0`` (1 round)."""
        if owner == self.dealer:
            if self.is_dealer:
                x0 = self.prg[self.p0].ring(shape)
                self.net.exchange({self.p1: [value - x0]})
                return self.empty(shape)
            if self.index == 0:
                return self.prg[self.dealer].ring(shape)[None]
            return self.net.exchange(recv_from=[self.dealer])[self.dealer][0][None]
        if owner in self.data:  # see covault.protocols.bystander
            got = self.net.exchange(recv_from=[owner])[owner] if self.index == 1 else []
            return self._input_from(owner, shape, got)
        if self.is_dealer:
            return self.empty(shape)
        if self.party == owner:
            other = self.prg[self._other()].ring(shape)
            return (value - other)[None]
        return self.prg[owner].ring(shape)[None]

    def _input_from(self, owner, shape, got):
        """A data party's input: P0 draws its share from their pairwise stream, P1 receives
        ``x - x0``; the dealer holds none."""
        self._check_components(owner, shape, got, 1 if self.index == 1 else 0)
        if self.is_dealer:
            return self.empty(shape)
        if self.index == 0:
            return self.prg[owner].ring(shape)[None]
        return got[0][None]

    def _open(self, parts: list[np.ndarray], to: Sequence[str], xor: bool):
        if not self.is_compute:
            if self.party in to:
                got = self.net.exchange(recv_from=list(self.compute))
                a, b = got[self.p0], got[self.p1]
                return [(u ^ v) if xor else (u + v) for u, v in zip(a, b)]
            return None
        sends = {p: parts for p in to if p != self.party}
        recv = [self._other()] if self.party in to else []
        if not sends and not recv:
            return None
        got = self.net.exchange(sends, recv)
        if not recv:
            return None
        other = got[self._other()]
        return [(u ^ v) if xor else (u + v) for u, v in zip(parts, other)]

    def reveal(self, x, to):
        self.check_receivers(to)
        out = self._open([x[0, ...]] if self.is_compute else [], to, xor=False)
        return None if out is None else out[0]

    def reveal_bool(self, x, to):
        self.check_receivers(to)
        out = self._open([x[0, ...]] if self.is_compute else [], to, xor=True)
        return None if out is None else out[0]

    # -- multiplication -----------------------------------------------------------------------
    def _beaver(self, x, y, op):
        """Beaver multiplication with a dealer triple ``c = op(a, b)``.

        1. Dealer: ``a, b`` uniform, ``c = op(a, b)``; P1 gets ``c - c0`` (seed-compressed).
        2. P_i sends ``e_i = x_i - a_i`` and ``f_i = y_i - b_i``; both open ``E, F`` (1 round).
        3. ``z_i = c_i + op(E, y_i) + op(a_i, F)``; then ``z0 + z1 = op(x, y)``. P1 takes the
           dealer's correction of ``c`` only here, so the dealer's product overlaps steps 2-3.
        Cost: 1 round; each compute party sends 2 ring elements per operand element.
        """
        sx, sy = x.shape[1:], y.shape[1:]
        sz = np.broadcast_shapes(sx, sy) if op is np.multiply else ring.matmul_shape(sx, sy)
        parts = self.provider.beaver_late(sx, sy, sz, op)
        if parts is None:
            return self.empty(sz)
        a, b, get_c = parts
        e, f = x[0, ...] - a, y[0, ...] - b
        other = self.net.exchange({self._other(): [e, f]}, [self._other()])[self._other()]
        E, F = e + other[0], f + other[1]
        z = op(E, y[0, ...])
        z += op(a, F)
        z += get_c()  # P1: the dealer's correction, taken only now (it computed meanwhile)
        return z[None]

    def mul(self, x, y):
        return self._beaver(x, y, np.multiply)

    def matmul(self, x, y):
        return self._beaver(x, y, ring.matmul)

    # -- truncation ---------------------------------------------------------------------------
    def trunc(self, x, bits):
        """Probabilistic truncation with a dealt mask whose top bit is shared separately
        (Escudero, Ghosh, Keller, Rachuri, Scholl, CRYPTO 2020, Sec. 5; masks always fresh).

        1. Dealer: uniform ``r = r0 + r1`` (both seed-derived); shares of
           ``u = msb(r) * 2^(63-bits)`` and ``v = (r mod 2^63) >> bits`` (P1's: 2 corrections).
        2. P_i opens ``c = x + 2^62 + r`` (1 element each, 1 round).
        3. ``y = (c mod 2^63) >> bits + msb(c) 2^(63-bits) + (1 - 2 msb(c)) u - v - 2^(62-bits)``.
        Result is ``floor(x / 2^bits)`` or one more, for every ``|x| < 2^62`` (no wrap-around
        failure: the carry into bit 63 is corrected exactly with the shared top bit of ``r``).
        """
        m, finish = self.trunc_open(x, bits)
        if m is None:
            return finish(None)
        return finish(self.net.exchange({self._other(): [m]}, [self._other()])[self._other()][0])

    def trunc_open(self, x, bits):
        """:meth:`trunc` in two halves, for a caller that sends the opening with another step's
        round (:class:`~covault.protocols.base.Rider`): the dealer's mask is taken now; returns
        this party's word ``m`` of step 2 (None at the dealer) and ``finish(other's m)``, step 3.
        The same mask, steps and cost as :meth:`trunc`."""
        shape = x.shape[1:]
        parts = self.provider.trunc_mask(shape, bits)
        if parts is None:
            return None, lambda _other: self.empty(shape)
        r, u, v = parts
        m = x[0, ...] + r
        if self.index == 0:
            m = m + np.int64(1 << BIAS_BITS)

        def finish(other: np.ndarray) -> np.ndarray:
            if not isinstance(other, np.ndarray) or other.shape != m.shape or other.dtype != m.dtype:
                raise ProtocolError(f"truncation at {self.party!r}: the other party's word does not fit")
            c = m + other
            neg = c >> np.int64(63)  # -msb(c): (1 - 2 msb) u = (u ^ neg) - neg
            y = u ^ neg
            y -= neg
            y -= v
            if self.index == 0:  # (c mod 2^63) >> bits + msb(c) 2^(63-bits) is the logical shift
                y += ring.lshr(c, bits)
                y -= np.int64(1 << (BIAS_BITS - bits))
            return y[None]

        return m, finish

    # -- boolean ---------------------------------------------------------------------------
    def and_(self, x, y):
        """Boolean Beaver AND (GMW with dealer triples): open ``x^a, y^b`` (1 round,
        2 words each), ``z_i = c_i ^ (E & b_i) ^ (F & a_i) ^ [i=0](E & F)``."""
        shape, dt = x.shape[1:], x.dtype
        parts = self.provider.and_triple(shape, dt)
        if parts is None:
            return self.empty(shape, dt)
        a, b, c = parts
        e, f = x[0, ...] ^ a, y[0, ...] ^ b
        other = self.net.exchange({self._other(): [e, f]}, [self._other()])[self._other()]
        E, F = e ^ other[0], f ^ other[1]
        z = c ^ (E & b) ^ (F & a)
        if self.index == 0:
            z ^= E & F
        return z[None]

    @property
    def fused_and(self) -> bool:
        """One-round :meth:`and_many` where the provider deals products of masks (the dealer)."""
        return self.provider.deals_mask_products

    def and_many(self, x: np.ndarray, monomials, sums=(), rider: Rider | None = None) -> np.ndarray:
        """Multi-input AND in one round (:mod:`covault.protocols.multiand`: open ``x_i ^ r_i``,
        one word per variable not in ``sums``; the dealer's products of the masks make the rest
        local); without a dealer, by pairs (:meth:`Protocol.and_many`). ``rider``: arrays sent
        with that round (one-round AND only; ProtocolError otherwise)."""
        from covault.protocols.multiand import check

        p = check(x, monomials, sums)
        if not self.fused_and or p.degree <= 1:
            if rider is not None:
                raise ProtocolError(
                    f"and_many at {self.party!r} carries a rider only in its one round (2pc with a dealer)"
                )
            return super().and_many(x, p.monomials)  # by pairs; degree 1 or none: no round
        shape, dt = x.shape[2:], x.dtype
        parts = self.provider.mask_products(shape, dt, p.k, p.subsets, p.sums)
        if parts is None:
            return self.empty((len(p.monomials), *shape), dt)
        masks, products = parts
        opened = x[0, p.opened] ^ masks[p.opened]
        out = [opened, *rider.out] if rider is not None else [opened]
        got = self.net.exchange({self._other(): out}, [self._other()])[self._other()]
        if len(got) != len(out):
            raise ProtocolError(
                f"and_many at {self.party!r}: the other party sent {len(got)} arrays, expected {len(out)}"
            )
        if rider is not None:
            rider.back = got[1:]
        other = got[0]
        e = np.empty_like(masks)
        e[p.opened] = opened ^ other
        if p.sums:
            e[p.sum_at] = e[p.sum_a] ^ e[p.sum_b]  # the sources are opened variables
        table = np.empty((1 + p.k + len(p.subsets), *shape), dtype=dt)
        table[0] = ~dt.type(0) if self.index == 0 else 0
        table[1 : 1 + p.k] = masks
        table[1 + p.k :] = products
        return p.products(e, table)[None]

    def b2a_bit(self, b):
        """Bit conversion with a dealt doubly-authenticated bit (daBit; Rotaru-Wood 2019):
        open ``c = b ^ r`` (1 round, 1 bit each), then ``[b] = c + [r] - 2c[r]``."""
        shape = b.shape[1:]
        parts = self.provider.dabit(shape)
        if parts is None:
            return self.empty(shape)
        rb, ra = parts
        mine = (b[0, ...].astype(np.uint8) ^ rb) & 1
        packed = np.packbits(mine.reshape(-1))
        other = self.net.exchange({self._other(): [packed]}, [self._other()])[self._other()][0]
        theirs = np.unpackbits(other, count=mine.size).reshape(shape)
        c = (mine ^ theirs).astype(np.int64)
        out = (1 - 2 * c) * ra
        if self.index == 0:
            out += c
        return out[None]

    def b2a_mul(self, b, x, extra=None):
        """Bit injection in one round: a dealt daBit ``r`` (Rotaru-Wood, INDOCRYPT 2019) whose
        arithmetic part is the first factor of a Beaver pair ``(a, r a)`` (Beaver, CRYPTO 1991).

        1. Dealer: uniform bit ``r`` (XOR and arithmetic shares), uniform ``a``, ``c = r a``
           (seed-compressed: P1 receives the corrections of ``[r]`` and ``[r a]``); one plain
           daBit per ``extra`` bit.
        2. One exchange: P_i sends its bits of ``b ^ r`` (packed, with those of ``extra``) and
           ``e_i = x_i - a_i``; both open ``c = b ^ r`` and ``e = x - a``.
        3. Locally: ``[b] = c + (1 - 2c)[r]``, ``[r x] = e [r] + [r a]``,
           ``[b x] = c x + (1 - 2c)[r x]``.
        ``c`` and ``e`` are uniform (one-time pads ``r`` and ``a``). Cost: 1 round; each compute
        party sends 1 bit per bit and 1 element per element of ``x``; the dealer sends P1 one
        element per bit and one per product element (offline).
        """
        sz = b2a_mul_shape(b, x)
        sb = b.shape[1:]
        se = extra.shape[1:] if extra is not None else None
        parts = self.provider.dabit_beaver(sb, x.shape[1:])
        eparts = self.provider.dabit(se) if extra is not None else None
        if parts is None:
            out = (self.empty(sb), self.empty(sz))
            return out if extra is None else (*out, self.empty(se))
        rb, ra, a, rab = parts
        mine = (b[0, ...].astype(np.uint8) ^ rb) & 1
        flat = mine.reshape(-1)
        if extra is not None:
            emine = (extra[0, ...].astype(np.uint8) ^ eparts[0]) & 1
            flat = np.concatenate([flat, emine.reshape(-1)])
        e = x[0, ...] - a
        other = self.net.exchange({self._other(): [np.packbits(flat), e]}, [self._other()])[self._other()]
        c_all = (flat ^ np.unpackbits(other[0], count=flat.size)).astype(np.int64)
        c = c_all[: mine.size].reshape(sb)
        flip = 1 - 2 * c
        bits = flip * ra
        prod = flip * ((e + other[1]) * ra + rab)  # (sent arrays are never modified in place)
        prod += c * x[0, ...]
        if self.index == 0:
            bits += c
        if extra is None:
            return bits[None], prod[None]
        ce = c_all[mine.size :].reshape(se)
        ebits = (1 - 2 * ce) * eparts[1]
        if self.index == 0:
            ebits += ce
        return bits[None], prod[None], ebits[None]

    def msb_addends(self, x):
        """P0's and P1's components are the two addends; each is a boolean sharing with the
        other party's component zero (no interaction)."""
        zero = np.zeros_like(x)
        if self.index == 0:
            return x, zero
        return zero, x
