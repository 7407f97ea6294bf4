"""Private set intersection of n >= 2 parties: DH-PSI over X25519 (semi-honest).

Commutative-encryption PSI of Meadows (IEEE S&P 1986) and Huberman, Franklin, Hogg (ACM EC
1999); see also De Cristofaro, Tsudik (FC 2010). ``H`` hashes an id onto Curve25519 and ``x^k``
is X25519 exponentiation (:mod:`covault.protocols.psi.group`). Ring order = ``parties`` order,
``next``/``prev`` wrap around. Steps at party ``i``:

0. Broadcast its set size, the status of its ids (fine / empty / duplicates / unsupported)
   and a digest of ``(parties, leader)`` (one round). Every party checks every status, so
   all raise the same :class:`~covault.errors.PsiError` naming the offending parties (only the
   owner's own message quotes its id).
1. Canonicalise its ids, draw a secret order ``sigma_i`` (argsort of AES-CTR keys from a fresh
   ``os.urandom`` seed) and a key ``k_i`` (32 bytes of ``os.urandom``); list
   ``L_i = [H(x)^{k_i}]`` in ``sigma_i`` order.
2. ``n - 1`` hops, every list moving at once (one round each): send the list held to ``next``,
   raise the list received from ``prev`` to ``k_i``. Afterwards ``prev(j)`` holds
   ``L_j`` fully encrypted, ``H(x)^{k_1 ... k_n}``, still in ``sigma_j`` order.
3. Every holder except the leader permutes its list by a fresh secret ``pi`` and sends the
   first 16 bytes of each value (tags) to the leader (one round). The leader never holds its
   own list, so its own tags reach it shuffled by ``prev(leader)``.
4. The leader intersects the ``n`` tag lists (``T``) and sends one packed bit mask per list in
   the order it has it, with ``|T|`` (one round): the mask of the list it holds goes straight
   to that list's owner, the mask of the list held by ``h`` goes to ``h``.
5. Every holder undoes ``pi`` and forwards the mask, now in ``sigma_j`` order, to the owner
   ``j`` (one round; skipped when ``|T| = 0``, which every party then reports). The owner maps
   the mask through ``sigma_j`` to its common ids.

Cost: ``n + 3`` rounds (``n + 2`` when ``|T| = 0``). Party ``i`` hashes its ``|X_i|`` ids and
computes ``sum_j |X_j|`` X25519 exponentiations (every list once); it sends ``32`` bytes per
element of the ``n - 1`` lists it passes on, as a holder other than the leader ``16`` bytes per
element of the list it holds, and ``1`` bit per element in masks.

Leakage (semi-honest parties, authenticated channels): every party learns all set sizes and
the intersection. For ``n >= 3`` the leader also learns the size of the intersection of every
sub-group of lists (it compares the unlinkable tag lists), not which ids they hold. A holder
sees the mask of the list it holds only in an order private to its owner (``sigma_j``). Tags
are 16 bytes: a false match among ``N`` values in all has probability below ``N^2 / 2^128``
(and is detected: masks must all count ``|T|``). Deterministic hashing means a party that
guesses an id can test it only by taking part with it (the semi-honest model).

Timeouts: a party may wait for a peer's exponentiations (about 28 us per element and list on
one core), so after step 0 every wait is allowed ``net.timeout`` plus :data:`WAIT_PER_ID` seconds
per id of all the sets (restored on return).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import cast

import numpy as np

from covault.errors import PartyError, PeerError, ProtocolError, PsiError
from covault.protocols.psi.group import POINT_BYTES, hash_and_power, new_key, power
from covault.protocols.psi.ids import DUPLICATES, EMPTY, UNSUPPORTED, IdProblem, canonical_ids
from covault.randomness.prg import PRG, new_seed, random_permutation
from covault.transport.base import Message, Network

TAG_BYTES = 16
WAIT_PER_ID = 1e-4  # extra seconds a wait for a peer may take, per id of all the sets
_VERSION = b"covault/psi/v1"
_TAG = np.dtype((np.void, TAG_BYTES))


@dataclass(frozen=True, eq=False)
class PsiResult:
    """What :func:`intersect` returns at one party.

    ``ids``: the common ids as canonical strings, sorted (identical at every party);
    ``index``: int64 positions of those ids in this party's input; ``sizes``: every party's set
    size; ``intersection``: ``len(ids)``.
    """

    ids: list[str]
    index: np.ndarray
    sizes: dict[str, int]
    intersection: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PsiResult):
            return NotImplemented
        return (
            self.ids == other.ids
            and np.array_equal(self.index, other.index)
            and self.sizes == other.sizes
            and self.intersection == other.intersection
        )

    __hash__ = None  # type: ignore[assignment]  # mutable fields


def intersect(net: Network, parties: Sequence[str], ids: object, *, leader: str | None = None) -> PsiResult:
    """Intersect this party's ``ids`` with those of the other ``parties`` (module docstring).

    ``parties``: the ordered names of the parties taking part (at least 2, each ``net.party`` or
    one of ``net.peers``), the same list at every one of them; only they call this.
    ``ids``: a sequence (list, numpy array, pandas Series) of ``str`` or ``int`` (Python or
    numpy); ints count as their decimal strings. ``leader`` (default ``parties[0]``) compares the
    tags. Raises :class:`~covault.errors.PsiError` at every party if some party's ids are empty,
    repeated or of an unsupported type, or if the intersection is empty.
    """
    order, leader = _check_parties(net, parties, leader)
    others = [q for q in order if q != net.party]
    canon = canonical_ids(ids)

    # 0. sizes, status and setup digest, from everyone to everyone
    sizes = _status_round(net, order, leader, others, canon)
    canon = cast(list[str], canon)  # _status_round raised on any IdProblem
    base = net.timeout
    net.timeout = base + WAIT_PER_ID * sum(sizes.values())
    try:
        return _run(net, order, leader, canon, sizes)
    finally:
        net.timeout = base


def _run(
    net: Network, order: tuple[str, ...], leader: str, canon: list[str], sizes: dict[str, int]
) -> PsiResult:
    """Steps 1-5 (module docstring)."""
    me, n = net.party, len(order)
    i = order.index(me)
    nxt, prv = order[(i + 1) % n], order[(i - 1) % n]
    others = [q for q in order if q != me]

    # 1. own list, once encrypted, in a secret order sigma
    prg = PRG(new_seed())
    sigma = random_permutation(prg, len(canon))
    key = new_key()
    held = hash_and_power(key, [canon[j] for j in sigma.tolist()], f"party {me!r}'s own list")

    # 2. n - 1 hops around the ring
    for hop in range(1, n):
        owner = order[(i - hop) % n]
        got = net.exchange({nxt: [held]}, [prv])[prv]
        rows = _expect(got, 1, prv, (sizes[owner], POINT_BYTES), f"list of {owner!r}")
        held = power(key, rows, f"the list of {owner!r} from {prv!r}", peer=prv)
    tags = np.ascontiguousarray(held[:, :TAG_BYTES])  # fully encrypted list of `nxt`

    # 3. holders shuffle and send tags to the leader; 4. the leader sends masks back
    if me == leader:
        got = net.exchange(None, others)
        held_by = {me: tags}
        for h in others:
            o = order[(order.index(h) + 1) % n]
            held_by[h] = _expect(got[h], 1, h, (sizes[o], TAG_BYTES), f"tags of the list of {o!r}")
        masks, count = _compare(held_by)
        net.exchange(
            {
                h: [np.array([count], np.int64), np.packbits(masks[h])]
                + ([np.packbits(masks[me])] if h == nxt else [])
                for h in others
            },
            [],
        )
        own_mask = None
    else:
        pi = random_permutation(prg, len(tags))
        net.exchange({leader: [np.ascontiguousarray(tags[pi])]}, [])
        got = net.exchange(None, [leader])[leader]
        parts = 3 if order[(order.index(leader) + 1) % n] == me else 2  # me = next(leader): own mask too
        count_arr = _expect(got, parts, leader, (1,), "intersection size", dtype=np.int64)
        count = int(count_arr[0])
        if not 0 <= count <= min(sizes.values()):
            raise PeerError(leader, f"sent an impossible intersection size {count}")
        mask_pi = _unpack(got[1], len(tags), count, leader, "mask of the list held here")
        own_mask = (
            _unpack(got[2], len(canon), count, leader, "mask of this party's list") if parts == 3 else None
        )

    if count == 0:
        raise PsiError(f"the intersection is empty (set sizes: {sizes})")

    # 5. holders undo pi and forward each mask to its owner
    sends: dict[str, Message] = {}
    if me != leader:
        mask_sigma = np.empty_like(mask_pi)
        mask_sigma[pi] = mask_pi
        sends[nxt] = [np.packbits(mask_sigma)]
    got = net.exchange(sends, [prv] if prv != leader else [])
    if own_mask is None:
        packed = _expect(got[prv], 1, prv, None, "mask of this party's list")
        own_mask = _unpack(packed, len(canon), count, prv, "mask of this party's list")

    common = sigma[np.flatnonzero(own_mask)]
    found = [canon[j] for j in common.tolist()]
    ranks = sorted(range(len(found)), key=found.__getitem__)
    return PsiResult(
        ids=[found[r] for r in ranks],
        index=common[np.array(ranks, dtype=np.int64)].astype(np.int64),
        sizes=sizes,
        intersection=count,
    )


# -- helpers -----------------------------------------------------------------------------------
def _check_parties(net: Network, parties: Sequence[str], leader: str | None) -> tuple[tuple[str, ...], str]:
    me = net.party
    if isinstance(parties, str) or not all(isinstance(q, str) and q for q in parties):
        raise PartyError(f"party {me!r}: PSI parties must be a sequence of names, got {parties!r}")
    order = tuple(parties)
    if len(order) < 2:
        raise PartyError(f"party {me!r}: PSI needs at least 2 parties, got {list(order)}")
    if len(set(order)) != len(order):
        raise PartyError(f"party {me!r}: PSI parties are listed more than once: {list(order)}")
    if me not in order:
        raise PartyError(
            f"party {me!r} is not one of the PSI parties {list(order)}; only they call intersect"
        )
    missing = [q for q in order if q != me and q not in net.peers]
    if missing:
        raise PartyError(f"party {me!r}: PSI parties {missing} are not among its peers {list(net.peers)}")
    leader = order[0] if leader is None else leader
    if leader not in order:
        raise PartyError(f"party {me!r}: PSI leader {leader!r} is not one of the parties {list(order)}")
    return order, leader


_PUBLIC = {EMPTY: "has no ids", DUPLICATES: "has {} duplicate ids"}


def _status_round(
    net: Network, order: tuple[str, ...], leader: str, others: list[str], canon: list[str] | IdProblem
) -> dict[str, int]:
    me = net.party
    digest = hashlib.sha256(_VERSION + repr((order, leader)).encode()).digest()
    problem = canon if isinstance(canon, IdProblem) else None
    head = np.array(
        [0 if problem else len(canon), problem.code if problem else 0, problem.count if problem else 0]
    )
    msg = [head.astype(np.int64), np.frombuffer(digest, np.uint8)]
    got = net.exchange({q: msg for q in others}, others)
    status = {me: (msg[0], digest)}
    for q in others:
        h = _expect(got[q], 2, q, (3,), "status", dtype=np.int64)
        d = _expect(got[q][1:], 1, q, (32,), "setup digest").tobytes()
        status[q] = (h, d)
    groups: dict[bytes, list[str]] = {}
    for q in sorted(order):
        groups.setdefault(status[q][1], []).append(q)
    if len(groups) > 1:
        views = " vs ".join(str(g) for g in sorted(groups.values()))
        raise ProtocolError(
            f"parties disagree on the PSI parties or leader: {views} "
            f"(party {me!r} has parties {list(order)}, leader {leader!r})"
        )
    pieces = []
    for q in order:
        size, code, count = (int(v) for v in status[q][0])
        if size < 0 or count < 0 or code not in (0, EMPTY, DUPLICATES, UNSUPPORTED):
            raise PeerError(q, f"sent a malformed PSI status {[size, code, count]}")
        if code == 0:
            continue
        if q == me and problem is not None and code != EMPTY:
            pieces.append(f"party {q!r}: {problem.private}")
        else:
            text = _PUBLIC.get(code, "has ids of an unsupported type or shape")
            pieces.append(f"party {q!r} {text.format(count)}")
    if pieces:
        raise PsiError("private set intersection cannot start: " + "; ".join(pieces))
    return {q: int(status[q][0][0]) for q in order}


def _expect(
    msg: Message, parts: int, peer: str, shape: tuple[int, ...] | None, what: str, dtype: type = np.uint8
) -> np.ndarray:
    """First array of ``msg`` (which must hold ``parts`` arrays), checked for dtype and shape."""
    if len(msg) != parts:
        raise PeerError(peer, f"sent {len(msg)} arrays for the {what}, expected {parts}")
    a = msg[0]
    if a.dtype != dtype or (shape is not None and a.shape != shape):
        raise PeerError(
            peer, f"sent a malformed {what}: {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}"
        )
    return a


def _unpack(packed: np.ndarray, size: int, count: int, peer: str, what: str) -> np.ndarray:
    if packed.dtype != np.uint8 or packed.shape != ((size + 7) // 8,):
        raise PeerError(peer, f"sent a malformed {what}: {packed.dtype} {packed.shape}")
    mask = np.unpackbits(packed, count=size).astype(bool)
    if int(mask.sum()) != count:
        raise ProtocolError(f"the {what} from {peer!r} marks {int(mask.sum())} ids, expected {count}")
    return mask


def _compare(held_by: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """The leader's step: common tags of all lists, one boolean mask per list. Candidates match on
    the first 8 bytes (fast integer sorting) and are confirmed on all 16; should two tags share
    their first 8 bytes only (probability about N^2 / 2^64), the exact comparison decides."""
    keys = {h: np.ascontiguousarray(t[:, :8]).view(np.uint64).ravel() for h, t in held_by.items()}
    # keys repeated within a list (a 64-bit collision) make the confirmation below fail
    common = reduce(lambda a, b: np.intersect1d(a, b, assume_unique=True), keys.values())
    masks = {h: np.isin(k, common) for h, k in keys.items()}
    ref = None
    for h, t in held_by.items():
        rows = t[masks[h]][np.argsort(keys[h][masks[h]], kind="stable")]
        if ref is None:
            ref = rows
        elif rows.shape != ref.shape or not np.array_equal(rows, ref):
            return _compare_exact(held_by)
    if ref is None or len(ref) != len(common):
        return _compare_exact(held_by)
    return masks, len(common)


def _compare_exact(held_by: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    keys = {h: t.view(_TAG).ravel() for h, t in held_by.items()}
    common = reduce(np.intersect1d, keys.values())
    masks = {h: np.isin(k, common) for h, k in keys.items()}
    for h, m in masks.items():
        if int(m.sum()) != len(common):
            raise ProtocolError(
                f"tag collision in the list held by {h!r} (probability below N^2/2^128); run PSI again"
            )
    return masks, len(common)
