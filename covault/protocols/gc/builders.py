"""Circuits over n-bit two's-complement words (lists of wires, least significant bit first).

AND gates per call for ``n``-bit words (XOR and INV are free under free-XOR); depth is in AND
gates on the longest path:

=====================  ====================  =================  ===================================
circuit                ANDs                  AND depth          how
=====================  ====================  =================  ===================================
add, sub (mod 2^n)     n - 1                 n - 1              ripple carry ``c' = c ^ ((x^c) & (y^c))``
add_log (mod 2^n)      151 (n=32), 373 (64)  ceil(log2(n-1))+1  Sklansky prefix of (generate, propagate)
msb_of_sum             n - 1                 n - 1              the carry chain only
greater (signed)       n                     n                  MSB of ``y - x`` on n + 1 bits (exact)
positive (x > 0)       n - 1                 ceil(log2(n-1))+1  ``~x_(n-1) & OR(x_0..x_(n-2))``
equal                  n - 1                 ceil(log2 n)       AND tree of ``~(x_i ^ y_i)``
relu                   n - 1                 1                  ``x_i & ~x_(n-1)``
maximum of k           (k - 1) 2n            ceil(log2 k) 2n    a tournament of ``greater``, ``mux``
argmax of k            + (k - 1) ceil(log2 k)                   the tournament carries the index
=====================  ====================  =================  ===================================
"""

from __future__ import annotations

from collections.abc import Sequence

from covault.errors import ShapeError
from covault.protocols.gc.circuit import Builder

Word = list[int]


def _same(what: str, *words: Sequence[int]) -> int:
    n = len(words[0])
    if n < 1 or any(len(w) != n for w in words):
        raise ShapeError(f"circuit {what}: words must have one width >= 1, got {[len(w) for w in words]}")
    return n


def add(b: Builder, x: Sequence[int], y: Sequence[int], carry_in: bool = False) -> Word:
    """``x + y (+ 1)`` mod 2^n by ripple carry: n - 1 ANDs."""
    n = _same("add", x, y)
    out: Word = []
    c: int | None = None
    for i in range(n):
        if c is None:
            s = b.xor(x[i], y[i])
            out.append(b.inv(s) if carry_in else s)
            if i + 1 < n:  # carry 0: x & y; carry 1: x | y = ~(~x & ~y)
                c = b.inv(b.and_(b.inv(x[i]), b.inv(y[i]))) if carry_in else b.and_(x[i], y[i])
            continue
        out.append(b.xor(b.xor(x[i], y[i]), c))
        if i + 1 < n:
            c = b.xor(c, b.and_(b.xor(x[i], c), b.xor(y[i], c)))
    return out


def sub(b: Builder, x: Sequence[int], y: Sequence[int]) -> Word:
    """``x - y`` mod 2^n = ``x + ~y + 1``: n - 1 ANDs."""
    _same("sub", x, y)
    return add(b, x, [b.inv(w) for w in y], carry_in=True)


def add_log(b: Builder, x: Sequence[int], y: Sequence[int]) -> Word:
    """``x + y`` mod 2^n by a Sklansky parallel-prefix adder: AND depth ceil(log2(n - 1)) + 1."""
    n = _same("add_log", x, y)
    p = [b.xor(x[i], y[i]) for i in range(n)]
    # (generate, propagate) of the group of bits start..i, for i < n - 1 (carry into bit i + 1)
    gp = [(b.and_(x[i], y[i]), p[i]) for i in range(n - 1)]
    span = 1
    while span < n - 1:
        nxt = list(gp)
        for i in range(n - 1):
            if (i // span) % 2:
                j = (i // span) * span - 1  # the top of the lower block
                (gi, pi), (gj, pj) = gp[i], gp[j]
                start = (i // (2 * span)) * 2 * span  # the merged group's first bit
                nxt[i] = (b.xor(gi, b.and_(pi, gj)), b.and_(pi, pj) if start else pi)
        gp, span = nxt, span * 2
    return [p[0]] + [b.xor(p[i], gp[i - 1][0]) for i in range(1, n)]


def msb_of_sum(b: Builder, x: Sequence[int], y: Sequence[int]) -> int:
    """The most significant bit of ``x + y`` mod 2^n: n - 1 ANDs."""
    n = _same("msb_of_sum", x, y)
    top = b.xor(x[-1], y[-1])
    if n == 1:
        return top
    c = b.and_(x[0], y[0])
    for i in range(1, n - 1):
        c = b.xor(c, b.and_(b.xor(x[i], c), b.xor(y[i], c)))
    return b.xor(top, c)


def greater(b: Builder, x: Sequence[int], y: Sequence[int]) -> int:
    """``[x > y]`` for signed n-bit words, exact: the MSB of ``y - x`` sign-extended to n + 1 bits
    (``y + ~x + 1``), n ANDs."""
    _same("greater", x, y)
    xs, ys = [*x, x[-1]], [*y, y[-1]]
    nx = [b.inv(w) for w in xs]
    # carry chain of y + ~x with carry-in 1, then the top sum bit
    c = b.inv(b.and_(b.inv(ys[0]), b.inv(nx[0])))
    for i in range(1, len(xs) - 1):
        c = b.xor(c, b.and_(b.xor(ys[i], c), b.xor(nx[i], c)))
    return b.xor(b.xor(ys[-1], nx[-1]), c)


def _tree(b: Builder, ws: Sequence[int], op) -> int:
    ws = list(ws)
    while len(ws) > 1:
        ws = [op(ws[i], ws[i + 1]) for i in range(0, len(ws) - 1, 2)] + ws[len(ws) - len(ws) % 2 :]
    return ws[0]


def positive(b: Builder, x: Sequence[int]) -> int:
    """``[x > 0]`` for a signed n-bit word: ``~msb & (any lower bit set)``, n - 1 ANDs."""
    n = _same("positive", x)
    nonneg = b.inv(x[-1])
    if n == 1:
        return b.and_(nonneg, b.zero())
    return b.and_(nonneg, _tree(b, x[:-1], b.or_))


def equal(b: Builder, x: Sequence[int], y: Sequence[int]) -> int:
    """``[x == y]``: an AND tree over ``~(x_i ^ y_i)``, n - 1 ANDs."""
    n = _same("equal", x, y)
    return _tree(b, [b.inv(b.xor(x[i], y[i])) for i in range(n)], b.and_)


def relu(b: Builder, x: Sequence[int]) -> Word:
    """``max(x, 0)`` for a signed n-bit word: n - 1 ANDs (the top bit is 0)."""
    n = _same("relu", x)
    keep = b.inv(x[-1])
    return [b.and_(x[i], keep) for i in range(n - 1)] + [b.zero()]


def mux_word(b: Builder, s: int, x: Sequence[int], y: Sequence[int]) -> Word:
    """``x`` if ``s`` else ``y``, bit by bit: n ANDs."""
    n = _same("mux", x, y)
    return [b.mux(s, x[i], y[i]) for i in range(n)]


def _const(b: Builder, value: int, bits: int) -> Word:
    z = b.zero()
    one = b.inv(z)
    return [one if (value >> i) & 1 else z for i in range(bits)]


def argmax(b: Builder, xs: Sequence[Sequence[int]]) -> tuple[Word, Word]:
    """The maximum of ``k`` signed words and its index (``ceil(log2 k)`` bits, at least 1; the
    first of equal maxima) by a tournament of ``greater`` and ``mux``."""
    if not xs:
        raise ShapeError("circuit argmax: needs at least one word")
    _same("argmax", *xs)
    k = len(xs)
    ibits = max(1, (k - 1).bit_length())
    cand = [(list(x), _const(b, i, ibits)) for i, x in enumerate(xs)]
    while len(cand) > 1:
        nxt = []
        for j in range(0, len(cand) - 1, 2):
            (v0, i0), (v1, i1) = cand[j], cand[j + 1]
            s = greater(b, v1, v0)  # the later one wins only when strictly greater
            nxt.append((mux_word(b, s, v1, v0), mux_word(b, s, i1, i0)))
        if len(cand) % 2:
            nxt.append(cand[-1])
        cand = nxt
    return cand[0]


def maximum(b: Builder, xs: Sequence[Sequence[int]]) -> Word:
    """The maximum of ``k`` signed words (a tournament; no index carried)."""
    if not xs:
        raise ShapeError("circuit maximum: needs at least one word")
    _same("maximum", *xs)
    cand = [list(x) for x in xs]
    while len(cand) > 1:
        nxt = [
            mux_word(b, greater(b, cand[j + 1], cand[j]), cand[j + 1], cand[j])
            for j in range(0, len(cand) - 1, 2)
        ]
        cand = nxt + ([cand[-1]] if len(cand) % 2 else [])
    return cand[0]
