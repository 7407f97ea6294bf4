"""Products of many XOR-shared words at once: the plan of a one-round multi-input AND.

Share maths only (pure functions and a plan object); the protocols run it
(:meth:`~covault.protocols.base.Protocol.and_many`). For boolean shares of words ``x_1 .. x_k``
and monomials ``M_j`` (index sets), every ``AND_{i in M_j} x_i`` in ONE round, with dealt
masks (multi-input AND gates from preprocessed products of masks: Patra, Schneider, Suresh,
Yalame, "ABY2.0", USENIX Security 2021; the same expansion as Beaver's triple, degree ``|M|``):

1. Dealer: uniform masks ``r_i`` and XOR shares of ``r_S = AND_{i in S} r_i`` for every
   ``S`` with ``|S| >= 2`` inside some monomial (:attr:`AndPlan.subsets`).
2. Each party opens ``e_i = x_i ^ r_i`` (1 round, ``k`` words each). A variable the caller
   knows to be the XOR of two others gets the XOR of their masks (dealt so) and is not
   opened: ``e_i = e_j ^ e_l`` locally.
3. ``AND_{i in M} x_i = XOR_{S subset of M} (AND_{i in M \\ S} e_i) & r_S``: the term of
   ``S = {}`` is public (P0 adds it), the others are products of public words and shares
   (local).

Cost: 1 round; each compute party sends a word per element for each variable (those given as
sums excepted); the dealer's masks are seed-expanded at both compute parties, and P1 receives
a correction word for each of the ``len(subsets)`` products.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np


class AndPlan:
    """Index tables for :func:`plan`'s ``k`` variables and ``monomials``.

    ``subsets``: the products the dealer deals (sorted tuples, ``|S| >= 2``). The share table
    is ``[one, r_1 .. r_k, r_S for S in subsets]`` (``one``: all-ones words at P0, zeros at
    P1); the public table holds ``AND_{i in U} e_i`` for every complement ``U`` needed, built
    by size: ``pub[build_at] = pub[build_from] & pub[build_var]`` per size step. Step 3 is
    ``pub[term_pub] & share[term_share]``, XOR-reduced over each monomial's run of terms
    (``starts``)."""

    def __init__(
        self, k: int, monomials: tuple[tuple[int, ...], ...], sums: tuple[tuple[int, int, int], ...] = ()
    ) -> None:
        self.k, self.monomials, self.sums = k, monomials, sums
        self.degree = max(map(len, monomials), default=0)
        cols = tuple(zip(*sums)) if sums else ((), (), ())
        self.sum_at, self.sum_a, self.sum_b = (_frozen_index(c) for c in cols)
        derived = {i for i, _, _ in sums}
        self.opened = np.array([i for i in range(k) if i not in derived], dtype=np.intp)
        self.opened.flags.writeable = False
        sets = set()
        for m in monomials:
            for size in range(2, len(m) + 1):
                sets.update(combinations(m, size))
        self.subsets = tuple(sorted(sets, key=lambda s: (len(s), s)))
        share_index = {(): 0, **{(i,): 1 + i for i in range(k)}}
        share_index.update({s: 1 + k + j for j, s in enumerate(self.subsets)})
        pub_index = {(): 0, **{(i,): 1 + i for i in range(k)}}
        steps: list[tuple[list[int], list[int], list[int]]] = []
        comps = sorted({c for m in monomials for n in range(len(m) + 1) for c in combinations(m, n)},
                       key=lambda s: (len(s), s))  # fmt: skip
        for size in range(2, max((len(m) for m in monomials), default=0) + 1):
            at, frm, var = [], [], []
            for c in comps:
                if len(c) == size:
                    pub_index[c] = len(pub_index)
                    at.append(pub_index[c])
                    frm.append(pub_index[c[:-1]])
                    var.append(pub_index[c[-1:]])
            if at:
                steps.append((at, frm, var))
        self.public_size = len(pub_index)
        self.steps = [tuple(np.array(v, dtype=np.intp) for v in step) for step in steps]
        term_pub, term_share, starts = [], [], []
        for m in monomials:
            starts.append(len(term_pub))
            for n in range(len(m) + 1):
                for s in combinations(m, n):
                    term_share.append(share_index[s])
                    term_pub.append(pub_index[tuple(i for i in m if i not in s)])
        self.term_pub = np.array(term_pub, dtype=np.intp)
        self.term_share = np.array(term_share, dtype=np.intp)
        self.starts = np.array(starts, dtype=np.intp)
        for table in (self.term_pub, self.term_share, self.starts, *(a for st in self.steps for a in st)):
            table.flags.writeable = False  # a plan is cached and shared by every caller

    def products(self, opened: np.ndarray, shares: np.ndarray) -> np.ndarray:
        """Step 3: this party's shares of the monomials (``len(monomials), *S``) from the opened
        words ``e`` (``k, *S``) and its share table (``1 + k + len(subsets), *S``)."""
        pub = np.empty((self.public_size, *opened.shape[1:]), dtype=opened.dtype)
        pub[0] = ~opened.dtype.type(0)
        pub[1 : 1 + self.k] = opened
        for at, frm, var in self.steps:
            pub[at] = pub[frm] & pub[var]
        terms = pub[self.term_pub]
        terms &= shares[self.term_share]
        return np.bitwise_xor.reduceat(terms, self.starts, axis=0)


def _frozen_index(values) -> np.ndarray:
    a = np.array(values, dtype=np.intp)
    a.flags.writeable = False
    return a


MAX_DEGREE = 8  # a monomial of degree d costs 2^d - d - 1 dealt products and 2^d terms per word


@lru_cache(maxsize=64)
def _plan(k: int, monomials: tuple[tuple[int, ...], ...], sums: tuple[tuple[int, int, int], ...]) -> AndPlan:
    return AndPlan(k, monomials, sums)


_BY_IDENTITY: dict[tuple[int, int, int], tuple[object, object, AndPlan]] = {}


def plan(k: int, monomials, sums=()) -> AndPlan:
    """As :func:`_checked_plan`, cached when every index is a plain ``int`` in tuples (the
    protocols' own calls): the cache compares keys by equality, and ``True == 1 == 1.0``.
    The same tuple objects again (a caller's constant plans) are found by identity first,
    without looking at their items (the entry holds them, so their ids stay theirs)."""
    key = (k, id(monomials), id(sums))
    hit = _BY_IDENTITY.get(key)
    if hit is not None and hit[0] is monomials and hit[1] is sums and type(k) is int:
        return hit[2]
    if not _plain(k, monomials, sums):
        return _checked_plan.__wrapped__(k, monomials, sums)
    found = _checked_plan(k, monomials, sums)
    if len(_BY_IDENTITY) >= 256:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[key] = (monomials, sums, found)
    return found


def _plain(k, monomials, sums) -> bool:
    return (
        type(k) is int
        and type(monomials) is tuple
        and type(sums) is tuple
        and all(type(m) is tuple and all(type(i) is int for i in m) for m in monomials)
        and all(type(t) is tuple and all(type(v) is int for v in t) for t in sums)
    )


@lru_cache(maxsize=256)
def _checked_plan(k: int, monomials, sums=()) -> AndPlan:
    """The (cached) plan of ``monomials`` over ``k`` variables. ValueError, naming and_many, on
    a monomial that is empty, names a variable outside ``0 .. k-1`` (or not by an integer),
    repeats one, or has more than :data:`MAX_DEGREE` of them (its cost doubles per variable);
    ``sums``: ``(i, j, l)`` with ``x_i = x_j ^ x_l`` (the mask of ``x_i`` is then ``r_j ^ r_l``
    and ``x_i ^ r_i`` is not opened), ``j`` and ``l`` opened ones."""
    checked = []
    for m in monomials:
        m = tuple(m)
        if not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in m):
            raise ValueError(f"and_many: monomial {m} must name its variables by integer index")
        if not m or len(set(m)) != len(m) or min(m) < 0 or max(m) >= k:
            where = f"among 0..{k - 1}" if k else "(there are none)"
            raise ValueError(f"and_many: monomial {m} must name distinct variables {where}")
        if len(m) > MAX_DEGREE:
            raise ValueError(
                f"and_many: monomial {m} has degree {len(m)}, at most {MAX_DEGREE} (2^degree dealt "
                "products and terms per word)"
            )
        checked.append(tuple(sorted(int(i) for i in m)))
    sums = tuple(tuple(int(v) for v in t) for t in sums)
    derived = [t[0] for t in sums]
    for t in sums:
        if (
            len(t) != 3
            or not all(0 <= v < k for v in t)
            or t[1] in derived
            or t[2] in derived
            or t[1] == t[2]
        ):
            raise ValueError(
                f"and_many: sum {t} must name a variable and two other, opened ones among 0..{k - 1}"
            )
    if len(set(derived)) != len(derived):
        raise ValueError(f"and_many: a variable is the sum of two others at most once, got {sums}")
    return _plan(int(k), tuple(checked), sums)


def check(x: np.ndarray, monomials, sums=()) -> AndPlan:
    """The plan for shares ``x`` (``(c, k, *S)`` integer words); TypeError or ValueError naming
    and_many otherwise."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "iu" or x.ndim < 2:
        what = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"and_many: the shares must be integer words of shape (c, k, ...), got {what}")
    return plan(x.shape[1], monomials, sums)
