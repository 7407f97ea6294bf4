"""The interface of correlated randomness for two-party additive sharing.

Protocols ask for named correlations (Beaver triples, matrix triples, AND triples, truncation
masks, daBits, daBits with a Beaver pair) and never see how they are produced, so a dealer-free
provider (OT- or HE-based) can replace the dealer without touching protocol code.

Every method returns this party's parts, or None at a party that holds none (the dealer).
Arithmetic parts are int64 ring elements; boolean parts are words of the requested dtype.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from covault.errors import ProtocolError

if TYPE_CHECKING:
    from covault.randomness.fss import DcfKey

Shape = tuple[int, ...]
DcfMaker = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, list[np.ndarray]]]


class Channel(Protocol):
    """What a provider needs from the network: input-independent messages to and from peers."""

    def send_offline(self, to: str, message: list[np.ndarray]) -> None: ...

    def recv_offline(self, frm: str) -> list[np.ndarray]: ...


class CorrelationProvider(ABC):
    """Source of correlated randomness for the 2pc protocol."""

    @abstractmethod
    def beaver(
        self, sx: Shape, sy: Shape, sz: Shape, op: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> list[np.ndarray] | None:
        """Shares of ``a`` (shape sx), ``b`` (sy) and ``c = op(a, b)`` (sz), a and b uniform."""

    def beaver_late(
        self, sx: Shape, sy: Shape, sz: Shape, op: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, Callable[[], np.ndarray]] | None:
        """As :meth:`beaver`, with ``c`` behind a function: a provider whose ``c`` arrives over
        the network lets the caller open its masked inputs (and compute) first."""
        parts = self.beaver(sx, sy, sz, op)
        if parts is None:
            return None
        a, b, c = parts
        return a, b, lambda: c

    @abstractmethod
    def and_triple(self, shape: Shape, dtype: Any) -> list[np.ndarray] | None:
        """XOR shares of uniform words ``a, b`` and ``c = a & b``."""

    #: whether :meth:`mask_products` is offered (one-round multi-input AND)
    deals_mask_products: bool = False

    def mask_products(
        self,
        shape: Shape,
        dtype: Any,
        k: int,
        subsets: tuple[tuple[int, ...], ...],
        sums: tuple[tuple[int, int, int], ...] = (),
    ) -> list[np.ndarray] | None:
        """``[masks, products]``: XOR shares of ``k`` mask words ``r_i`` (``(k, *shape)``),
        uniform except ``r_i = r_j ^ r_l`` for each ``(i, j, l)`` of ``sums``, and of
        ``AND_{i in S} r_i`` for each of ``subsets`` (``(len(subsets), *shape)``); None at the
        dealer."""
        raise ProtocolError(f"correlation provider {type(self).__name__} deals no mask products")

    @abstractmethod
    def trunc_mask(self, shape: Shape, bits: int) -> list[np.ndarray] | None:
        """Shares of uniform ``r``, of ``u = msb(r) 2^(63-bits)`` and ``v = (r mod 2^63) >> bits``."""

    @abstractmethod
    def dabit(self, shape: Shape) -> list[np.ndarray] | None:
        """A uniform bit ``r`` as XOR shares (uint8, bit 0) and as arithmetic shares."""

    @abstractmethod
    def dabit_beaver(self, sr: Shape, sa: Shape) -> list[np.ndarray] | None:
        """A daBit ``r`` (shape sr, as :meth:`dabit`) with a Beaver pair for it: shares of a
        uniform ``a`` (shape sa) and of ``r * a`` (numpy broadcasting of sr against sa)."""

    def dcf(
        self, shape: Shape, bits: int, make: DcfMaker, words: int, extras: int
    ) -> tuple[np.ndarray, Callable[[], tuple[DcfKey, list[np.ndarray]]]] | None:
        """Shares of a uniform mask ``r`` (shape, Z_2^64) now, and behind a function (so that
        the caller opens its masked input first) a key of the distributed comparison function
        ``beta 1{x < alpha}`` on ``bits``-bit inputs (:mod:`covault.randomness.fss`) with shares
        of ``extras`` ring values (shape each); ``make(r)`` (``r`` flat, run where the function
        is known) returns ``alpha`` (N,), ``beta`` (N, ``words``) and the extras (N,) each."""
        raise ProtocolError(f"correlation provider {type(self).__name__} deals no FSS keys (dcf)")
