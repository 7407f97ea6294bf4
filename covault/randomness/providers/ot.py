"""``ot``: correlated randomness made by the two compute parties themselves, from oblivious transfer.

No third party: P0 and P1 draw their own uniform parts from ``os.urandom``-keyed AES-CTR and
turn the cross terms of every product into additive shares by correlated OT (COT over Z_2^64:
the sender gets a uniform ``x0``, the receiver with choice ``c`` gets ``x0 + c * delta``) or
random OT. The OT extensions come from above (:mod:`covault.protocols.additive` builds them over
``session.net``; this layer sits below the OT package): ``ot = (sender, receiver)``, where
``sender`` runs the OTs this party sends and ``receiver`` those it receives. Constructions:

- **Beaver triples** (Gilboa, CRYPTO 1999; semi-honest OT-based triples as in Keller, Orsini,
  Scholl, "MASCOT", CCS 2016): ``a_i, b_i`` uniform, ``c_i = a_i b_i + <a_i b_j> + <a_j b_i>``.
  A cross term ``a_i b_j``: 64 COTs, the receiver's choices the bits ``a_i[t]`` of its factor,
  the sender's correlations ``b_j``, both outputs multiplied by ``2^t``; the receiver's sum over
  ``t`` minus the sender's is ``a_i b_j``. As only the low ``64 - t`` bits of the products by
  ``2^t`` matter, the correction of COT ``t`` carries each word as the smallest of 8, 4, 2 or 1
  bytes that holds them (:data:`WIDTHS`: 5.375 bytes on average; shortened corrections, ABY,
  NDSS 2015). Both cross terms, one direction each: 128 COTs of one word per product (2.7 KiB:
  16 + 5.375 bytes per COT).
- **Matrix triples** ``C = A @ B``: the same with whole rows as correlations: bits of ``A_i``
  (``64 m k`` COTs of ``n`` words, correlations the rows of ``B_j``) or bits of ``B_i``
  (``64 k n`` COTs of ``m`` words, correlations the columns of ``A_j``), whichever sends fewer
  bytes; per cross term ``64 m k (16 + 5.375 n)`` or ``64 k n (16 + 5.375 m)`` bytes.
- **AND triples** (Asharov, Lindell, Schneider, Zohner, CCS 2013, "R-OT based multiplication
  triples"): per bit one random OT each way. The ROT sender's messages ``(x0, x1)`` (their low
  bits) give ``b = x0 ^ x1`` and share ``x0``; the receiver's choice is ``a`` with share
  ``x_a``; ``x_a ^ x0 = a b``. 2 ROTs (32 bytes) per AND bit.
- **daBits** ``r = r0 ^ r1`` (each party's own bit): ``r = r1 + r0 (1 - 2 r1)``, the product by
  one COT (P0 chooses ``r0``, P1 correlates ``1 - 2 r1``); 24 bytes per daBit.
- **daBit-Beaver** ``(r, a, r a)``: ``r a_1 = r1 a_1 + r0 (1 - 2 r1) a_1`` and
  ``r a_0 = r0 a_0 + r1 (1 - 2 r0) a_0``: one COT each way per product element.
- **Truncation masks**: each party draws a word ``R_i``; ``r``'s bits are ``R0[t] ^ R1[t]``, so
  ``r = R0 + R1 - 2 sum_t 2^t R0[t] R1[t]``, and ``msb(r)`` and ``(r mod 2^63) >> bits`` are the
  same sums over bit 63 and bits ``bits..62`` with other weights; the 64 bit products
  ``R0[t] R1[t]`` per mask come from 64 COTs of one word (P0 chooses its bits). Exact, as the
  dealer's (1.5 KiB per mask).

Every request is one batched OT call per direction (split into calls of at most ``chunk`` words
so that memory stays bounded), with no loop over elements. Costs against the dealer (which sends
P1 one word per correlated value): 2.7 KiB per product instead of 8 bytes, and rounds: two flights
per direction and call, counted by the network like any other message (``PeerChannel``).
Threat model: semi-honest P0 and P1 (no third party to trust); malicious security would need
authenticated triples (MASCOT/SPDZ2k MACs and sacrifice) and a maliciously secure OT extension.
FSS keys (``dcf``) are not made here: they need a dealer (:mod:`covault.ops.fss` reports it).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from covault import ring
from covault.errors import ProtocolError, ShapeError
from covault.randomness.prg import PRG, new_seed
from covault.randomness.providers.base import Channel, CorrelationProvider, Shape

MASK63 = np.int64(0x7FFF_FFFF_FFFF_FFFF)
SHIFTS = np.arange(64, dtype=np.int64)
# bytes of a correction word sent for bit t: the smallest of 1, 2, 4, 8 holding its 64 - t bits
WIDTHS = np.select([SHIFTS >= 56, SHIFTS >= 48, SHIFTS >= 32], [1, 2, 4], 8).astype(np.uint8)
CHUNK = 1 << 22  # words of correlation per OT call (32 MiB per array)


class OTSender(Protocol):
    """The sending side of OT extension with the other compute party."""

    def cot_send(self, n: int, delta: np.ndarray, nbytes: np.ndarray | None = None) -> np.ndarray: ...

    def random_ot(self, n: int) -> tuple[np.ndarray, np.ndarray]: ...


class OTReceiver(Protocol):
    """The receiving side of OT extension with the other compute party."""

    def cot_recv(self, choices: np.ndarray, k: int, nbytes: np.ndarray | None = None) -> np.ndarray: ...

    def random_ot(self, n: int) -> tuple[np.ndarray, np.ndarray]: ...


def bits_of(words: np.ndarray) -> np.ndarray:
    """The 64 bits of int64 ``words`` (shape S): uint8 ``(*S, 64)``, bit ``t`` at index ``t``."""
    w = np.ascontiguousarray(words, dtype=np.int64)
    return np.unpackbits(w.view(np.uint8).reshape(*w.shape, 8), axis=-1, bitorder="little")


class OTProvider(CorrelationProvider):
    """Correlations from OT between P0 and P1 (no dealer); see the module docstring."""

    def __init__(
        self,
        party: str,
        p0: str,
        p1: str,
        dealer: str | None,
        prg: dict[str, PRG],
        channel: Channel,
        *,
        ot: tuple[OTSender, OTReceiver] | None = None,
        chunk: int = CHUNK,
    ):
        if dealer is not None:
            raise ProtocolError(
                f"correlation provider 'ot' at party {party!r}: takes no dealer party (got {dealer!r})"
            )
        if party not in (p0, p1) or ot is None:
            raise ProtocolError(
                f"correlation provider 'ot' at party {party!r}: runs at the compute parties {p0!r} and "
                f"{p1!r} with an OT extension to the other (got ot={ot!r})"
            )
        self.party, self.p0, self.p1 = party, p0, p1
        self.first = party == p0
        self.sender, self.receiver = ot
        self.chunk = int(chunk)
        self.own = PRG(new_seed())  # this party's private parts; never shared

    # -- OT steps -----------------------------------------------------------------------------
    def _cot(
        self,
        choices: np.ndarray | None,
        k: int,
        delta: np.ndarray | None,
        nbytes: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One round trip of COTs each way, P0 receiving first: ``choices`` (uint8 0/1) for
        those this party receives (``k`` words each), ``delta`` (int64 ``(n, k)``) for those
        it sends (None: none that way). Returns its shares of ``c * delta_peer`` (receiver
        side) and of ``c_peer * delta`` (sender side: ``-x0``), modulo ``2^(8 nbytes_j)``
        with ``nbytes`` (both ways the same widths)."""
        got = sent = np.zeros((0, k), np.int64)
        for step in ("recv", "send") if self.first else ("send", "recv"):
            if step == "recv" and choices is not None:
                got = self.receiver.cot_recv(choices, k, nbytes)
            elif step == "send" and delta is not None:
                sent = -self.sender.cot_send(len(delta), delta, nbytes)
        return got, sent

    def _one_way(self, choices: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """COTs with P0 receiving (``choices`` at P0, ``delta`` at P1, one word each): this
        party's share of ``c * delta``."""
        if self.first:
            return self._cot(choices, 1, None)[0][:, 0]
        return self._cot(None, 1, delta.reshape(-1, 1))[1][:, 0]

    def _gilboa(self, left: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Shares of ``sum_j L0[u, j] R1[u, j] + L1[u, j] R0[u, j]`` (``(U, w)``) where this
        party holds ``L_i = left`` (int64 ``(U, k)``) and ``R_i = rows`` (int64 ``(U or 1, k, w)``):
        64 COTs per element of ``L``, choices its bits, correlations its row, ordered bit-major
        so that the COTs of bit ``t`` (outputs times ``2^t``) form one run of ``WIDTHS[t]``-byte
        correction words."""
        units, k = left.shape
        w = rows.shape[2]
        out = np.zeros((units, w), np.int64)
        if k == 0 or w == 0:
            return out
        step = max(1, self.chunk // (64 * k * w))
        for lo in range(0, units, step):
            hi = min(units, lo + step)
            u = hi - lo
            choices = np.moveaxis(bits_of(left[lo:hi]), -1, 0).reshape(-1)  # (64, u, k)
            part = rows[lo:hi] if rows.shape[0] > 1 else rows
            delta = np.broadcast_to(part[None], (64, u, k, w)).reshape(-1, w)
            got, sent = self._cot(choices, w, delta, np.repeat(WIDTHS, u * k))
            got += sent
            got = got.reshape(64, u, k, w)
            got <<= SHIFTS[:, None, None, None]
            out[lo:hi] = got.sum(axis=(0, 2))
        return out

    # -- correlations ---------------------------------------------------------------------------
    def beaver(self, sx, sy, sz, op):
        a, b = self.own.ring(sx), self.own.ring(sy)
        if op is np.multiply:
            left = np.broadcast_to(a, sz).reshape(-1, 1)
            rows = np.broadcast_to(b, sz).reshape(-1, 1, 1)
            cross = self._gilboa(left, rows).reshape(sz)
        elif op is ring.matmul:
            cross = self._matmul_cross(a, b, sz)
        else:
            raise ProtocolError(
                f"correlation provider 'ot' at party {self.party!r}: Beaver triples for "
                f"{getattr(op, '__name__', op)!r} (only elementwise products and matmul)"
            )
        c = op(a, b)
        c += cross
        return [a, b, c]

    def _matmul_cross(self, a: np.ndarray, b: np.ndarray, sz: Shape) -> np.ndarray:
        """Shares of ``A0 @ B1 + A1 @ B0``: per matrix of the batch, bits of ``A`` with rows
        of ``B`` as correlations, or bits of ``B`` with columns of ``A``, the cheaper one."""
        x = a[None, :] if a.ndim == 1 else a
        y = b[:, None] if b.ndim == 1 else b
        batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        m, k, n = x.shape[-2], x.shape[-1], y.shape[-1]
        nb = int(np.prod(batch, dtype=np.int64))
        xs = np.broadcast_to(x, (*batch, m, k)).reshape(nb, m, k)
        ys = np.broadcast_to(y, (*batch, k, n)).reshape(nb, k, n)
        out = np.empty((xs.shape[0], m, n), np.int64)
        # bytes m (16 + 5.375 n) against n (16 + 5.375 m) per 64 k COTs: the same as m <= n
        by_rows = m <= n
        for i in range(xs.shape[0]):  # one OT call per matrix of the batch
            if by_rows:
                out[i] = self._gilboa(xs[i], ys[i][None])
            else:
                out[i] = self._gilboa(np.ascontiguousarray(ys[i].T), xs[i].T[None]).T
        return out.reshape(sz)

    def and_triple(self, shape, dtype):
        dt = np.dtype(dtype)
        if dt.kind not in "iu":
            raise ShapeError(
                f"correlation provider 'ot' at party {self.party!r}: AND triples of {dt} (integer words only)"
            )
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize * 8
        mine_a = mine_u = his_b = his_v = None
        for step in ("recv", "send") if self.first else ("send", "recv"):
            if step == "recv":
                mine_a, m_c = self.receiver.random_ot(n)
                mine_u = m_c[:, 0] & 1
            else:
                m0, m1 = self.sender.random_ot(n)
                his_v = m0[:, 0] & 1
                his_b = his_v ^ (m1[:, 0] & 1)

        def words(bits: np.ndarray) -> np.ndarray:
            return np.packbits(bits, bitorder="little").view(dt).reshape(shape)

        a, b = words(mine_a), words(his_b)
        c = (a & b) ^ words(mine_u) ^ words(his_v)
        return [a, b, c]

    def trunc_mask(self, shape, bits):
        if not 0 < bits < 63:
            raise ShapeError(
                f"correlation provider 'ot' at party {self.party!r}: truncation by {bits} bits (1..62)"
            )
        mine = self.own.ring(shape)
        bit = bits_of(mine).reshape(-1, 64)
        p = self._one_way(bit.reshape(-1), bit.reshape(-1).astype(np.int64)).reshape(bit.shape)
        p2 = p << np.int64(1)  # shares of 2 R0[t] R1[t]
        r = mine - (p2 << SHIFTS).sum(axis=1).reshape(shape)
        hi = SHIFTS[bits:63] - np.int64(bits)
        v = ((mine & MASK63) >> np.int64(bits)) - (p2[:, bits:63] << hi).sum(axis=1).reshape(shape)
        top = (bit[:, 63].astype(np.int64) - p2[:, 63]).reshape(shape)
        u = top << np.int64(63 - bits)
        return [r, u, v]

    def dabit(self, shape):
        mine = self.own.words(shape, np.uint8) & np.uint8(1)
        flat = mine.reshape(-1)
        if self.first:
            ra = self._one_way(flat, flat).reshape(shape)
        else:
            ra = flat.astype(np.int64) + self._one_way(flat, 1 - 2 * flat.astype(np.int64))
            ra = ra.reshape(shape)
        return [mine, ra]

    def dabit_beaver(self, sr, sa):
        sc = np.broadcast_shapes(sr, sa)
        r = self.own.words(sr, np.uint8) & np.uint8(1)
        a = self.own.ring(sa)
        ri = r.astype(np.int64)
        rc = np.broadcast_to(r, sc).reshape(-1)
        flip_a = np.broadcast_to((1 - 2 * ri) * a, sc).reshape(-1)  # (1 - 2 r_i) a_i on sc
        base = np.broadcast_to(ri * a, sc)  # r_i a_i
        nr = r.size
        if self.first:  # receives [r0 (sr); r0 on sc], sends (1 - 2 r0) a0 on sc
            got, sent = self._cot(np.concatenate([r.reshape(-1), rc]), 1, flip_a.reshape(-1, 1))
            ra = got[:nr, 0].reshape(sr)
            rab = got[nr:, 0].reshape(sc) + base + sent[:, 0].reshape(sc)
        else:  # sends [(1 - 2 r1) (sr); (1 - 2 r1) a1 on sc], receives r1 on sc
            delta = np.concatenate([1 - 2 * ri.reshape(-1), flip_a])[:, None]
            got, sent = self._cot(rc, 1, delta)
            ra = ri + sent[:nr, 0].reshape(sr)
            rab = sent[nr:, 0].reshape(sc) + base + got[:, 0].reshape(sc)
        return [r, ra, a, rab]
