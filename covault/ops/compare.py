"""Secure comparison: most significant bit, zero test, and the functions built on them.

Written once on top of the protocol primitives (``msb_addends``, ``and_``, ``prepare_b2a``,
``b2a``, ``b2a_mul``), so the same code runs under every protocol, at the 2pc dealer too (its
``(0, n)`` arrays make every local step free while it deals exactly the tuples the compute
parties use).

**Most significant bit** (:func:`msb_bits`). ``msb_addends`` gives XOR-shared words ``a, b``
with ``a + b = x`` (mod 2^64), so ``msb(x) = a_63 ^ b_63 ^ c_63``, where ``c_63`` is the carry
into bit 63 of ``a + b``: the group generate of bits 0..62 of a parallel-prefix adder
(Ladner-Fischer, JACM 1980), as in ABY3's msb extraction (Mohassel-Rindal, CCS 2018), here
evaluated as a tree that keeps only the top prefix:

1. ``G = (a & b) << 1``, ``P = (a ^ b) << 1`` (one AND round; the shift leaves a zero group in
   bit 0 so that 64 groups cover bits 0..62).
2. Five levels ``d = 1, 2, 4, 8, 16``: adjacent groups (hi, lo) merge into
   ``(G_hi ^ P_hi & G_lo, P_hi & P_lo)`` (``^`` replaces ``|``: a group never both generates
   and propagates). Words hold fields of ``2d`` bits, the lower groups in the low half, the
   upper ones in the high half. Both ANDs of a level share ONE ``and_`` call (one round):
   ``P & [P_hi | G_lo]`` (halves swapped) gives ``P_lo & P_hi`` low and ``P_hi & G_lo`` high.
   Then only half of every field is live, so adjacent words are packed into one
   (``w_2i`` and ``w_2i+1`` side by side): the traffic halves every level and element ``e``
   always sits in word ``e >> level`` (no permutation to undo).
3. Last level ``d = 32``: ``carry = G_hi ^ P_hi & G_lo`` on 32-bit words, 32 elements per word
   (no propagate needed).
4. ``msb = a_63 ^ b_63 ^ carry`` (local). The conversions are announced before step 1
   (``prepare_b2a``: rep3 makes their daBits along the first two AND rounds), then ``b2a``
   gives an arithmetic 0/1 in one round, or ``b2a_mul`` the bit and its product with values
   (bit injection, :func:`msb_mul`) in that same round.

**Radix-4 tree** (:func:`_carry_fused`; 2pc with the dealer, up to :data:`FUSED_ELEMENTS`
elements, where rounds cost more than bytes). The protocol's one-round multi-input AND
(:meth:`~covault.protocols.base.Protocol.and_many`, :mod:`covault.protocols.multiand`) merges
FOUR adjacent groups per round: ``G = G3 ^ P3 G2 ^ P3 P2 G1 ^ P3 P2 P1 G0``,
``P = P3 P2 P1 P0``, and the first merge takes the bits of ``a`` and ``b`` themselves
(``G_q = a_q b_q``, ``P_q = a_q ^ b_q``: monomials up to degree 5), so step 1's round goes
too. 64 bits: 64 -> 16 -> 4 -> 1 groups, 32 bits: 32 -> 8 -> 2 -> 1; 3 AND rounds on either
width (the binary tree: 7 and 6). A merge's variables use one lane in four (one in two at a
last two-way merge), so four words are packed into one before they are opened; the first
merge opens ``a_q`` and ``b_q`` only (``P_q``'s mask is the XOR of theirs). Per element each
compute party sends ``8/4 + 7/16 + 6/64`` words (64 bits: 20.25 bytes; 32 bits:
``8/4 + 7/16 + 2/32`` words of 4 bytes, 10 bytes) against 47.25 and about 23; the dealer
deals ``48/4 + 22/16 + 15/64`` words of mask products (108.9 bytes; 32 bits 53.6) against
23.6. ``less_than``, ``relu`` and the rest then take 4 rounds in place of 8. Beyond the
threshold the binary tree's fewer local operations per element win (the radix-4 merges expand
76 and 44 terms per packed word). ``x < 0`` over TCP/TLS, three processes on two cores
(``benchmarks/results/carry.txt``): 64 elements 1.5 ms against 1.7 (the three processes' CPU
2.1 against 2.5 ms), at a 1 ms round trip 3.8 against 5.9 ms; 1,024 elements 1.9 against 1.9
ms, at 1 ms 3.8 against 6.0; 16,384 elements 10 against 3.5 ms (3.1 times the CPU).

**Zero test** (:func:`eqz_bits`). ``a + b = 0 (mod 2^64)`` exactly when
``w = (a ^ b) ^ ((a | b) << 1)`` is all zeros (if the sum vanishes up to bit i, the carry into
bit i+1 is ``a_i | b_i``). ``a | b = a ^ b ^ (a & b)`` costs one AND round; then the 64 bits of
``~w`` are AND-reduced by the same packed tree (one AND per pair, packed before sending).

Cost per element of the binary tree (bytes SENT by each compute party; the 2pc dealer's bytes
go offline and count no rounds; 2pc with the dealer takes it beyond :data:`FUSED_ELEMENTS`
elements, the radix-4 tree's 3 AND rounds below). Exact for ``n`` a multiple of 96; otherwise every level rounds its word
count up (level ``l`` of the msb tree ANDs ``ceil(n / 2^(l-1))`` words) and a rep3 party's
daBit traffic is ``8 (n + n_i)`` bytes, ``n_i`` the size of its third of the batch:

==============  =======================  =========================================  =============
operation       2pc online / dealer      rep3                                       rounds
                                                                                    2pc / rep3
==============  =======================  =========================================  =============
msb_bits        47.25 / 23.625           8 (addends) + 23.625 = 31.625              7 / 8
less_than etc.  47.375 / 31.625          31.625 + 10.667 (daBits) + 0.125 = 42.417  8 / 9
equal (eqz)     31.875 / 23.875          8 + 15.875 + 10.667 + 0.125 = 34.667       8 / 9
relu, abs_      55.375 / 39.625          42.417 + 8 (the product) = 50.417          8 / 9
==============  =======================  =========================================  =============

The conversion opens 1 bit per element (0.125 bytes) in both protocols; 2pc uses a dealt daBit
(8 bytes from the dealer), rep3 the daBits carried by the AND rounds (8 bytes per element and 8
for the party's third: 10.667 on average, no round of their own). Bit injection (relu, abs_,
the selections of max_ and of the non-linear functions) adds 8 bytes per product element: 2pc
opens ``x - a`` (the dealer sends 8 bytes for ``[r]`` and 8 per product element), rep3 reshares
``r x``; in both, the round is the conversion's own.

AND operand bits per element, levels 0..6: 64, 64, 32, 16, 8, 4, 1 (msb: 189 bits = 23.625
bytes; a 2pc AND opens two words per operand word, a rep3 AND reshares one) and 64, 32, 16, 8,
4, 2, 1 (zero test: 15.875 bytes). Theory: the carry tree over 63 bit positions needs
``log2(64) + 1 = 7`` AND layers and 184 AND gates (64 generates, 63 merged generates and 57
merged propagates: those on the lowest spine are never used), so the packed words carry only
5 spare bits; a Kogge-Stone adder of the same depth needs 64 + 5 * 128 + 64 = 768 (a2b
in :mod:`covault.ops.convert`). Comparing two msbs for ``equal`` would cost 2 * 47.25 bytes
(2pc), three times the zero test, in the same number of rounds.

**Derived functions.** ``less_than``/``greater_than``: one msb of ``x - y``; ``equal``: one
zero test; ``sign = 1 - 2 msb(x)`` (local after the msb); ``abs_``, ``relu``: the msb injected
into ``x`` (:func:`msb_mul`, no truncation, no round beyond the conversion's); ``max_`` over
``m`` candidates: ``ceil(log2 m)`` tournament levels, each one batched comparison whose bits
select the winners in the conversion's round; ``argmax``: the tournament (the last level
without values) plus ``ceil(log2 m) - 1`` product rounds to expand the one-hot.

**Narrow comparisons.** Where a tensor's public bound keeps it within ``[-2^31, 2^31)`` ring
units (``bound 2^frac + 1 <= 2^31``; for ``f = 16`` a bound up to ``2^15 - 2^-16``, so not
the default input bound ``2^15`` itself, nor a difference of two such inputs), :func:`msb` and
:func:`msb_mul` (``less_than``, ``greater_than``, ``sign``, ``abs_``, ``relu``, ``max_``,
``argmax``) run the tree on the low 32 bits (:func:`msb_width`): one round fewer (2pc 6 / rep3 7 for the msb) and about half the AND
traffic. A tensor without a tracked bound, or a wider one, takes the 64-bit tree.

**Range.** Comparisons of fixed-point values compute ``msb(x - y)``: exact whenever
``|x - y| < 2^63`` in ring units, i.e. ``|x - y| < 2^(63 - f)`` for ``f`` fractional bits, far
beyond the encodable range ``|v| < 2^(31 - f)``. Public operands are encoded (rounded to ``f``
fractional bits) before comparing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from covault import bounds
from covault.bounds import EXACT_LIMIT
from covault.errors import ProtocolError, ShapeError
from covault.protocols.base import Rider

if TYPE_CHECKING:
    from covault.protocols.base import Protocol
    from covault.tensor import SecretTensor

U64 = np.uint64
_MASKS = tuple(
    U64(v)
    for v in (
        0x5555_5555_5555_5555,
        0x3333_3333_3333_3333,
        0x0F0F_0F0F_0F0F_0F0F,
        0x00FF_00FF_00FF_00FF,
        0x0000_FFFF_0000_FFFF,
    )
)
_LOW32 = U64(0xFFFF_FFFF)


def _merge(a: np.ndarray, lo_shift: int, hi_shift: int) -> np.ndarray:
    """Pack adjacent words: ``w'_i = (w_2i >> lo_shift) | (w_2i+1 << hi_shift)``.

    An odd last word gets a zero partner. Word ``i`` then holds elements ``2i`` and
    ``2i + 1`` side by side, so after every level element ``e`` stays in word
    ``e >> level`` at slot ``e mod 2^level``: the packing never permutes elements.
    """
    count = a.shape[1]
    half = count // 2
    word = a.dtype.type
    out = np.empty((a.shape[0], half + count % 2), dtype=a.dtype)
    lo, hi = a[:, 0 : 2 * half : 2], a[:, 1 : 2 * half : 2]
    body = out[:, :half]
    if lo_shift:
        np.right_shift(lo, word(lo_shift), out=body)
    else:
        body[...] = lo
    body |= hi << word(hi_shift) if hi_shift else hi
    if count % 2:
        out[:, half] = a[:, -1] >> word(lo_shift)
    return out


def _bits_of(words: np.ndarray, n: int) -> np.ndarray:
    """Per-element bits (uint8 0/1, shape ``(k, n)``) of ``W``-bit words, element ``e`` being bit
    ``e mod W`` of word ``e // W``."""
    k = words.shape[0]
    if k == 0:
        return np.zeros((0, n), dtype=np.uint8)
    raw = np.ascontiguousarray(words, dtype=words.dtype.newbyteorder("<")).view(np.uint8)
    return np.unpackbits(raw, axis=-1, count=n, bitorder="little")


def _addends(proto: Protocol, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = proto.msb_addends(x)
    return a.view(np.dtype(f"u{x.dtype.itemsize}")), b.view(np.dtype(f"u{x.dtype.itemsize}"))


def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))


_HALF = {64: np.uint32, 32: np.uint16}


def _carry_tree(proto: Protocol, g: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Carry out of the ``W`` (generate, propagate) groups of each element, ``W`` the word size
    (64: levels d = 1 .. 32; 32: d = 1 .. 16).

    Layout at level ``d``: fields of ``2d`` bits, low half = the lower groups, high half = the
    upper groups of the same ``d`` elements. The AND operands are ``p`` itself (``P_lo | P_hi``)
    and ``v = P_hi | G_lo`` (halves swapped), so the product holds ``P_lo & P_hi`` (the merged
    propagate) low and ``P_hi & G_lo`` high. ``g`` is consumed. Returns ``W/2``-bit words of
    ``W/2`` carries each.
    """
    width = 8 * g.dtype.itemsize
    word = g.dtype.type
    for lvl in range(width.bit_length() - 2):
        d = word(1 << lvl)
        m = word(int(_MASKS[lvl]) & ((1 << width) - 1))
        v = g << d
        v &= ~m
        t = p >> d
        t &= m
        v |= t
        r = proto.and_(p, v)
        g ^= r  # high halves: G_hi ^ P_hi & G_lo
        g &= ~m
        r &= m  # low halves: P_hi & P_lo
        g = _merge(g, 1 << lvl, 0)
        p = _merge(r, 0, 1 << lvl)
    half, h = _HALF[width], word(width // 2)
    low = word((1 << (width // 2)) - 1)
    return (g >> h).astype(half) ^ proto.and_((p >> h).astype(half), (g & low).astype(half))


FUSED_ELEMENTS = 1024  # up to this many elements, a one-round and_many takes the radix-4 tree

_MergePlan = tuple[np.ndarray, np.ndarray, tuple[tuple[int, ...], ...]]


def _frozen(values: list[int]) -> np.ndarray:
    a = np.array(values)
    a.flags.writeable = False  # cached and shared
    return a


@lru_cache(maxsize=8)
def _merge_plan(radix: int, last: bool) -> _MergePlan:
    """One merge of ``radix`` adjacent groups (``radix-1`` the highest) of the arrays ``(G, P)``:
    ``G = G_{radix-1} ^ XOR_j G_j P_{j+1} .. P_{radix-1}`` (the terms exclude each other: a
    group never both generates and propagates) and ``P = P_0 .. P_{radix-1}`` (not at the
    ``last`` merge). Returns each variable's array and group, and the monomials: the
    ``radix-1`` products of ``G`` (j = radix-2 .. 0), then ``P``'s."""
    ps = list(range(radix - 1, 0 if last else -1, -1))
    gs = list(range(radix - 2, -1, -1))
    at = {("P", q): i for i, q in enumerate(ps)} | {("G", q): len(ps) + i for i, q in enumerate(gs)}
    monos = [(*(at["P", q] for q in range(radix - 1, j, -1)), at["G", j]) for j in gs]
    if not last:
        monos.append(tuple(at["P", q] for q in ps))
    return _frozen([1] * len(ps) + [0] * len(gs)), _frozen(ps + gs), tuple(monos)


@lru_cache(maxsize=32)
def _lanes(width: int, radix: int, s: int) -> int:
    """The lanes of a merge's variables: bits ``i`` with ``i mod (radix s) < s``."""
    return sum(1 << i for i in range(width) if i % (radix * s) < s)


# The first merge takes the addends' bits themselves, G_q = a_q b_q and P_q = a_q ^ b_q (arrays
# a, b, P): G = a3 b3 ^ P3 a2 b2 ^ P3 P2 a1 b1 ^ P3 P2 P1 a0 b0, P = P3 P2 P1 P0 in ONE round.
# Variables: P3 P2 P1 P0 a3 b3 a2 b2 a1 b1 a0 b0.
_FIRST: _MergePlan = (
    _frozen([2, 2, 2, 2, 0, 1, 0, 1, 0, 1, 0, 1]),
    _frozen([3, 2, 1, 0, 3, 3, 2, 2, 1, 1, 0, 0]),
    ((4, 5), (0, 6, 7), (0, 1, 8, 9), (0, 1, 2, 10, 11), (0, 1, 2, 3)),
)
_FIRST_SUMS = ((0, 4, 5), (1, 6, 7), (2, 8, 9), (3, 10, 11))  # P_q = a_q ^ b_q: not opened


def _carry_fused(proto: Protocol, a: np.ndarray, b: np.ndarray, rider: Rider | None = None) -> np.ndarray:
    """Carry into bit ``W`` of ``a + b`` for XOR-shared words ``a, b`` of ``W`` bits, for
    protocols whose :meth:`Protocol.and_many` takes one round: each level merges ``r = 4``
    adjacent (generate, propagate) groups (the last of 32 bits 2) in ONE round, the first one
    straight from the bits of ``a`` and ``b`` (:data:`_FIRST`): ``W = 64``: 64 -> 16 -> 4 -> 1,
    ``W = 32``: 32 -> 8 -> 2 -> 1, 3 rounds where the binary tree takes 7 and 6.

    Layout: a level's groups of one element sit ``s`` lanes apart, the lanes between them
    holding other elements (offsets ``0 .. s-1``). A merge's variables (group ``q`` of every
    ``r``: ``(w >> q s) & lanes``) use one lane in ``r``, so ``r`` adjacent words are packed
    into one (word ``r i + t`` shifted by ``t s``) BEFORE they are opened: every round sends
    dense words, and the merged groups come out ``r s`` apart, the next level's layout. Element
    ``e`` ends in bit ``e mod W`` of word ``e // W`` (:func:`_bits_of`'s layout). ``rider``:
    arrays sent with the first round (:class:`~covault.protocols.base.Rider`)."""
    word = a.dtype.type
    width = 8 * a.dtype.itemsize
    if a.shape[0] == 0:  # the 2pc dealer: no shares, only the tuples of each round to deal
        return _deal_fused(proto, a, width)
    n = a.shape[1]
    arrays = np.zeros((3, a.shape[0], n + -n % 4), a.dtype)  # padded to whole merges
    arrays[0, :, :n], arrays[1, :, :n] = a, b
    np.bitwise_xor(a, b, out=arrays[2, :, :n])
    s = 1
    for radix, last, plan, sums in _fused_levels(width):
        n = arrays.shape[2]
        if n % radix:
            pad = np.zeros((*arrays.shape[:2], radix - n % radix), arrays.dtype)
            arrays = np.concatenate([arrays, pad], axis=2)
        shifts, lanes = _shifts(arrays.dtype, radix, s), word(_lanes(width, radix, s))
        v = (arrays[..., None] >> shifts) & lanes  # (arrays, c, words, q)
        v = v.reshape(*arrays.shape[:2], arrays.shape[2] // radix, radix, radix) << shifts[:, None]
        v = np.bitwise_or.reduce(v, axis=3)  # word radix i + t shifted by t s: (arrays, c, words / radix, q)
        which, group, monos = plan
        extra = {"rider": rider} if rider is not None and plan is _FIRST else {}
        prod = proto.and_many(v[which, :, :, group].swapaxes(0, 1), monos, sums, **extra)
        if plan is _FIRST:
            g = np.bitwise_xor.reduce(prod[:, :4], axis=1)
        else:
            g = v[0, :, :, radix - 1] ^ np.bitwise_xor.reduce(prod[:, : radix - 1], axis=1)
        if not last:
            arrays = np.empty((2, *g.shape), g.dtype)
            arrays[0], arrays[1], s = g, prod[:, -1], radix * s
    return g  # the last level's: the carry out of bit W - 1


@lru_cache(maxsize=32)
def _shifts(dtype: np.dtype, radix: int, s: int) -> np.ndarray:
    """``0, s, .., (radix - 1) s`` as words of ``dtype`` (read-only: cached)."""
    out = np.arange(0, radix * s, s, dtype=dtype)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=2)
def _fused_levels(width: int) -> tuple[tuple[int, bool, _MergePlan, tuple], ...]:
    """The radix-4 tree's merges on ``width`` bits, one per round, shared by the compute parties
    and the dealer: ``(radix, last, plan, sums)``, the first one :data:`_FIRST`."""
    levels, plan, count = [], _FIRST, width
    while True:
        radix = 4 if count >= 4 else 2
        last = count == radix
        levels.append((radix, last, plan or _merge_plan(radix, last), _FIRST_SUMS if plan is _FIRST else ()))
        if last:
            return tuple(levels)
        plan, count = None, count // radix


def _deal_fused(proto: Protocol, a: np.ndarray, width: int) -> np.ndarray:
    """:func:`_carry_fused` at a party without shares (the 2pc dealer, ``a`` of shape ``(0,
    n)``): the same ``and_many`` calls on empty words of the same shapes, none of the local
    steps."""
    words = a.shape[1]
    for radix, _, (which, _, monos), sums in _fused_levels(width):
        words = -(-words // radix)
        proto.and_many(np.empty((0, len(which), words), a.dtype), monos, sums)
    return np.empty((0, words), a.dtype)


def msb_bits(proto: Protocol, x: np.ndarray, bits: int = 64, rider: Rider | None = None) -> np.ndarray:
    """Boolean shares (uint8 0/1, same layout as ``x``) of the top bit of ring shares ``x``.

    ``bits=32`` works on the low 32 bits of the shares: the sign of ``x`` exactly when
    ``-2^31 <= x < 2^31`` in ring units (half the traffic; one AND round fewer on the binary
    tree, the same three on the radix-4 tree)."""
    if bits not in _HALF:
        raise ValueError(f"msb_bits works on 64 or 32 bits, got {bits}")
    k, shape = x.shape[0], x.shape[1:]
    flat = _flat(x)
    if bits == 32:
        flat = flat.astype(np.uint32)  # the low halves: additive shares of x mod 2^32
    n = flat.shape[1]
    a, b = _addends(proto, flat)
    p = a ^ b
    word = p.dtype.type
    top = (p >> word(bits - 1)).astype(np.uint8)
    if proto.fused_and and n <= FUSED_ELEMENTS:
        carry = _bits_of(_carry_fused(proto, a << word(1), b << word(1), rider), n)
    else:
        if rider is not None:
            raise ProtocolError(
                f"msb_bits at {proto.party!r} carries a rider only on the radix-4 tree (one-round AND)"
            )
        g = proto.and_(a, b)
        g <<= word(1)
        p <<= word(1)
        carry = _bits_of(_carry_tree(proto, g, p), n)
    carry ^= top
    return carry.reshape(k, *shape)


def eqz_bits(proto: Protocol, x: np.ndarray) -> np.ndarray:
    """Boolean shares (uint8 0/1) of ``[x == 0]`` for ring shares ``x``."""
    k, shape = x.shape[0], x.shape[1:]
    flat = _flat(x)
    n = flat.shape[1]
    a, b = _addends(proto, flat)
    t = a ^ b
    w = t ^ ((t ^ proto.and_(a, b)) << U64(1))  # zero iff a + b == 0
    z = proto.xor_public(w, U64(0xFFFF_FFFF_FFFF_FFFF))
    for lvl in range(5):
        d = U64(1 << lvl)
        m = _MASKS[lvl]
        hi = z >> d
        hi &= m
        z &= m
        z = proto.and_(_merge(hi, 0, 1 << lvl), _merge(z, 0, 1 << lvl))
    z = proto.and_((z >> U64(32)).astype(np.uint32), (z & _LOW32).astype(np.uint32))
    return _bits_of(z, n).reshape(k, *shape)


# -- secret tensors ---------------------------------------------------------------------------
def _is_secret(v: Any) -> bool:
    from covault.tensor import SecretTensor

    return isinstance(v, SecretTensor)


def _diff(x: Any, y: Any) -> SecretTensor:
    """``x - y`` where at least one operand is a secret tensor (broadcasting)."""
    if _is_secret(x):
        return x if _is_public_zero(y) else x - y
    if _is_secret(y):
        return -y if _is_public_zero(x) else (-y) + x
    raise TypeError("compare needs at least one secret tensor operand")


def _modular(v: Any) -> Any:
    """A secret operand with its bound dropped (for tests that are exact modulo 2^64)."""
    return type(v)(v.session, v.shares, v.frac, 0.0) if _is_secret(v) else v


def _is_public_zero(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and v == 0


def prepared_msb_bits(x: SecretTensor, bits: int = 64) -> np.ndarray:
    """Boolean shares (uint8 0/1) of ``msb(x)``, with ``x.size`` bit conversions announced
    first (``Protocol.prepare_b2a``: rep3 makes the daBits along the msb's own rounds), for
    ``Protocol.b2a`` / ``Protocol.b2a_mul`` right after. ``bits``: as :func:`msb_bits`."""
    x.proto.prepare_b2a(x.size)
    return msb_bits(x.proto, x.shares, bits)


def msb_width(x: SecretTensor) -> int:
    """32 when ``x``'s public bound keeps every value within ``[-2^31, 2^31)`` ring units
    (``bound 2^frac + 1 <= 2^31``: the encoding's rounding included), else 64: the word size
    :func:`msb_bits` needs for the exact sign of ``x``."""
    b = x.bound
    return 32 if b is not None and 0 < b and b * 2.0**x.frac + 1 <= 2.0**31 else 64


def msb(x: SecretTensor) -> SecretTensor:
    """``[x < 0]`` as an integer 0/1 secret tensor (the top bit of the ring encoding)."""
    return x._new(x.proto.b2a(prepared_msb_bits(x, msb_width(x))), 0, 1.0)


def msb_mul(x: SecretTensor, values: SecretTensor) -> tuple[SecretTensor, SecretTensor]:
    """``b = [x < 0]`` (0/1, frac 0) and the exact product ``b * values`` (frac of ``values``;
    shapes broadcast, the product has the broadcast shape) in the msb's rounds plus ONE: the
    boolean msb goes straight into the protocol's bit injection (``Protocol.b2a_mul``)."""
    x._same_session(values)
    b, prod = x.proto.b2a_mul(prepared_msb_bits(x, msb_width(x)), values.shares)
    return x._new(b, 0, 1.0), values._new(prod, values.frac, values.bound)


def less_than(x: Any, y: Any) -> SecretTensor:
    """``[x < y]`` (0/1, frac 0); ``y`` may be public (scalar or array), with broadcasting.
    Exact while ``|x - y| < 2^(63 - f)``."""
    return msb(_diff(x, y))


def greater_than(x: Any, y: Any) -> SecretTensor:
    """``[x > y]`` = ``[y < x]`` (0/1, frac 0)."""
    return msb(_diff(y, x))


def equal(x: Any, y: Any) -> SecretTensor:
    """``[x == y]`` (0/1, frac 0) by a zero test of ``x - y`` (cheaper than two msbs). The
    test is exact modulo 2^64, so the difference may wrap: it takes no bound."""
    d = _diff(_modular(x), _modular(y))
    d.proto.prepare_b2a(d.size)
    return d._new(d.proto.b2a(eqz_bits(d.proto, d.shares)), 0, 1.0)


def sign(x: SecretTensor) -> SecretTensor:
    """``-1`` where ``x < 0``, ``+1`` elsewhere (``sign(0) = +1``), as an integer tensor."""
    return 1 - msb(x) * 2


def abs_(x: SecretTensor) -> SecretTensor:
    """``|x| = x - 2 [x < 0] x`` (:func:`msb_mul`: no truncation, no extra round)."""
    _, neg = msb_mul(x, x)
    out = x - neg * 2
    return out if x.bound is None else out.with_bound(x.bound)


def relu_trunc(x: SecretTensor, bits: int) -> SecretTensor:
    """``relu(x / 2^bits)`` at ``x.frac - bits`` fractional bits, one round fewer than a
    truncation followed by :func:`relu` where the protocol can (2pc with a dealer, at most
    :data:`FUSED_ELEMENTS` elements; elsewhere exactly that): the truncation's opening
    (``Additive2PC.trunc_open``) rides with the first AND round of the sign of ``x`` itself, and
    the bit injection multiplies ``[x > 0]`` into the truncated ``x``. The result is within the
    truncation's error (one unit of the last place) of ``relu(x / 2^bits)``; rounds: the
    comparison's 4 (``x`` on 64 bits where its bound needs them), against 1 + 4."""
    if not 0 <= bits <= x.frac:
        raise ValueError(
            f"relu_trunc: bits must be within 0..{x.frac} (the tensor's fractional bits), got {bits}"
        )
    proto = x.proto
    f = x.frac - bits
    if bits:
        bounds.check(x.bound, x.frac, "truncate", EXACT_LIMIT)
    if bits == 0 or not fuses_trunc(proto, x.size):
        return _relu_after(x, bits)
    neg = -x
    proto.prepare_b2a(x.size)
    word, finish = proto.trunc_open(x.shares, bits)
    rider = Rider([] if word is None else [word])
    sign = msb_bits(proto, neg.shares, msb_width(neg), rider)
    t = finish(None if word is None else rider.back[0])
    _, prod = proto.b2a_mul(sign, t)
    return x._new(prod, f, bounds.add(x.bound, 2.0**-f))


def fuses_trunc(proto: Protocol, size: int) -> bool:
    """Whether :func:`relu_trunc` saves its round for ``size`` elements under ``proto``."""
    return hasattr(proto, "trunc_open") and proto.fused_and and 0 < size <= FUSED_ELEMENTS


def _relu_after(x: SecretTensor, bits: int) -> SecretTensor:
    """:func:`relu_trunc`'s plain route: truncate, then :func:`relu`."""
    f = x.frac - bits
    t = x._new(x.proto.trunc(x.shares, bits), f, bounds.add(x.bound, 2.0**-f)) if bits > 0 else x
    return relu(t)


def relu(x: SecretTensor, with_mask: bool = False) -> Any:
    """``max(x, 0) = [x > 0] x`` (:func:`msb_mul` of ``-x``: no truncation, no extra round).
    With ``with_mask`` returns ``(relu, mask)``, the mask being the integer 0/1 ``[x > 0]``."""
    mask, out = msb_mul(-x, x)
    return (out, mask) if with_mask else out


# -- reductions ---------------------------------------------------------------------------------
def _to_last(x: SecretTensor, axis: int | None) -> tuple[SecretTensor, int | None]:
    if axis is None:
        return x.reshape(-1), None
    if not isinstance(axis, int | np.integer):
        raise ShapeError(f"axis must be an integer or None, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of range for shape {x.shape}")
    ax = int(axis) % x.ndim
    return x._same(np.moveaxis(x.shares, ax + 1, -1)), ax


def _tournament(v: SecretTensor, values: bool) -> tuple[SecretTensor | None, list]:
    """Pairwise knock-out along the last axis; ties keep the left (lower-index) candidate.

    Returns the winners (shape ``(..., 1)``; None when ``values`` is False) and, per level,
    ``(m, c)``: the candidate count and the 0/1 "right one wins" bits of the ``m // 2`` pairs.
    """
    levels = []
    m = v.shape[-1]
    while m > 1:
        h = m // 2
        a, b = v[..., 0 : 2 * h : 2], v[..., 1 : 2 * h : 2]
        if m == 2 and not values:
            levels.append((m, less_than(a, b)))
            return None, levels
        c, pick = msb_mul(a - b, b - a)  # c = [a < b], pick = c (b - a)
        levels.append((m, c))
        best = a + pick if v.bound is None else (a + pick).with_bound(v.bound)  # one of a, b
        if m % 2:
            best = best._same(np.concatenate([best.shares, v.shares[..., 2 * h :]], axis=-1))
        v, m = best, best.shape[-1]
    return v, levels


def _check_nonempty(x: SecretTensor, what: str) -> None:
    if x.size == 0:
        raise ShapeError(f"{what} of an empty secret tensor (shape {x.shape})")


def max_(x: SecretTensor, axis: int | None = None, keepdims: bool = False) -> SecretTensor:
    """Maximum along ``axis`` (None: over all elements) by a tournament: ``ceil(log2 m)``
    comparison levels, each one batched ``less_than`` plus one product."""
    _check_nonempty(x, "max")
    v, ax = _to_last(x, axis)
    best, _ = _tournament(v, values=True)
    out = best[..., 0]
    if ax is None:
        return out.reshape((1,) * x.ndim) if keepdims else out
    return out.expand_dims(ax) if keepdims else out


def argmax(x: SecretTensor, axis: int | None = None, keepdims: bool = False) -> SecretTensor:
    """One-hot 0/1 integer tensor of ``x``'s shape marking the FIRST maximum along ``axis``
    (None: over all elements). ``keepdims`` has no effect (the indicator keeps every axis).

    The tournament records each pair's bit ``c``; the indicator is expanded from the root
    down: children of a node with indicator ``t`` get ``t - t*c`` and ``t*c`` (one product per
    level; the root's is free). Cost: the tournament's comparisons plus
    ``ceil(log2 m) - 1`` product rounds on ``< m`` elements.
    """
    del keepdims
    _check_nonempty(x, "argmax")
    v, ax = _to_last(x, axis)
    m = v.shape[-1]
    if m == 1:
        proto = x.proto
        return x._new(proto.add_public(proto.empty(x.shape), np.ones(x.shape, np.int64)), 0, 1.0)
    _, levels = _tournament(v, values=False)
    ind = None
    for m, c in reversed(levels):
        h = m // 2
        if ind is None:
            right, left = c, 1 - c
            ind_rest = None
        else:
            right = ind[..., :h] * c
            left = ind[..., :h] - right
            ind_rest = ind.shares[..., h:]
        pairs = np.stack([left.shares, right.shares], axis=-1)
        shares = pairs.reshape(*pairs.shape[:-2], 2 * h)
        if m % 2:
            shares = np.concatenate([shares, ind_rest], axis=-1)
        ind = c._new(shares, 0, 1.0)
    if ax is None:
        return ind.reshape(x.shape)
    return ind._same(np.moveaxis(ind.shares, -1, ax + 1))
