"""Oblivious shuffle: permute the rows of a secret tensor by a permutation no single party knows.

Used before mini-batch training so that batches mix the data owners' rows (which were
concatenated owner by owner) while nobody learns where any row went. The result is a fresh
sharing of ``x[pi]`` for a uniformly random ``pi``; one implementation per protocol, chosen by
the protocol object's class (2pc: with a dealer party). Permutations come from AES-CTR streams
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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from covault.errors import ProtocolError, ShapeError
from covault.protocols.additive import Additive2PC
from covault.protocols.replicated import Replicated3PC
from covault.randomness.prg import random_permutation

if TYPE_CHECKING:
    from covault.protocols.base import Protocol
    from covault.tensor import SecretTensor


def shuffle_rows(x: SecretTensor) -> SecretTensor:
    """A fresh sharing of ``x`` with its rows (axis 0) in a uniformly random order unknown to
    every single party (see the module docstring for the protocols and trust assumptions)."""
    if x.ndim == 0:
        raise ShapeError("shuffle_rows needs at least one axis (rows)")
    k, n = x.shares.shape[0], x.shape[0]
    m = int(np.prod(x.shape[1:], dtype=np.int64))
    flat = x.shares.reshape(k, n, m)
    out = shuffle_share_rows(x.proto, flat)
    return x._same(out.reshape(x.shares.shape))


def shuffle_together(tensors: Sequence[SecretTensor]) -> list[SecretTensor]:
    """Shuffle several tensors with the SAME hidden row permutation (e.g. features and labels):
    their rows are concatenated column-wise, shuffled once and split again (each keeps its
    shape and fractional bits)."""
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
    widths = [int(np.prod(t.shape[1:], dtype=np.int64)) for t in tensors]
    flat = np.concatenate([t.shares.reshape(k, n, w) for t, w in zip(tensors, widths)], axis=2)
    out = shuffle_share_rows(tensors[0].proto, flat)
    res, pos = [], 0
    for t, w in zip(tensors, widths):
        part = np.ascontiguousarray(out[:, :, pos : pos + w]).reshape(t.shares.shape)
        res.append(t._same(part))
        pos += w
    return res


def shuffle_share_rows(proto: Protocol, x: np.ndarray) -> np.ndarray:
    """Shares ``(k, n, m)`` of a matrix -> shares of the same matrix with rows shuffled."""
    if not proto.is_compute and proto.party != proto.dealer:
        return x  # a data party outside the computation holds no shares and takes no part
    if isinstance(proto, Replicated3PC):
        for t in range(3):
            x = _rep3_step(proto, x, t)
        return x
    if isinstance(proto, Additive2PC) and proto.dealer is not None:
        p0, p1 = proto.compute
        x = _dealer_step(proto, x, holder=p0, other=p1)
        return _dealer_step(proto, x, holder=p1, other=p0)
    without = " without a dealer party" if isinstance(proto, Additive2PC) else ""
    raise ProtocolError(f"no oblivious shuffle for protocol {proto.name!r}{without}")


def _rep3_step(proto: Protocol, x: np.ndarray, t: int) -> np.ndarray:
    """Reshare ``pi_t(x)`` where ``pi_t`` is known to P_{t+1} and P_{t+2} only."""
    c = proto.compute
    a, b = (t + 1) % 3, (t + 2) % 3
    shape = x.shape[1:]
    i = proto.index
    if i == t:
        y_t = proto.prg[c[b]].ring(shape)
        y_next = proto.prg[c[a]].ring(shape)
        return np.stack([y_t, y_next])
    if i == a:
        pi = random_permutation(proto.prg[c[b]], shape[0])
        y_next = proto.prg[c[t]].ring(shape)
        mine = (x[0] + x[1])[pi] - y_next
        got = proto.net.exchange({c[b]: [mine]}, [c[b]])[c[b]][0]
        return np.stack([y_next, mine + got])
    pi = random_permutation(proto.prg[c[a]], shape[0])
    y_t = proto.prg[c[t]].ring(shape)
    mine = x[1][pi] - y_t
    got = proto.net.exchange({c[a]: [mine]}, [c[a]])[c[a]][0]
    return np.stack([mine + got, y_t])


def _dealer_step(proto: Protocol, x: np.ndarray, holder: str, other: str) -> np.ndarray:
    """Reshare ``pi(x)`` with ``pi`` known to ``holder`` and the dealer (permutation correlation)."""
    dealer = proto.dealer
    shape = x.shape[1:]
    if proto.party == dealer:
        pi = random_permutation(proto.prg[holder], shape[0])
        g = proto.prg[other]
        a, b = g.ring(shape), g.ring(shape)
        proto.net.send_offline(holder, [a[pi] - b])
        return x
    if proto.party == holder:
        pi = random_permutation(proto.prg[dealer], shape[0])
        delta = proto.net.recv_offline(dealer)[0]
        z = proto.net.exchange(recv_from=[other])[other][0]
        return ((x[0] + z)[pi] + delta)[None]
    g = proto.prg[dealer]
    a, b = g.ring(shape), g.ring(shape)
    proto.net.exchange({holder: [x[0] - a]})
    return b[None]
