"""The interface every secret-sharing protocol implements.

A party's share of a tensor of shape ``S`` is an int64 array of shape ``(k, *S)``: ``k`` ring
components (1 in 2pc, 2 in rep3, 0 at a 2pc dealer, which holds no shares but follows the
program to deal correlated randomness). Linear operations act on the trailing axes and are
written once in :mod:`covault.tensor`; everything that needs interaction or protocol knowledge
is a method here. Boolean (XOR) shares use the same layout with any integer word dtype.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from covault.errors import PartyError, ShapeError
from covault.randomness.prg import PRG, new_seed
from covault.transport.base import Network


def _align(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Shares ``(k, *S)`` viewed as ``(k, 1, ..., 1, *S)`` so that ``S`` broadcasts against the
    trailing axes of ``shape`` (never against the component axis)."""
    extra = len(shape) - (x.ndim - 1)
    return x.reshape((x.shape[0],) + (1,) * extra + x.shape[1:]) if extra > 0 else x


def b2a_mul_shape(b: np.ndarray, x: np.ndarray) -> tuple[int, ...]:
    """Shape of ``b * x`` for share arrays ``b`` (bits) and ``x`` (values); ShapeError if the
    element shapes do not broadcast."""
    try:
        return tuple(np.broadcast_shapes(b.shape[1:], x.shape[1:]))
    except ValueError:
        raise ShapeError(
            f"bits of shape {b.shape[1:]} and values of shape {x.shape[1:]} do not broadcast"
        ) from None


class Rider:
    """Arrays that ride along with another step's round to the other compute party (2pc):
    ``out`` goes with the message, ``back`` holds the other party's (None until that round,
    and at a party that sends nothing: the dealer)."""

    def __init__(self, out: Sequence[np.ndarray]):
        self.out = list(out)
        self.back: list[np.ndarray] | None = None


class Protocol(ABC):
    """Per-party state and primitives of one secret-sharing scheme."""

    name: str = ""
    ncomp: int = 0

    def __init__(
        self,
        party: str,
        compute: Sequence[str],
        dealer: str | None,
        net: Network,
        data: Sequence[str] = (),
    ) -> None:
        self.party = party
        self.compute = tuple(compute)
        self.dealer = dealer
        self.data = tuple(data)
        self.parties = (*self.compute, *((dealer,) if dealer else ()), *self.data)
        self.net = net
        self.is_compute = party in self.compute
        self.index = self.compute.index(party) if self.is_compute else -1
        self.prg: dict[str, PRG] = {}

    # -- setup ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Agree on a fresh 128-bit PRG seed with every peer (one round).

        For each pair, the party listed first draws the seed from ``os.urandom`` and sends it;
        the channel's confidentiality (TLS in deployment) protects it.
        """
        order = list(self.parties)
        mine = order.index(self.party)
        sends, recv_from = {}, []
        for j, peer in enumerate(order):
            if j == mine:
                continue
            if mine < j:
                seed = new_seed()
                self.prg[peer] = PRG(seed)
                sends[peer] = [np.frombuffer(seed, dtype=np.uint8)]
            else:
                recv_from.append(peer)
        got = self.net.exchange(sends, recv_from)
        for peer, msg in got.items():
            self.prg[peer] = PRG(msg[0].tobytes())

    # -- helpers --------------------------------------------------------------------------
    def empty(self, shape: tuple[int, ...], dtype=np.int64) -> np.ndarray:
        return np.zeros((self.ncomp, *shape), dtype=dtype)

    @property
    @abstractmethod
    def public_slot(self) -> int | None:
        """Component index that absorbs public constants at this party (None: no component)."""

    def add_public(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Shares of ``x + c`` for a public ring array ``c`` (broadcasting)."""
        shape = np.broadcast_shapes(x.shape[1:], np.shape(c))
        out = np.array(np.broadcast_to(_align(x, shape), (x.shape[0], *shape)))
        if self.public_slot is not None:
            out[self.public_slot] += c
        return out

    def xor_public(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Boolean shares of ``x ^ c`` for a public word array ``c``."""
        shape = np.broadcast_shapes(x.shape[1:], np.shape(c))
        out = np.array(np.broadcast_to(_align(x, shape), (x.shape[0], *shape)))
        if self.public_slot is not None:
            out[self.public_slot] ^= np.asarray(c, dtype=x.dtype)
        return out

    def check_receivers(self, to: Sequence[str]) -> None:
        for p in to:
            if p not in self.parties:
                raise PartyError(f"cannot reveal to unknown party {p!r} (parties: {list(self.parties)})")

    # -- interactive primitives ------------------------------------------------------------
    @abstractmethod
    def share(self, value: np.ndarray | None, owner: str, shape: tuple[int, ...]) -> np.ndarray:
        """Secret-share the owner's ring array of public ``shape``."""

    def share_rows(self, value: np.ndarray | None, owner: str, width: int, max_rows: int) -> np.ndarray:
        """Secret-share rows ``(n, width)`` of the data party ``owner`` whose count ``n`` only the
        owner knows, in ONE round: the owner sends every compute party and the dealer the count
        with whatever components it sends them anyway (:meth:`share`'s, e.g. 2pc: P1 ``x - x0``,
        P0 and the dealer the count alone), and each checks ``1 <= n <= max_rows`` and the
        components' shapes before it draws anything: ShapeError naming the owner otherwise. Only
        the owner, the compute parties and the dealer take part (any other party: PartyError)."""
        if owner not in self.data:
            raise PartyError(f"share_rows: {owner!r} must be a data party (data parties: {list(self.data)})")
        receivers = (*self.compute, *((self.dealer,) if self.dealer else ()))
        if self.party == owner:
            if (
                not isinstance(value, np.ndarray)
                or value.dtype != np.int64
                or value.ndim != 2
                or value.shape[1] != width
                or not 0 < value.shape[0] <= max_rows
            ):
                got = f"{value.dtype}{value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
                raise ShapeError(
                    f"share_rows: rows of {owner!r} must be ring words (int64) of shape (n, {width}), "
                    f"1 <= n <= {max_rows}, got {got}"
                )
            sends = self._input_sends(value, value.shape)
            count = np.array([value.shape[0]], dtype=np.int64)
            self.net.exchange({p: [count, *sends.get(p, [])] for p in receivers})
            return self.empty(value.shape)
        if self.party not in receivers:
            raise PartyError(f"share_rows: party {self.party!r} takes no part in {owner!r}'s rows")
        got = self.net.exchange(recv_from=[owner])[owner]
        head = got[0] if got else None
        if not isinstance(head, np.ndarray) or head.shape != (1,) or head.dtype != np.int64:
            raise ShapeError(f"share_rows: {owner!r} sent no row count")
        n = int(head[0])
        if not 0 < n <= max_rows:
            raise ShapeError(f"share_rows: {owner!r} announced {n} rows (1 to {max_rows} allowed)")
        return self._input_from(owner, (n, width), got[1:])

    def _input_sends(self, value: np.ndarray, shape: tuple[int, ...]) -> dict[str, list[np.ndarray]]:
        """At a data party: the components of its input ``value`` of ``shape`` that each party
        receives (none: no message)."""
        raise NotImplementedError(f"{type(self).__name__} holds no data party's inputs")

    def _input_from(self, owner: str, shape: tuple[int, ...], got: Sequence[np.ndarray]) -> np.ndarray:
        """This party's shares of data party ``owner``'s input of ``shape``, from its pairwise
        streams and the components ``got`` from the owner (checked: their number and shapes)."""
        raise NotImplementedError(f"{type(self).__name__} receives no data party's inputs")

    def _check_components(
        self, owner: str, shape: tuple[int, ...], got: Sequence[np.ndarray], n: int
    ) -> None:
        if len(got) != n or any(
            not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != np.int64 for a in got
        ):
            seen = [f"{a.dtype}{a.shape}" if isinstance(a, np.ndarray) else type(a).__name__ for a in got]
            raise ShapeError(
                f"input of {owner!r} at {self.party!r}: expected {n} int64 component(s) of shape "
                f"{shape}, got {seen}"
            )

    @abstractmethod
    def reveal(self, x: np.ndarray, to: Sequence[str]) -> np.ndarray | None:
        """Open arithmetic shares to the parties ``to``; None at every other party."""

    @abstractmethod
    def reveal_bool(self, x: np.ndarray, to: Sequence[str]) -> np.ndarray | None:
        """Open boolean shares to the parties ``to``; None at every other party."""

    @abstractmethod
    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Shares of the elementwise ring product (numpy broadcasting), no truncation."""

    @abstractmethod
    def matmul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Shares of the ring matrix product ``x @ y`` (2-D or batched), no truncation."""

    @abstractmethod
    def trunc(self, x: np.ndarray, bits: int) -> np.ndarray:
        """Shares of ``floor(x / 2^bits)`` or one more (probabilistic); exact range |x| < 2^62."""

    def mul_trunc(self, x: np.ndarray, y: np.ndarray, bits: int, matmul: bool = False) -> np.ndarray:
        """Shares of the fixed-point product ``(x * y) / 2^bits`` (or ``x @ y``); protocols may
        fuse the two steps."""
        z = self.matmul(x, y) if matmul else self.mul(x, y)
        return self.trunc(z, bits)

    def mul_add_trunc(self, x: np.ndarray, y: np.ndarray, add: np.ndarray, bits: int) -> np.ndarray:
        """Shares of ``(x * y + add) / 2^bits`` (elementwise; ``add`` has the product's shape);
        protocols may fuse the steps."""
        return self.trunc(self.mul(x, y) + add, bits)

    def dealt(self, fn: Callable[[Protocol, np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
        """Shares of ``fn(protocol, shares)`` computed on ``x``, where a protocol has a cheaper place
        for it: here ``fn(self, x)``; rep3 runs it in its dealt two-party view
        (:meth:`~covault.protocols.replicated.Replicated3PC.dealt_view`)."""
        return fn(self, x)

    # -- sums of products with one truncation (an n-out-of-n additive "terms" form) -------------
    def to_terms(self, x: np.ndarray) -> np.ndarray:
        """This party's term of an additive sharing of ``x`` among the compute parties, shaped
        ``(k', *S)``; sums of terms scaled by public integers stay terms. Here: the shares."""
        return x

    def product_terms(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Terms of the matrix product ``x @ y`` (2-D operands). Here: the product's shares (one
        round); a protocol may stop before the round that turns terms into shares."""
        return self.matmul(x, y)

    def from_terms(self, z: np.ndarray, bits: int) -> np.ndarray:
        """Shares of ``sum_parties(z) / 2^bits`` (``bits = 0``: of the sum itself)."""
        return self.trunc(z, bits) if bits else z

    @abstractmethod
    def and_(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean shares of ``x & y`` (same shape and word dtype)."""

    #: whether :meth:`and_many` takes ONE round whatever the monomials' degrees
    fused_and: bool = False

    def and_many(
        self,
        x: np.ndarray,
        monomials: tuple[tuple[int, ...], ...],
        sums: tuple[tuple[int, int, int], ...] = (),
    ) -> np.ndarray:
        """Boolean shares of ``AND_{i in M} x_i`` for each monomial ``M`` (a tuple of variable
        indices), ``x`` holding the variables' shares stacked on axis 1 (``(c, k, *S)``);
        returns ``(c, len(monomials), *S)``. ``sums``: ``(i, j, l)`` where the caller knows
        ``x_i = x_j ^ x_l`` (a one-round AND then opens no word for ``x_i``). Here: by pairs,
        ``ceil(log2(max degree))`` rounds of :meth:`and_` (one call per round for all
        monomials); protocols with :attr:`fused_and` take one round
        (:mod:`covault.protocols.multiand`)."""
        from covault.protocols.multiand import check

        monomials = check(x, monomials, sums).monomials
        if not monomials:
            return np.empty((x.shape[0], 0, *x.shape[2:]), x.dtype)
        factors = [[x[:, i] for i in m] for m in monomials]
        while any(len(f) > 1 for f in factors):
            left, right, where = [], [], []
            for j, f in enumerate(factors):
                for t in range(0, len(f) - 1, 2):
                    left.append(f[t])
                    right.append(f[t + 1])
                    where.append((j, t))
            prod = self.and_(np.stack(left, axis=1), np.stack(right, axis=1))
            nxt: list[list[np.ndarray]] = [[] for _ in factors]
            done = {w: prod[:, n] for n, w in enumerate(where)}
            for j, f in enumerate(factors):
                for t in range(0, len(f), 2):
                    nxt[j].append(done[(j, t)] if (j, t) in done else f[t])
            factors = nxt
        return np.stack([f[0] for f in factors], axis=1)

    @abstractmethod
    def b2a_bit(self, b: np.ndarray) -> np.ndarray:
        """Arithmetic shares of bits given boolean shares of 0/1 values (int64)."""

    def prepare_b2a(self, n: int) -> None:  # noqa: B027 - optional hook
        """Announce that ``n`` bits, not yet computed, will be converted by :meth:`b2a` or
        :meth:`b2a_mul` after further interactive steps. rep3 then makes their daBits
        along those steps' rounds (see :class:`~covault.protocols.replicated.Replicated3PC`);
        the default does nothing."""

    def b2a(self, b: np.ndarray) -> np.ndarray:
        """As :meth:`b2a_bit`; protocols with prepared daBits convert in one round."""
        return self.b2a_bit(b)

    def b2a_mul(
        self, b: np.ndarray, x: np.ndarray, extra: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """Bit injection: arithmetic shares of bits ``b`` (boolean shares of 0/1, bit 0 of each
        word, shape ``Sb``) and of the ring products ``b * x`` (``x`` arithmetic, shape ``Sx``;
        ``Sb`` and ``Sx`` broadcast as in numpy, the product has the broadcast shape). With
        ``extra`` (boolean bits of any shape), also their arithmetic shares, in the same round:
        returns ``(bits, products)``, or ``(bits, products, extra_bits)``.

        Default: :meth:`b2a_bit`, then :meth:`mul`. Both protocols override it with a one-round
        protocol (daBits, Rotaru-Wood 2019, with a Beaver-style product, Beaver 1991).
        """
        sz = b2a_mul_shape(b, x)
        sb, k = b.shape[1:], b.shape[0]
        n = int(np.prod(sb, dtype=np.int64))
        flat = b.reshape(k, n)
        if extra is not None:
            ne = int(np.prod(extra.shape[1:], dtype=np.int64))
            flat = np.concatenate([flat, extra.reshape(k, ne).astype(b.dtype)], axis=1)
        conv = self.b2a_bit(flat)
        bits = np.ascontiguousarray(conv[:, :n]).reshape(k, *sb)
        prods = self.mul(_align(bits, sz), _align(x, sz))
        if extra is None:
            return bits, prods
        return bits, prods, np.ascontiguousarray(conv[:, n:]).reshape(k, *extra.shape[1:])

    @abstractmethod
    def msb_addends(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boolean shares of two words ``a, b`` with ``a + b = x`` (mod 2^64)."""
