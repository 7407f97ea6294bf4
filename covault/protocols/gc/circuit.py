"""Boolean circuits in layers, for garbling many instances at once.

A :class:`Builder` records gates (``XOR``, ``AND``, ``INV``) over numbered wires; the garbler's
and the evaluator's input wires come first. :meth:`Builder.build` levelises them into a
:class:`Circuit`: level ``l`` holds every gate whose inputs are all ready after level ``l - 1``
(inputs are level 0), as numpy index arrays per gate type, so one level is a handful of numpy
operations over every instance. AND gates are numbered in level order (a level's ANDs are one
contiguous range of the garbled tables). Wires are mapped onto *slots*: a slot is reused once
its wire has been read for the last time (never within the level that reads it), so a circuit
of a few hundred wires needs storage only for the wires alive at once.

:meth:`Circuit.plain` evaluates the circuit on plaintext bits through the same levels and slots:
the reference the garbled evaluation is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from covault.errors import ShapeError

XOR, AND, INV = "xor", "and", "inv"


@dataclass(frozen=True)
class Level:
    """The gates of one level, as slot indices: ``xor`` and ``and`` are ``(a, b, out)``,
    ``inv`` is ``(a, out)``; ``first_and`` numbers this level's first AND gate."""

    xor: tuple[np.ndarray, np.ndarray, np.ndarray]
    inv: tuple[np.ndarray, np.ndarray]
    and_: tuple[np.ndarray, np.ndarray, np.ndarray]
    first_and: int


@dataclass(frozen=True)
class Circuit:
    """A levelised circuit: ``garbler_inputs`` / ``evaluator_inputs`` bits in, ``outputs`` bits
    out (all as slot indices), ``n_and`` AND gates, ``slots`` wires' worth of storage."""

    garbler_inputs: np.ndarray
    evaluator_inputs: np.ndarray
    outputs: np.ndarray
    levels: tuple[Level, ...]
    slots: int
    n_and: int
    n_gates: int

    @property
    def inputs(self) -> np.ndarray:
        """Slots of all inputs, the garbler's first."""
        return np.concatenate([self.garbler_inputs, self.evaluator_inputs])

    @property
    def and_levels(self) -> int:
        """Levels that hold an AND gate (at least the AND depth)."""
        return sum(1 for lv in self.levels if lv.and_[0].size)

    def check_inputs(self, what: str, garbler: np.ndarray, evaluator: np.ndarray) -> int:
        """The number of instances of 0/1 inputs ``(bits, n)`` for both parties, or ShapeError."""
        want = (len(self.garbler_inputs), len(self.evaluator_inputs))
        for name, bits, k in (("garbler", garbler, want[0]), ("evaluator", evaluator, want[1])):
            if not isinstance(bits, np.ndarray) or bits.ndim != 2 or bits.shape[0] != k:
                raise ShapeError(
                    f"{what}: the {name}'s inputs must be an array ({k}, n), got "
                    f"{getattr(bits, 'shape', type(bits).__name__)}"
                )
        if garbler.shape[1] != evaluator.shape[1]:
            raise ShapeError(
                f"{what}: {garbler.shape[1]} garbler instances but {evaluator.shape[1]} evaluator ones"
            )
        return int(garbler.shape[1])

    def plain(self, garbler: np.ndarray, evaluator: np.ndarray) -> np.ndarray:
        """Outputs ``(outputs, n)`` uint8 on plaintext bits ``(inputs, n)`` of each party."""
        n = self.check_inputs("plaintext circuit", garbler, evaluator)
        w = np.zeros((self.slots, n), dtype=np.uint8)
        w[self.garbler_inputs] = garbler & 1
        w[self.evaluator_inputs] = evaluator & 1
        for lv in self.levels:
            free_gates(w, lv, np.uint8(1))
            a, b, o = lv.and_
            if o.size:
                w[o] = w[a] & w[b]
        return w[self.outputs]


def free_gates(store: np.ndarray, level: Level, flip: np.ndarray | np.generic | None) -> None:
    """The XOR and INV gates of ``level`` on ``store`` (one row per slot): XOR of the rows, INV
    as XOR with ``flip`` (the garbler's ``delta``, 1 for plaintext bits) or a copy (None: the
    evaluator's labels)."""
    a, b, o = level.xor
    if o.size:
        store[o] = store[a] ^ store[b]
    a, o = level.inv
    if o.size:
        store[o] = store[a] if flip is None else store[a] ^ flip


class Builder:
    """Records a circuit gate by gate (wires are ints); :meth:`build` levelises it."""

    def __init__(self) -> None:
        self.wires = 0
        self.gates: list[tuple[str, int, int, int]] = []  # (type, a, b, out); INV has b = -1
        self.garbler: list[int] = []
        self.evaluator: list[int] = []
        self._zero: int | None = None

    def _new(self) -> int:
        self.wires += 1
        return self.wires - 1

    def _check(self, *ws: int) -> None:
        for w in ws:
            if not isinstance(w, int | np.integer) or not 0 <= w < self.wires:
                raise ShapeError(f"circuit builder: no wire {w!r} (wires 0..{self.wires - 1})")

    def input(self, party: str, bits: int) -> list[int]:
        """``bits`` new input wires of ``party`` ('garbler' or 'evaluator'), least significant first.
        All inputs come before the first gate."""
        if party not in ("garbler", "evaluator"):
            raise ShapeError(f"circuit builder: inputs belong to 'garbler' or 'evaluator', not {party!r}")
        if self.gates:
            raise ShapeError("circuit builder: declare every input before the first gate")
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
            raise ShapeError(f"circuit builder: an input needs bits >= 1, got {bits!r}")
        new = [self._new() for _ in range(bits)]
        (self.garbler if party == "garbler" else self.evaluator).extend(new)
        return new

    def _gate(self, kind: str, a: int, b: int = -1) -> int:
        self._check(a, *(() if b < 0 else (b,)))
        out = self._new()
        self.gates.append((kind, int(a), int(b), out))
        return out

    def xor(self, a: int, b: int) -> int:
        return self._gate(XOR, a, b)

    def and_(self, a: int, b: int) -> int:
        return self._gate(AND, a, b)

    def inv(self, a: int) -> int:
        return self._gate(INV, a)

    def or_(self, a: int, b: int) -> int:
        """``a | b = a ^ b ^ (a & b)``: one AND."""
        return self.xor(self.xor(a, b), self.and_(a, b))

    def mux(self, s: int, a: int, b: int) -> int:
        """``a`` if ``s`` else ``b``: ``b ^ (s & (a ^ b))``, one AND."""
        return self.xor(b, self.and_(s, self.xor(a, b)))

    def zero(self) -> int:
        """A constant-0 wire (``w ^ w`` of the first input; free)."""
        if self._zero is None:
            if not self.wires:
                raise ShapeError("circuit builder: a constant needs an input wire first")
            self._zero = self.xor(0, 0)
        return self._zero

    def build(self, outputs: Sequence[int]) -> Circuit:
        """Levelise, allocate slots and return the circuit computing ``outputs``."""
        outs = [int(w) for w in outputs]
        self._check(*outs)
        if not outs:
            raise ShapeError("circuit builder: a circuit needs at least one output")
        level = np.zeros(self.wires, dtype=np.int64)
        for kind, a, b, o in self.gates:
            level[o] = 1 + max(level[a], level[b] if kind != INV else 0)
        depth = int(level.max(initial=0))
        last = np.full(self.wires, -1, dtype=np.int64)  # level of the last read
        for kind, a, b, o in self.gates:
            last[a] = max(last[a], level[o])
            if kind != INV:
                last[b] = max(last[b], level[o])
        last[outs] = depth + 1
        inputs = [*self.garbler, *self.evaluator]
        slot = np.full(self.wires, -1, dtype=np.int64)
        slot[inputs] = np.arange(len(inputs))
        free: list[int] = []
        slots = len(inputs)
        by_level: list[list[tuple[str, int, int, int]]] = [[] for _ in range(depth + 1)]
        for g in self.gates:
            by_level[level[g[3]]].append(g)
        dying: list[list[int]] = [[] for _ in range(depth + 2)]
        for w in range(self.wires):
            if last[w] >= 0:
                dying[last[w]].append(w)
        levels: list[Level] = []
        n_and = 0
        for lv in range(1, depth + 1):
            groups: dict[str, list[tuple[int, int, int]]] = {XOR: [], INV: [], AND: []}
            for kind, a, b, o in by_level[lv]:
                if last[o] < 0:
                    continue  # never read: not computed
                if free:
                    slot[o] = free.pop()
                else:
                    slot[o], slots = slots, slots + 1
                groups[kind].append((slot[a], slot[b] if b >= 0 else -1, slot[o]))
            free.extend(int(slot[w]) for w in dying[lv])  # reusable from the next level on

            def cols(rows: list[tuple[int, int, int]], k: int) -> tuple[np.ndarray, ...]:
                arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
                return tuple(arr[:, i].copy() for i in range(3) if k == 3 or i != 1)

            ands = cols(groups[AND], 3)
            levels.append(Level(cols(groups[XOR], 3), cols(groups[INV], 2), ands, n_and))
            n_and += ands[0].size
        return Circuit(
            garbler_inputs=slot[self.garbler].copy(),
            evaluator_inputs=slot[self.evaluator].copy(),
            outputs=slot[outs].copy(),
            levels=tuple(lv for lv in levels if any(x[0].size for x in (lv.xor, lv.inv, lv.and_))),
            slots=slots,
            n_and=n_and,
            n_gates=sum(lv.xor[0].size + lv.inv[0].size + lv.and_[0].size for lv in levels),
        )


def to_bits(words: np.ndarray, width: int) -> np.ndarray:
    """The low ``width`` bits of integer ``words`` (any shape, flattened): uint8 ``(width, n)``,
    least significant first."""
    w = np.ascontiguousarray(np.asarray(words).reshape(-1), dtype="<i8")
    bits = np.unpackbits(w.view(np.uint8).reshape(-1, 8), axis=1, count=width, bitorder="little")
    return np.ascontiguousarray(bits.T)


def from_bits(bits: np.ndarray, signed: bool = True) -> np.ndarray:
    """Integers (int64, ``(n,)``) from bits ``(width, n)``, least significant first; two's
    complement (sign-extended) when ``signed``."""
    width = bits.shape[0]
    acc = np.zeros(bits.shape[1], dtype=np.uint64)
    for i in range(width):
        acc |= bits[i].astype(np.uint64) << np.uint64(i)
    out = acc.view(np.int64)
    if signed and width < 64:
        out = out - (bits[-1].astype(np.int64) << width)
    return out
