"""Beneš networks: routing a permutation into switch bits, and the two-party oblivious
permutation of 2pc without a dealer (provider ``ot``) that the oblivious shuffle runs twice.

**Network.** A Beneš network on ``N = 2^k`` wires (Beneš 1964) has ``2k - 1`` layers of ``N/2``
two-input switches and realises every permutation of the wires. Recursively: a layer of input
switches, whose top outputs feed an upper and bottom outputs a lower network on ``N/2`` wires,
then a layer of output switches, each fed by one output of each half. Here the wires of depth
``d`` lie as ``2^d`` contiguous blocks of ``m = N / 2^d``; a switch layer acts on adjacent pairs
``(2i, 2i + 1)``, and between depths each block is split into its even and odd positions
(:func:`depth_order`), the upper and lower halves. :func:`route` finds the bits by the looping
algorithm (Waksman 1968), all blocks of a depth in one pass: an input goes up, so the source of
its output's partner goes down, so that source's partner goes up, and so on round each cycle;
``O(N log N)`` steps. Every permutation is routed exactly, so a uniformly random permutation
gives a uniformly random output order (random switch bits would not: ``2^{(2k-1)N/2}`` settings
for ``N!`` permutations, not evenly).

**Oblivious permutation** (Mohassel and Sadeghian, "How to hide circuits in MPC", EUROCRYPT
2013: an oblivious permutation by a switching network). The holder ``P_H`` of a permutation
``pi`` and the other party ``P_O`` hold additive shares of ``N`` rows of ``w`` words. A switch
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
(Beside the alternative of one OT call per layer this saves ``2 (2k - 2)`` flights; beside
chosen-message OT of both switch outputs, as in the paper, it sends ``8 w`` instead of
``32 w`` bytes per switch.)

Rows not a power of two: ``n`` rows are padded with public zero rows to ``N = 2^ceil(log2 n)``,
and the holder draws ``pi`` uniformly among the permutations that keep the padding at the end
(the real rows in a uniformly random order in positions ``0 .. n - 1``): both parties drop the
last ``N - n`` rows, and nothing needs announcing. (Waksman's network for arbitrary ``n`` would
save up to half the switches.)

Cost per permutation of ``n`` rows of ``w`` words: ``(2k - 1) N / 2`` correlated OTs of ``w``
words, ``(2k - 1) N/2 (16 + 8 w)`` bytes (16 from the holder, ``8 w`` back), 2 flights (1
round at each party); the holder's routing is ``O(N log N)`` Python steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from covault.errors import ProtocolError, ShapeError

if TYPE_CHECKING:
    from covault.protocols.additive import Additive2PC


def size_for(n: int) -> int:
    """The network size for ``n`` rows: the least power of two ``>= n`` (1 for ``n <= 1``)."""
    if n < 0:
        raise ShapeError(f"Beneš network: n must be >= 0 rows, got {n}")
    return 1 << (n - 1).bit_length() if n > 1 else 1


def layer_count(size: int) -> int:
    """Switch layers of the network on ``size = 2^k`` wires: ``2k - 1`` (0 for one wire)."""
    k = _log2(size)
    return max(0, 2 * k - 1)


def _log2(size: int) -> int:
    k = int(size).bit_length() - 1
    if size < 1 or 1 << k != size:
        raise ShapeError(f"Beneš network: the size must be a power of two, got {size}")
    return k


def depth_order(size: int, depth: int) -> np.ndarray:
    """Gather index from depth ``depth`` to ``depth + 1``: each block of ``m = size >> depth``
    wires becomes its even positions (upper half) followed by its odd ones (lower half)."""
    m = size >> depth
    return np.arange(size).reshape(size // m, m // 2, 2).transpose(0, 2, 1).reshape(size)


def route(perm: np.ndarray) -> list[np.ndarray]:
    """Switch bits (uint8 ``(size/2,)`` per layer, input layers first) with which the network
    maps rows ``x`` to ``x[perm]``; ``perm`` a permutation of ``0 .. size - 1``, size a power of
    two."""
    perm = np.asarray(perm, dtype=np.int64)
    size = perm.size
    k = _log2(size)
    if not np.array_equal(np.sort(perm), np.arange(size)):
        raise ShapeError(f"Beneš routing: not a permutation of 0..{size - 1}")
    if k == 0:
        return []
    dst = np.empty(size, np.int64)
    dst[perm] = np.arange(size)  # input i goes to output dst[i]
    ins: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    for depth in range(k - 1):
        m = size >> depth
        inv = np.empty(size, np.int64)
        inv[dst] = np.arange(size)
        side = _loops(dst.tolist(), inv.tolist())
        ins.append(side[0::2].astype(np.uint8))
        outs.append(side[inv[0::2]].astype(np.uint8))
        base = np.arange(size) // m * m
        half = side * (m // 2)
        nxt = np.empty(size, np.int64)
        nxt[base + (np.arange(size) % m) // 2 + half] = base + (dst % m) // 2 + half
        dst = nxt
    middle = (dst[0::2] & 1).astype(np.uint8)
    return [*ins, middle, *outs[::-1]]


def _loops(dst: list[int], inv: list[int]) -> np.ndarray:
    """The looping algorithm on every block at once: 0 (upper) or 1 (lower) per input, partners
    ``i, i ^ 1`` on opposite sides, and so are the sources of partner outputs."""
    side = [-1] * len(dst)
    for start in range(0, len(dst), 2):
        a = start
        while side[a] < 0:
            side[a], side[a ^ 1] = 0, 1
            a = inv[dst[a] ^ 1] ^ 1  # the source of the partner output goes down; its partner up
    return np.array(side, dtype=np.int64)


def apply(x: np.ndarray, bits: list[np.ndarray]) -> np.ndarray:
    """The network with switch bits ``bits`` on the rows of ``x`` in the clear (for checks)."""
    y = np.array(x, copy=True)
    size = y.shape[0]
    k = _log2(size)
    if len(bits) != layer_count(size):
        raise ShapeError(f"Beneš network on {size} wires: {layer_count(size)} layers, got {len(bits)}")
    for layer, order, before in _schedule(k):
        if before is not None:
            y = y[before]
        s = bits[layer].astype(bool)
        a, b = y[0::2][s].copy(), y[1::2][s].copy()
        y[0::2][s], y[1::2][s] = b, a
        if order is not None:
            y = y[order]
    return y


def _schedule(k: int) -> list[tuple[int, np.ndarray | None, np.ndarray | None]]:
    """Per layer: its index, the gather after it (input layers) and the gather before it
    (output layers)."""
    size = 1 << k
    out: list[tuple[int, np.ndarray | None, np.ndarray | None]] = []
    for depth in range(k - 1):
        out.append((depth, depth_order(size, depth), None))
    if k:
        out.append((k - 1, None, None))
    for depth in range(k - 2, -1, -1):
        back = np.empty(size, np.int64)
        back[depth_order(size, depth)] = np.arange(size)
        out.append((2 * k - 2 - depth, None, back))
    return out


def padded_permutation(perm_real: np.ndarray, size: int) -> np.ndarray:
    """``perm_real`` (a permutation of the ``n`` real rows) on ``size`` wires, the padding rows
    ``n .. size - 1`` left in place at the end."""
    n = perm_real.size
    return np.concatenate([np.asarray(perm_real, np.int64), np.arange(n, size, dtype=np.int64)])


def permute_2pc(
    proto: Additive2PC, shares: np.ndarray, holder: str, bits: list[np.ndarray] | None
) -> np.ndarray:
    """This party's share of ``x[perm]`` where ``shares`` (int64 ``(size, w)``) is its share of
    ``x`` and ``perm`` is routed into ``bits`` by ``holder`` (``bits`` given there, None at the
    other party): one call of correlated OTs from the other party to the holder over the
    provider's OT extensions (module docstring)."""
    size, w = shares.shape
    k = _log2(size)
    layers = layer_count(size)
    if layers == 0 or w == 0:
        return np.array(shares, copy=True)
    ot = getattr(proto.provider, "receiver", None), getattr(proto.provider, "sender", None)
    if None in ot:
        raise ProtocolError(
            f"oblivious permutation of 2pc at party {proto.party!r}: needs the OT extensions of "
            f"provider 'ot' (provider {proto.provider_name!r})"
        )
    schedule = _schedule(k)
    half = size // 2
    z = np.array(shares, dtype=np.int64, copy=True)
    if proto.party == holder:
        if bits is None or len(bits) != layers:
            raise ProtocolError(
                f"oblivious permutation at holder {holder!r}: {layers} layers of switch bits needed"
            )
        choices = np.concatenate(bits).astype(np.uint8)
        t = proto.provider.receiver.cot_recv(choices, w).reshape(layers, half, w)
        for layer, order, before in schedule:
            if before is not None:
                z = z[before]
            a, b = z[0::2], z[1::2]
            d = b - a
            d *= bits[layer][:, None].astype(np.int64)
            d += t[layer]
            a += d
            b -= d
            if order is not None:
                z = z[order]
        return z

    def derive(x0: np.ndarray) -> np.ndarray:
        nonlocal z
        x0 = x0.reshape(layers, half, w)
        delta = np.empty_like(x0)
        for layer, order, before in schedule:
            if before is not None:
                z = z[before]
            a, b = z[0::2], z[1::2]
            np.subtract(b, a, out=delta[layer])
            a -= x0[layer]
            b += x0[layer]
            if order is not None:
                z = z[order]
        return delta.reshape(layers * half, w)

    proto.provider.sender.cot_send_derived(layers * half, w, derive)
    return z
