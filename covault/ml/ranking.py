"""Oblivious ranking: sort secret rows by a secret key, opening only a uniformly random order.

The ranking metrics (:func:`covault.ml.metrics.roc_auc_score`,
:func:`~covault.ml.metrics.average_precision_score`) need the labels in score order. Following
Hamada, Kikuchi, Ikarashi, Chida, Takahashi ("Practically efficient multi-party sorting
protocols from comparison sort algorithms", ICISC 2012), the rows are first shuffled
obliviously (:mod:`covault.ops.shuffle`); a comparison sort then runs on the shuffled rows and
OPENS the result of every comparison. With ties broken by the shuffled position, the keys
``(key, position)`` are distinct, so the opened outcomes determine nothing but the sorting
permutation of the shuffled rows, which is uniformly random whatever the data (the shuffle is
uniform and no single party knows it): every party can simulate what it sees.

**Tie-break without an equality test.** Row ``i`` goes after the pivot ``p`` when
``(s_i, i) > (s_p, p)``, i.e. ``s_i > s_p`` for ``i < p`` and ``s_i >= s_p`` for ``i > p``:
one most-significant-bit test of ``s_p - s_i - [i > p]`` (ring units), ``[i > p]`` public.

**Quicksort, one comparison call per level.** Every unfinished segment takes its first row as
pivot; all its other rows are compared with it, the comparisons of ALL segments in ONE
vectorised call (``compare.msb_bits``, then the boolean bits opened packed, 1 bit per
comparison), and the rows are partitioned in public. Random pivots (the order is random)
give about ``2 n ln n`` comparisons in all and about ``4.3 ln n`` levels (expected depth).
``msb_bits`` runs on the low 32 bits when the key's public bound keeps every difference below
``2^31`` ring units (6 AND rounds, half the traffic), else on 64 bits (7 rounds); in 2pc with
the dealer a level of at most 1,024 comparisons takes the radix-4 carry tree of
:mod:`covault.ops.compare`: 3 AND rounds on either width.

**2pc and its dealer.** The dealer deals the comparison tuples, so it must know each level's
size, and it receives the opened bits like the compute parties. It also knows the shuffle's
permutation; so after the shuffle P0 and P1 permute the rows once more by a permutation
``rho`` drawn from their pairwise key (locally, no message), which the dealer does not know:
the order it sees is that of rows in an order uniformly random to it. Without a dealer
(provider ``ot``) each compute party misses one of the shuffle's two Beneš permutations
(:mod:`covault.ops.benes`), so ``rho`` adds nothing there (and costs nothing). In rep3 every
party misses one permutation of the shuffle; no extra step.

**What is revealed to whom.** To every compute party (and the 2pc dealer): the sorting
permutation of the shuffled rows (uniformly random, as above) and the number of levels (a
function of it). Nothing else; the scores and labels stay shared. Data parties that are not
compute parties take no part (they hold no shares) and see nothing.

**Cost** (``n`` rows, ``C ~ 2 n ln n`` comparisons, ``D`` levels): the shuffle (2pc: 2
rounds, ``8 n w`` bytes per party for ``w`` columns; 2pc without a dealer: 4 rounds, about
``(n log2 n - n/2)(16 + 8 w)`` bytes per party; rep3: 3 rounds, ``16 n w``), then per
level ``msb_bits`` (2pc 7 rounds and 47.25 bytes per comparison on 64 bits, 6 rounds and about
23 bytes on 32, and for a level of at most 1,024 comparisons 3 rounds and 20.25 / 10 bytes, the
dealer dealing 108.9 / 53.6 instead of 23.6 / 11.6; rep3 8 / 7 rounds and 31.6 / 16 bytes)
plus one opening round of 1 bit per comparison to each other receiver. Measured figures:
``docs/ml.md`` (Metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covault.errors import ShapeError
from covault.ops import compare
from covault.ops.shuffle import shuffle_together
from covault.protocols.additive import Additive2PC
from covault.randomness.prg import random_permutation
from covault.tensor import SecretTensor


def sort_together(key: SecretTensor, others: Sequence[SecretTensor] = ()) -> list[SecretTensor]:
    """``[key, *others]`` with their rows in ascending order of ``key`` (a secret vector), ties
    in a uniformly random order; the rows are shuffled obliviously first, and only the sorting
    permutation of the shuffled rows is opened (module doc). Shares are re-indexed, not
    refreshed (the shuffle already made them fresh)."""
    cols = shuffled(key, others)
    order = sort_order(cols[0])
    return [c[order] for c in cols]


def shuffled(key: SecretTensor, others: Sequence[SecretTensor] = ()) -> list[SecretTensor]:
    """``[key, *others]`` with their rows in one order that no party knows: the oblivious
    shuffle, then in 2pc a permutation known to P0 and P1 only (module doc), so that
    :func:`sort_order` may open comparisons to the dealer too."""
    if key.ndim != 1:
        raise ShapeError(f"the sort key must be a vector, got shape {key.shape}")
    cols = shuffle_together([key, *others])
    proto = key.proto
    if isinstance(proto, Additive2PC) and proto.is_compute:
        other = next(p for p in proto.compute if p != proto.party)
        rho = random_permutation(proto.prg[other], key.shape[0])  # unknown to the dealer
        cols = [c[rho] for c in cols]
    return cols


def participants(proto) -> tuple[str, ...]:
    """The parties that take part in comparisons: the compute parties and the 2pc dealer."""
    dealer = getattr(proto, "dealer", None)
    return (*proto.compute, *((dealer,) if dealer else ()))


def sort_order(key: SecretTensor, cuts: Sequence[int] = ()) -> np.ndarray:
    """The permutation ``order`` with ``key[order]`` ascending, ties by position, computed by
    quicksort with opened comparisons. Only for keys whose rows were obliviously shuffled
    (:func:`shuffled`): the outcomes are opened to every compute party (and the dealer).
    ``cuts``: positions that split ``key`` into blocks sorted separately (in the same levels);
    rows stay in their block. A party outside the computation gets the identity (it holds no
    shares)."""
    n = key.shape[0]
    proto = key.proto
    perm = np.arange(n)
    who = participants(proto)
    if proto.party not in who:
        return perm
    width = _msb_width(key)
    edges = np.array([0, *cuts, n])
    starts, ends = edges[:-1], edges[1:]
    starts, ends = starts[ends - starts >= 2], ends[ends - starts >= 2]
    while starts.size:
        m = ends - starts - 1  # rows compared with each segment's pivot
        seg = np.repeat(np.arange(starts.size), m)
        first = np.cumsum(m) - m
        offs = np.arange(int(m.sum())) - first[seg]
        elem = perm[starts[seg] + 1 + offs]
        piv = perm[starts][seg]
        diff = key[piv] - key[elem]
        shares = proto.add_public(diff.shares, (elem > piv).astype(np.int64) * -1)
        right = _open_bits(proto, compare.msb_bits(proto, shares, width), who)
        r = right.astype(np.int64)
        cum = np.cumsum(r)
        before = cum - r - (cum[first] - r[first])[seg]  # rights earlier in the segment
        nright = np.add.reduceat(r, first)
        nleft = m - nright
        base = starts[seg]
        pos = np.where(right, base + nleft[seg] + 1 + before, base + offs - before)
        new = perm.copy()
        new[pos] = elem
        new[starts + nleft] = perm[starts]
        perm = new
        cand_s = np.concatenate([starts, starts + nleft + 1])
        cand_e = np.concatenate([starts + nleft, ends])
        keep = cand_e - cand_s >= 2
        starts, ends = cand_s[keep], cand_e[keep]
    return perm


def _msb_width(key: SecretTensor) -> int:
    """32 when every ``s_p - s_i - 1`` lies in ``[-2^31, 2^31)`` ring units, else 64."""
    bound = key.bound
    if bound is not None and 2 * bound * 2.0**key.frac + 1 < 2.0**31:
        return 32
    return 64


def _open_bits(proto, bits: np.ndarray, to: tuple[str, ...]) -> np.ndarray:
    """Open boolean shares ``bits`` (components, m) of 0/1 values to ``to``, packed 8 per byte
    (XOR shares pack componentwise)."""
    m = bits.shape[1]
    packed = np.packbits(bits.astype(np.uint8), axis=-1)
    got = proto.reveal_bool(packed, to)
    return np.unpackbits(np.asarray(got, dtype=np.uint8), count=m).astype(bool)
