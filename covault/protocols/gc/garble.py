"""Half-gates garbling with free-XOR, one circuit level at a time over many instances.

Labels are 128-bit, stored as uint64 pairs: a party's labels of one level are ``(wires, n, 2)``
for ``n`` instances of the circuit. The garbler draws a global offset ``delta`` with its least
significant bit 1 (Kolesnikov-Schneider, ICALP 2008: free XOR) and a zero-label per input wire;
wire ``w`` carrying bit ``v`` has label ``W_0 ^ v delta``, and ``lsb(W_v) = p_w ^ v`` with the
permute bit ``p_w = lsb(W_0)`` (point-and-permute). Per level:

- XOR: ``W_0 = A_0 ^ B_0`` (the evaluator XORs its labels); INV: ``W_0 = A_0 ^ delta`` (the
  evaluator copies its label); no table, no hash.
- AND (Zahur, Rosulek, Evans, "Two Halves Make a Whole", EUROCRYPT 2015), gate index ``j``,
  ``p_a, p_b`` the input permute bits, ``H`` of :mod:`covault.protocols.gc.hash` with tweaks
  ``2j`` and ``2j + 1`` (and the instance's index):
  garbler half ``T_G = H(A_0) ^ H(A_1) ^ p_b delta``, ``W_G = H(A_0) ^ p_a T_G``;
  evaluator half ``T_E = H(B_0) ^ H(B_1) ^ A_0``, ``W_E = H(B_0) ^ p_b (T_E ^ A_0)``;
  ``W_0 = W_G ^ W_E``; the table is ``(T_G, T_E)``: 32 bytes. The evaluator, holding ``A, B``
  with ``s_a = lsb(A)``, ``s_b = lsb(B)``, computes
  ``W = H(A) ^ s_a T_G ^ H(B) ^ s_b (T_E ^ A)``.

All AND gates of a level, over all instances, are hashed in ONE AES call (the garbler 4 blocks
per gate, the evaluator 2). Cost per AND gate: 32 bytes, 4 (garbling) / 2 (evaluation) AES
blocks; XOR and INV: free.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from covault.errors import ShapeError
from covault.protocols.gc.circuit import Circuit, Level, free_gates
from covault.protocols.gc.hash import GarbleHash

U64 = np.uint64
_ONE = U64(1)
TABLE = 2  # (T_G, T_E) per gate: tables are (n_and, 2, n, 2), each half contiguous per gate
BLOCK_ANDS = 1 << 14


def _lanes(first: int, g: int, halves: tuple[int, ...]) -> np.ndarray:
    idx = 2 * (first + np.arange(g, dtype=np.uint64))
    return np.stack([idx + U64(h) for h in halves])[:, :, None]


def _instances(offset: int, n: int) -> np.ndarray:
    return (U64(offset) + np.arange(n, dtype=np.uint64))[None, None, :]


def _blocks(circuit: Circuit, n: int) -> list[tuple[int, int]]:
    """Instance blocks small enough that a level's hashing stays in cache (about 2^14 AND
    gates per AES call), large enough to amortise numpy's per-call cost."""
    widest = max((lv.and_[0].size for lv in circuit.levels), default=1)
    size = min(BLOCK_ANDS, max(256, BLOCK_ANDS // max(widest, 1)))
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)] or [(0, 0)]


def _labels(what: str, labels: object, rows: int) -> int:
    if (
        not isinstance(labels, np.ndarray)
        or labels.dtype != np.uint64
        or labels.ndim != 3
        or labels.shape[0] != rows
        or labels.shape[2] != 2
    ):
        raise ShapeError(
            f"{what}: labels must be uint64 ({rows}, n, 2), got "
            f"{getattr(labels, 'dtype', type(labels).__name__)} {getattr(labels, 'shape', '')}"
        )
    return int(labels.shape[1])


def garble(
    circuit: Circuit, zero: np.ndarray, delta: np.ndarray, hasher: GarbleHash, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Garble ``n`` instances from the zero-labels of every input (uint64 ``(inputs, n, 2)``, the
    garbler's inputs first): the tables (uint64 ``(n_and, 2, n, 2)``: ``T_G``, ``T_E``) and the outputs' zero-labels
    (``(outputs, n, 2)``). ``offset`` numbers the first instance (tweaks never repeat)."""
    n = _labels("garbling", zero, len(circuit.inputs))
    if (
        not isinstance(delta, np.ndarray)
        or delta.dtype != np.uint64
        or delta.shape != (2,)
        or not delta[0] & _ONE
    ):
        raise ShapeError("garbling: delta must be uint64 (2,) with its least significant bit set")
    tables = np.empty((circuit.n_and, TABLE, n, 2), dtype=np.uint64)
    out = np.empty((len(circuit.outputs), n, 2), dtype=np.uint64)
    for lo, hi in _blocks(circuit, n):
        out[:, lo:hi] = _garble_block(
            circuit, zero[:, lo:hi], delta, hasher, offset + lo, tables[:, :, lo:hi]
        )
    return tables, out


def _walk(
    circuit: Circuit,
    inputs: np.ndarray,
    flip: np.ndarray | None,
    rows: int,
    and_gates: Callable[[Level, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Labels level by level from the inputs' (``(inputs, n, 2)``): free gates here, each
    level's AND gates by ``and_gates(level, x)`` with ``x`` (``(rows, g, n, 2)``) holding the
    left inputs in row 0 and the right ones in row ``rows // 2``; the outputs' labels."""
    n = inputs.shape[1]
    lab = np.empty((circuit.slots, n, 2), dtype=np.uint64)
    lab[circuit.inputs] = inputs
    for lv in circuit.levels:
        free_gates(lab, lv, flip)
        a, b, o = lv.and_
        if o.size:
            x = np.empty((rows, o.size, n, 2), dtype=np.uint64)
            np.take(lab, a, axis=0, out=x[0])
            np.take(lab, b, axis=0, out=x[rows // 2])
            lab[o] = and_gates(lv, x)
    return lab[circuit.outputs]


def _garble_block(
    circuit: Circuit, zero: np.ndarray, delta: np.ndarray, hasher: GarbleHash, offset: int, tables: np.ndarray
) -> np.ndarray:
    inst = _instances(offset, zero.shape[1])

    def and_gates(lv: Level, x: np.ndarray) -> np.ndarray:
        g = x.shape[1]
        a0, b0 = x[0], x[2]
        np.bitwise_xor(a0, delta, out=x[1])
        np.bitwise_xor(b0, delta, out=x[3])
        h = hasher(x, _lanes(lv.first_and, g, (0, 0, 1, 1)), inst)
        pa = -(a0[..., :1] & _ONE)
        pb = -(b0[..., :1] & _ONE)
        t = tables[lv.first_and : lv.first_and + g]
        tg, te = t[:, 0], t[:, 1]
        np.bitwise_xor(h[0], h[1], out=tg)
        tg ^= delta & pb
        np.bitwise_xor(h[2], h[3], out=te)  # T_E ^ A_0
        w = h[2] ^ (te & pb)  # W_E
        w ^= h[0]
        w ^= tg & pa  # + W_G
        te ^= a0
        return w

    return _walk(circuit, zero, delta, 4, and_gates)


def evaluate(
    circuit: Circuit, labels: np.ndarray, tables: np.ndarray, hasher: GarbleHash, offset: int = 0
) -> np.ndarray:
    """Evaluate ``n`` garbled instances from one label per input (uint64 ``(inputs, n, 2)``, the
    garbler's first) and the tables of :func:`garble`: the output labels ``(outputs, n, 2)``."""
    n = _labels("garbled evaluation", labels, len(circuit.inputs))
    want = (circuit.n_and, TABLE, n, 2)
    if not isinstance(tables, np.ndarray) or tables.dtype != np.uint64 or tables.shape != want:
        raise ShapeError(
            f"garbled evaluation: tables must be uint64 {want}, got "
            f"{getattr(tables, 'dtype', type(tables).__name__)} {getattr(tables, 'shape', '')}"
        )
    out = np.empty((len(circuit.outputs), n, 2), dtype=np.uint64)
    for lo, hi in _blocks(circuit, n):
        out[:, lo:hi] = _evaluate_block(circuit, labels[:, lo:hi], tables[:, :, lo:hi], hasher, offset + lo)
    return out


def _evaluate_block(
    circuit: Circuit, labels: np.ndarray, tables: np.ndarray, hasher: GarbleHash, offset: int
) -> np.ndarray:
    inst = _instances(offset, labels.shape[1])

    def and_gates(lv: Level, x: np.ndarray) -> np.ndarray:
        g = x.shape[1]
        h = hasher(x, _lanes(lv.first_and, g, (0, 1)), inst)
        t = tables[lv.first_and : lv.first_and + g]
        sa = -(x[0][..., :1] & _ONE)
        sb = -(x[1][..., :1] & _ONE)
        w = t[:, 1] ^ x[0]
        w &= sb
        w ^= h[0]
        w ^= h[1]
        w ^= t[:, 0] & sa
        return w

    return _walk(circuit, labels, None, 2, and_gates)


def permute_bits(labels: np.ndarray) -> np.ndarray:
    """The point-and-permute bit (least significant) of every label: uint8 of ``labels.shape[:-1]``."""
    return (labels[..., 0] & _ONE).astype(np.uint8)


def translate(
    zero: np.ndarray,
    delta: np.ndarray,
    hasher: GarbleHash,
    weights: np.ndarray,
    masks: np.ndarray,
    first: int,
    offset: int = 0,
) -> np.ndarray:
    """Output translation into Z_2^64 (the garbler): for output wire ``i`` with zero-label
    ``W_0`` and permute bit ``p``, the entry ``s`` (the lsb of the evaluator's label) is
    ``H(W_(s^p), T_i)_low64 + weights[i] (s ^ p) + masks[i]``, int64 ``(k, n, 2)``; the tweak
    lane is ``2 (first + i)`` (``first``: past the AND gates' tweaks)."""
    k, n = zero.shape[:2]
    p = zero[..., 0] & _ONE
    lanes = _lanes(first, k, (0,))[0]
    inst = _instances(offset, n)[0]
    out = np.empty((k, n, 2), dtype=np.int64)
    for s in (0, 1):
        bit = p ^ U64(s)
        h = hasher(zero ^ (delta & -bit[..., None]), lanes, inst)
        out[..., s] = h[..., 0].view(np.int64) + weights[:, None] * bit.view(np.int64) + masks
    return out


def read_translation(
    labels: np.ndarray, table: np.ndarray, hasher: GarbleHash, first: int, offset: int = 0
) -> np.ndarray:
    """The evaluator's side of :func:`translate`: ``weights[i] b_i + masks[i]`` per output wire
    (int64 ``(k, n)``) from its output labels and the garbler's table."""
    k, n = labels.shape[:2]
    h = hasher(labels, _lanes(first, k, (0,))[0], _instances(offset, n)[0])
    s = (labels[..., 0] & _ONE).astype(np.intp)
    return np.take_along_axis(table, s[..., None], axis=2)[..., 0] - h[..., 0].view(np.int64)
