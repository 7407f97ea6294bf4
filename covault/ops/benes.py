"""Beneš networks: routing a permutation into switch bits, and the two-party oblivious
permutation of 2pc without a dealer (provider ``ot``) that the oblivious shuffle runs twice.

**Network.** The Beneš network (Beneš 1964) on ``n`` wires, for any ``n`` in the recursive
form of Waksman (1968) and Chang and Melhem (1997): a block of ``m >= 3`` wires has ``m // 2``
input switches on the pairs ``(2i, 2i + 1)``, whose first outputs feed an upper block of
``m // 2`` wires and second outputs a lower block of ``m - m // 2`` (with ``m`` odd the last
wire goes straight down), then ``m // 2`` output switches, switch ``j`` fed by output ``j``
of each half (``m`` odd: the lower half's last output is the last output); a block of 2 is one
switch. It realises every permutation, in ``2 ceil(log2 n) - 1`` layers (input switches of
depth ``t`` at layer ``t``, output switches at ``2 ceil(log2 n) - 2 - t``) of about ``n/2``
switches: ``n log2 n - n/2`` switches for ``n`` a power of two, 125,120 for ``n = 10,000`` (against
221,184 after padding to 16,384). Wires are fixed slots of the row array; a switch acts on two
slots, and the outputs end in public slots (:attr:`Network.out`). :func:`route` finds the bits
by the looping algorithm: an input goes up, so the source of its output's partner goes down,
so that source's partner goes up, and so round each cycle (``m`` odd: first the chain from the
unpaired input, which goes down, to the unpaired output); ``O(n log n)`` Python steps, 0.06 s for
10,000 rows. Every permutation is routed exactly, so a uniformly random permutation gives a
uniformly random output order (random switch bits would not: ``2^{switches}`` settings for
``n!`` permutations, not evenly). Waksman's fixed output switch would save one more switch per
block of three or more wires.

**Oblivious permutation** (Mohassel and Sadeghian, "How to hide circuits in MPC", EUROCRYPT
2013: an oblivious permutation by a switching network). The holder ``P_H`` of a permutation
``pi`` and the other party ``P_O`` hold additive shares of ``n`` rows of ``w`` words. A switch
on shared rows ``(a, b)`` with the holder's bit ``s``: ``a' = a + s (b - a)``,
``b' = b - s (b - a)``. ``P_H`` holds ``s`` in the clear, so ``s (b - a)_H`` is local and
``s (b - a)_O`` is one correlated OT of ``w`` words (``P_H`` receives with choice ``s``, ``P_O``
sends correlation ``(b - a)_O`` and gets ``x0``; their shares are ``x0 + s delta`` and ``-x0``).
``P_O``'s correlations of a layer depend on the ``x0`` of the layers before, not on anything
``P_H`` sends, and ``P_H`` knows all its choices in advance: so the OTs of all layers are one
call, ``P_H``'s ``u`` in one flight, ``P_O`` deriving every ``x0`` from it, running the layers
on its shares and replying in one flight
(:meth:`~covault.protocols.ot.extension.OTExtSender.cot_send_derived`), then ``P_H`` running the
layers on its own. ``P_O``'s new shares are ``x0``'s, uniform; ``P_H``'s view is its ``u`` and
one pseudo-random pad per OT: neither learns anything of the rows, ``P_O`` nothing of ``pi``.
(Beside the alternative of one OT call per layer this saves ``2 (2 ceil(log2 n) - 2)`` flights; beside
chosen-message OT of both switch outputs, as in the paper, it sends ``8 w`` instead of
``32 w`` bytes per switch.)

Cost per permutation of ``n`` rows of ``w`` words: one correlated OT of ``w`` words per switch
(:attr:`Network.switches`, at most ``(2 ceil(log2 n) - 1) n/2``), ``16 + 8 w`` bytes each (16 from
the holder, ``8 w`` back), 2 flights (1 round at each party).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from covault.errors import ProtocolError, ShapeError

if TYPE_CHECKING:
    from covault.protocols.additive import Additive2PC


@dataclass(frozen=True)
class Network:
    """A Beneš network on ``n`` wires: per layer the two slots of each switch (``lo``, ``hi``:
    int64 arrays, no slot twice in a layer), and ``out``: the slot that holds output ``j`` at
    the end. Public: it depends on ``n`` alone."""

    n: int
    lo: tuple[np.ndarray, ...]
    hi: tuple[np.ndarray, ...]
    out: np.ndarray

    @property
    def switches(self) -> int:
        """Switches in all layers (one correlated OT each)."""
        return sum(a.size for a in self.lo)


def layer_count(n: int) -> int:
    """Switch layers of the network on ``n`` wires: ``2 ceil(log2 n) - 1`` (0 for one wire)."""
    if n < 0:
        raise ShapeError(f"Beneš network: n must be >= 0 wires, got {n}")
    return 2 * (n - 1).bit_length() - 1 if n > 1 else 0


def network(n: int) -> Network:
    """The network on ``n`` wires (no switch bits: the structure both parties share)."""
    return _build(n, None)[0]


def route(perm: np.ndarray) -> tuple[Network, list[np.ndarray]]:
    """The network on ``n = len(perm)`` wires and its switch bits (uint8, one array per layer,
    in the order of the layer's slots) with which it maps rows ``x`` to ``x[perm]``."""
    perm = np.asarray(perm, dtype=np.int64)
    n = perm.size
    if perm.ndim != 1 or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ShapeError(f"Beneš routing: not a permutation of 0..{n - 1}")
    dst = np.empty(n, np.int64)
    dst[perm] = np.arange(n)  # input i goes to output dst[i]
    return _build(n, dst.tolist())


def _build(n: int, dst: list[int] | None) -> tuple[Network, list[np.ndarray]]:
    layers = layer_count(n)
    lo: list[list[int]] = [[] for _ in range(layers)]
    hi: list[list[int]] = [[] for _ in range(layers)]
    bits: list[list[int]] = [[] for _ in range(layers)]
    out = _block(list(range(n)), dst, 0, layers, lo, hi, bits)
    net = Network(
        n,
        tuple(np.array(v, np.int64) for v in lo),
        tuple(np.array(v, np.int64) for v in hi),
        np.array(out, np.int64),
    )
    return net, [np.array(b, np.uint8) for b in bits]


def _block(slots, dst, depth, layers, lo, hi, bits) -> list[int]:
    """Append the switches of the block on ``slots`` (its ``m`` wires; ``dst`` its local
    permutation or None) and return the slots of its outputs. Input switches at layer
    ``depth``, output switches at ``layers - 1 - depth``, the halves in between."""
    m = len(slots)
    if m <= 1:
        return slots
    if m == 2:
        lo[depth].append(slots[0])
        hi[depth].append(slots[1])
        if dst is not None:
            bits[depth].append(dst[0])
        return slots
    h = m // 2
    side, inv = _sides(dst) if dst is not None else (None, None)
    last = layers - 1 - depth
    lo[depth].extend(slots[0 : 2 * h : 2])
    hi[depth].extend(slots[1 : 2 * h : 2])
    upper_slots = slots[0 : 2 * h : 2]
    lower_slots = slots[1 : 2 * h : 2] + ([slots[m - 1]] if m % 2 else [])
    upper = lower = None
    if side is not None:
        bits[depth].extend(side[0 : 2 * h : 2])
        upper, lower = [0] * h, [0] * (m - h)
        for a in range(m):
            (lower if side[a] else upper)[a // 2] = dst[a] // 2
    u = _block(upper_slots, upper, depth + 1, layers, lo, hi, bits)
    v = _block(lower_slots, lower, depth + 1, layers, lo, hi, bits)
    lo[last].extend(u)
    hi[last].extend(v[:h])
    if side is not None:
        bits[last].extend(side[inv[2 * j]] for j in range(h))
    out = [0] * m
    out[0 : 2 * h : 2] = u
    out[1 : 2 * h : 2] = v[:h]
    if m % 2:
        out[m - 1] = v[h]
    return out


def _sides(dst: list[int]) -> tuple[list[int], list[int]]:
    """The looping algorithm: 0 (upper half) or 1 (lower) per input of a block, partners
    ``i, i ^ 1`` on opposite sides, and so the sources of partner outputs (returned too: the
    inverse of ``dst``). With ``m`` odd the unpaired input ``m - 1`` goes down and its chain
    ends at the unpaired output first."""
    m = len(dst)
    inv = [0] * m
    for a, d in enumerate(dst):
        inv[d] = a
    side = [-1] * m
    if m % 2:
        a = m - 1
        side[a] = 1
        while dst[a] ^ 1 < m:  # the partner output comes from above; its source's partner below
            b = inv[dst[a] ^ 1]
            side[b], side[b ^ 1] = 0, 1
            a = b ^ 1
    for start in range(0, m - m % 2, 2):
        a = start
        while side[a] < 0:
            side[a], side[a ^ 1] = 0, 1
            a = inv[dst[a] ^ 1] ^ 1  # the source of the partner output goes down; its partner up
    return side, inv


def apply(x: np.ndarray, net: Network, bits: list[np.ndarray]) -> np.ndarray:
    """The network with switch bits ``bits`` on the rows of ``x`` in the clear (for checks)."""
    y = np.array(x, copy=True)
    if y.shape[0] != net.n or len(bits) != len(net.lo):
        raise ShapeError(
            f"Beneš network on {net.n} wires: {len(net.lo)} layers of bits and {net.n} rows, "
            f"got {len(bits)} and {y.shape[0]}"
        )
    for lo, hi, s in zip(net.lo, net.hi, bits):
        a, b = y[lo], y[hi]
        swap = s.astype(bool)
        y[lo] = np.where(_column(swap, a), b, a)
        y[hi] = np.where(_column(swap, a), a, b)
    return y[net.out]


def _column(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def permute_2pc(
    proto: Additive2PC, shares: np.ndarray, holder: str, net: Network, bits: list[np.ndarray] | None
) -> np.ndarray:
    """This party's share of ``x[perm]``, where ``shares`` (int64 ``(n, w)``) is its share of
    ``x`` and ``holder`` routed ``perm`` on ``net`` into ``bits`` (given there, None at the other
    party): one call of correlated OTs from the other party to the holder over the provider's
    OT extensions (module docstring)."""
    n, w = shares.shape
    if holder not in proto.compute:
        raise ProtocolError(
            f"oblivious permutation at party {proto.party!r}: holder {holder!r} is not a compute "
            f"party ({list(proto.compute)})"
        )
    if n != net.n:
        raise ShapeError(f"oblivious permutation: {n} rows on a network of {net.n} wires")
    z = np.array(shares, dtype=np.int64, copy=True)
    count = net.switches
    if count == 0 or w == 0:
        return z
    provider = proto.provider
    if not (hasattr(provider, "receiver") and hasattr(provider, "sender")):
        raise ProtocolError(
            f"oblivious permutation of 2pc at party {proto.party!r}: needs the OT extensions of "
            f"provider 'ot' (provider {proto.provider_name!r})"
        )
    ends = np.cumsum([0] + [a.size for a in net.lo])
    if proto.party == holder:
        if bits is None or [b.size for b in bits] != [a.size for a in net.lo]:
            raise ProtocolError(
                f"oblivious permutation at holder {holder!r}: switch bits for {count} switches in "
                f"{len(net.lo)} layers needed"
            )
        t = provider.receiver.cot_recv(np.concatenate(bits), w)
        for layer, (lo, hi) in enumerate(zip(net.lo, net.hi)):
            a, b = z[lo], z[hi]
            d = b - a
            d *= bits[layer][:, None].astype(np.int64)
            d += t[ends[layer] : ends[layer + 1]]
            z[lo] = a + d
            z[hi] = b - d
        return z[net.out]

    def derive(x0: np.ndarray) -> np.ndarray:
        delta = np.empty_like(x0)
        for layer, (lo, hi) in enumerate(zip(net.lo, net.hi)):
            a, b = z[lo], z[hi]
            r = x0[ends[layer] : ends[layer + 1]]
            np.subtract(b, a, out=delta[ends[layer] : ends[layer + 1]])
            z[lo] = a - r
            z[hi] = b + r
        return delta

    provider.sender.cot_send_derived(count, w, derive)
    return z[net.out]
