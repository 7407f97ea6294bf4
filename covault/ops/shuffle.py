"""Oblivious shuffle: permute the rows of a secret tensor by a permutation no single party knows.

Used before mini-batch training so that batches mix the data owners' rows (which were
concatenated owner by owner) while nobody learns where any row went. The result is a fresh
sharing of ``x[pi]`` for a uniformly random ``pi``; one implementation per protocol, chosen by
the protocol object's class (2pc: with a dealer party or with provider ``ot``). Permutations come from AES-CTR streams
(argsort of uniform 64-bit keys), never from a non-cryptographic generator.

**rep3** (resharing-based shuffle, as in Laur-Willemson-Zhang, ISC 2011, and Araki, Furukawa,
Ohara, Pinkas, Rosemarin, Tsuchida, "Secure graph analysis at scale", CCS 2021). The
permutation is ``pi = pi_2 pi_1 pi_0`` where ``pi_t`` is drawn from the key of the pair that
excludes ``P_t``. Step ``t`` (pair ``P_a = P_{t+1}``, ``P_b = P_{t+2}``, third ``P_t``):

1. The pair holds a 2-out-of-2 view of ``x`` for free: ``A = x_{t+1} + x_{t+2}`` at ``P_a``,
   ``B = x_t`` at ``P_b``.
2. New components ``y_t`` (key of ``P_t, P_b``) and ``y_{t+1}`` (key of ``P_t, P_a``) are
   pseudo-random: ``P_t`` gets both without any message.
3. ``P_a`` sends ``pi_t(A) - y_{t+1}`` to ``P_b``, and ``P_b`` sends ``pi_t(B) - y_t`` to
   ``P_a`` (one round); each is masked by a stream the receiver does not know. Both set
   ``y_{t+2} = pi_t(A) - y_{t+1} + pi_t(B) - y_t``, so ``y = pi_t(x)``, replicated again.
Cost: 3 rounds; in two of them a party sends ``n m`` ring elements (``n`` rows of ``m``
elements): ``2 n m`` elements per party in all, nothing to the third party of a step.
Trust: honest majority. Every party misses the permutation of the pair it is not in, so the
composition is uniform and unknown to it; two colluding parties would learn all three.

**2pc** with the dealer (permutation correlations, Chase-Ghosh-Poburinnaya, "Secret-shared
shuffle", ASIACRYPT 2020). ``pi = pi_1 pi_0``; step for the permutation ``pi_H`` known to
``P_H`` and the dealer (``P_O`` the other party):

1. Dealer correlation, seed-compressed like the Beaver triples: ``a, b`` uniform from the
   seed the dealer shares with ``P_O``, ``pi_H`` from the seed it shares with ``P_H``; the
   dealer sends ``P_H`` the correction ``delta = pi_H(a) - b`` (offline traffic). This
   correlation is dealt here rather than by the correlation provider, which only sends
   corrections to P1.
2. ``P_O`` sends ``x_O - a`` to ``P_H`` (one round; masked by ``a``).
3. ``P_H``'s new share ``pi_H(x_H + x_O - a) + delta = pi_H(x) - b``; ``P_O``'s new share ``b``.
The step runs for ``H = P0`` and then ``H = P1``. Cost: 2 rounds, ``n m`` elements sent by each
compute party, ``n m`` elements offline from the dealer to each.
Trust: the dealer learns both permutations but receives no message at all, so it sees no data;
as for every 2pc correlation it must not collude with a compute party (it would then learn the
whole permutation). Each compute party knows one of the two permutations, not the other.

**2pc** without a dealer (provider ``ot``): ``pi = pi_1 pi_0`` again, each step an oblivious
permutation by a Beneš network on the ``n`` rows (:mod:`covault.ops.benes`, any ``n``): ``P_H``
draws ``pi_H`` from its own ``os.urandom``-keyed PRG, routes it exactly into switch bits, and
the shared rows pass the network's ``2 ceil(log2 n) - 1`` layers of conditional swaps, the
products by ``P_H``'s bits made by correlated OT from ``P_O`` to ``P_H`` over the provider's OT
extensions. Cost per step and column block of ``w`` words: one OT per switch (about
``n log2 n - n/2``), ``16 + 8 w`` bytes each, 2 flights (one OT call: ``P_O`` derives each
layer's correlations from the OT outputs of the layers before, see :mod:`covault.ops.benes`);
blocks of columns hold at most ``OT_WORDS`` words of OT output (at least one column: above
about 500,000 rows, 2^23 switches, a block of one column exceeds it, and each column is an OT
call of its own; routing is Python code, about 14 s and 1 GB for 1M rows). Against the dealer's ``2 n w``
words per step (``P_O``'s message and the dealer's correction): about
``(log2 n - 1/2)(1 + 2 / w) / 2`` times the bytes (6.7x for 10,000 rows of 31 columns:
33 MB per step), twice the flights, no third party. Trust: semi-honest P0 and P1; each knows
one of the two permutations, the composition is uniform and hidden from both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from covault.errors import ProtocolError, ShapeError
from covault.ops import benes
from covault.protocols.additive import Additive2PC
from covault.protocols.replicated import Replicated3PC
from covault.randomness.prg import PRG, new_seed, random_permutation
from covault.randomness.providers import PROVIDERS

if TYPE_CHECKING:
    from covault.protocols.base import Protocol
    from covault.tensor import SecretTensor


SHUFFLE_ELEMS = 1 << 21  # columns are shuffled in blocks of about this many elements (one round each)
OT_WORDS = 1 << 23  # 2pc without a dealer: words of OT output per column block (64 MiB per array)


def shuffle_rows(x: SecretTensor) -> SecretTensor:
    """A fresh sharing of ``x`` with its rows (axis 0) in a uniformly random order unknown to
    every single party (see the module docstring for the protocols and trust assumptions)."""
    if x.ndim == 0:
        raise ShapeError("shuffle_rows needs at least one axis (rows)")
    return shuffle_together([x])[0]


def shuffle_together(tensors: Sequence[SecretTensor], *, in_place: bool = False) -> list[SecretTensor]:
    """Shuffle several tensors with the SAME hidden row permutation (e.g. features and labels);
    each keeps its shape and fractional bits.

    The columns are reshared in blocks of about ``SHUFFLE_ELEMS`` elements (one message per
    block and step: a table of ``n m`` elements takes ``ceil(n m / SHUFFLE_ELEMS)`` or, for
    columns longer than that, ``m`` blocks), so the temporaries stay block-sized. ``in_place``:
    the tensors' share arrays are overwritten (no copy of the data at all) and the tensors
    returned; the caller must hold no other use for their old contents."""
    if not tensors:
        raise ShapeError("shuffle_together needs at least one tensor")
    n = tensors[0].shape[0] if tensors[0].ndim else None
    for t in tensors:
        if t.ndim == 0 or t.shape[0] != n:
            raise ShapeError(
                f"shuffle_together needs equal row counts, got shapes {[t.shape for t in tensors]}"
            )
        if t.session is not tensors[0].session:
            raise ProtocolError("tensors to shuffle belong to different sessions")
    k = tensors[0].shares.shape[0]
    out = tensors if in_place else [t._same(t.shares.copy()) for t in tensors]
    flats = []
    for t in out:
        if not (t.shares.flags.c_contiguous and t.shares.flags.writeable):
            t.shares = t.shares.copy()  # in place: a view or a read-only array cannot be
        w = int(np.prod(t.shape[1:], dtype=np.int64))
        flats.append(t.shares.reshape(k, n, w))  # a view: the blocks are written through it
    shuffle_share_columns(tensors[0].proto, flats)
    return list(out)


def column_blocks(n: int, widths: Sequence[int], elems: int | None = None) -> list[list[tuple[int, slice]]]:
    """Blocks of columns ``(array index, column slice)`` of arrays with ``n`` rows and the
    given widths: about ``elems`` (default ``SHUFFLE_ELEMS``) elements per block, at least one
    column."""
    per = max(1, (SHUFFLE_ELEMS if elems is None else elems) // max(n, 1))
    blocks: list[list[tuple[int, slice]]] = []
    room = 0
    for i, w in enumerate(widths):
        j = 0
        while j < w:
            if room == 0:
                blocks.append([])
                room = per
            take = min(room, w - j)
            blocks[-1].append((i, slice(j, j + take)))
            room -= take
            j += take
    return blocks


def shuffle_share_rows(proto: Protocol, x: np.ndarray) -> np.ndarray:
    """Shares ``(k, n, m)`` of a matrix -> shares of the same matrix with rows shuffled."""
    out = np.array(x, copy=True)
    shuffle_share_columns(proto, [out])
    return out


def shuffle_share_columns(proto: Protocol, arrays: Sequence[np.ndarray]) -> None:
    """Shuffle, in place, the rows of the matrices whose shares are ``arrays`` (each ``(k, n,
    m_i)``, writable) with one hidden permutation, column block by column block."""
    if not proto.is_compute and proto.party != proto.dealer:
        return  # a data party outside the computation holds no shares and takes no part
    n = arrays[0].shape[1]
    blocks = column_blocks(n, [a.shape[2] for a in arrays])
    if isinstance(proto, Replicated3PC):
        for t in range(3):
            _rep3_step(proto, arrays, blocks, t)
        return
    if isinstance(proto, Additive2PC) and proto.dealer is not None:
        p0, p1 = proto.compute
        _dealer_step(proto, arrays, blocks, holder=p0, other=p1)
        _dealer_step(proto, arrays, blocks, holder=p1, other=p0)
        return
    provider = PROVIDERS[proto.provider_name] if isinstance(proto, Additive2PC) else None
    if provider is not None and provider.shuffle and provider.uses_ot:
        for holder in proto.compute:
            _ot_step(proto, arrays, holder)
        return
    without = ""
    if isinstance(proto, Additive2PC):
        without = (
            f" without a dealer party (provider {proto.provider_name!r} brings no two-party shuffle; "
            "train with shuffle = \"none\" or use the 'dealer' provider)"
        )
    raise ProtocolError(f"no oblivious shuffle for protocol {proto.name!r}{without}")


def _ot_step(proto: Additive2PC, arrays: Sequence[np.ndarray], holder: str) -> None:
    """Reshare ``pi(x)`` with ``pi`` drawn and known by ``holder`` alone, by a Beneš network
    over correlated OT (:mod:`covault.ops.benes`), column block by column block."""
    n = arrays[0].shape[1]
    if proto.party == holder:
        net, bits = benes.route(random_permutation(PRG(new_seed()), n))
    else:
        net, bits = benes.network(n), None
    for block in column_blocks(net.switches, [a.shape[2] for a in arrays], OT_WORDS):
        z = np.concatenate([arrays[j][0, :, cols] for j, cols in block], axis=1)
        z = benes.permute_2pc(proto, z, holder, net, bits)
        at = 0
        for j, cols in block:
            w = cols.stop - cols.start
            arrays[j][0, :, cols] = z[:, at : at + w]
            at += w


def _rep3_step(proto: Protocol, arrays: Sequence[np.ndarray], blocks, t: int) -> None:
    """Reshare ``pi_t(x)`` where ``pi_t`` is known to P_{t+1} and P_{t+2} only, block by block
    (one message per block; every block uses the same ``pi_t`` and fresh masks)."""
    c = proto.compute
    a, b = (t + 1) % 3, (t + 2) % 3
    n = arrays[0].shape[1]
    i = proto.index
    if i == t:
        for block in blocks:
            for j, cols in block:
                shape = (n, cols.stop - cols.start)
                arrays[j][0, :, cols] = proto.prg[c[b]].ring(shape)  # y_t
                arrays[j][1, :, cols] = proto.prg[c[a]].ring(shape)  # y_{t+1}
        return
    pair = c[b] if i == a else c[a]
    pi = random_permutation(proto.prg[pair], n)
    for block in blocks:
        mine, masks = [], []
        for j, cols in block:
            x = arrays[j]
            y = proto.prg[c[t]].ring((n, cols.stop - cols.start))  # y_{t+1} at P_a, y_t at P_b
            v = (x[0, :, cols] + x[1, :, cols])[pi] if i == a else x[1, :, cols][pi]
            v -= y
            mine.append(v)
            masks.append(y)
        got = proto.net.exchange({pair: mine}, [pair])[pair]
        for (j, cols), v, y, g in zip(block, mine, masks, got):
            v += g
            if i == a:
                arrays[j][0, :, cols], arrays[j][1, :, cols] = y, v
            else:
                arrays[j][0, :, cols], arrays[j][1, :, cols] = v, y


def _dealer_step(proto: Protocol, arrays: Sequence[np.ndarray], blocks, holder: str, other: str) -> None:
    """Reshare ``pi(x)`` with ``pi`` known to ``holder`` and the dealer (permutation
    correlation), block by block."""
    dealer = proto.dealer
    n = arrays[0].shape[1]
    widths = [[cols.stop - cols.start for _, cols in block] for block in blocks]
    if proto.party == dealer:
        pi = random_permutation(proto.prg[holder], n)
        g = proto.prg[other]
        for ws in widths:
            deltas = []
            for w in ws:
                a, b = g.ring((n, w)), g.ring((n, w))
                deltas.append(a[pi] - b)
            proto.net.send_offline(holder, deltas)
        return
    if proto.party == holder:
        pi = random_permutation(proto.prg[dealer], n)
        for block in blocks:
            deltas = proto.net.recv_offline(dealer)
            zs = proto.net.exchange(recv_from=[other])[other]
            for (j, cols), z, delta in zip(block, zs, deltas):
                z += arrays[j][0, :, cols]
                arrays[j][0, :, cols] = z[pi] + delta
        return
    g = proto.prg[dealer]
    for block in blocks:
        sends, news = [], []
        for j, cols in block:
            a, b = g.ring((n, cols.stop - cols.start)), g.ring((n, cols.stop - cols.start))
            sends.append(arrays[j][0, :, cols] - a)
            news.append(b)
        proto.net.exchange({holder: sends})
        for (j, cols), b in zip(block, news):
            arrays[j][0, :, cols] = b
