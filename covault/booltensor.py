"""Boolean secret tensors: 64-bit words shared with XOR.

:class:`BooleanTensor` holds this party's XOR shares in the protocol's layout (int64 array of
shape ``(k, *shape)``, see :mod:`covault.protocols.base`). XOR, NOT, shifts and operations with
public words are local; ``&`` and ``|`` with another secret word cost one ``and_`` round.
Conversions to and from arithmetic sharing live in :mod:`covault.ops.convert`
(``SecretTensor.to_boolean()``, :meth:`BooleanTensor.to_arithmetic`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from covault.errors import CovaultError, ShapeError

if TYPE_CHECKING:
    from covault.session import Session
    from covault.tensor import SecretTensor


def _words(value: Any) -> np.ndarray:
    """A public operand as int64 words (Python ints may use the full unsigned 64-bit range)."""
    if isinstance(value, BooleanTensor):
        raise TypeError("expected a public value")
    try:
        arr = np.asarray(value)
    except OverflowError:
        raise ValueError(f"public operand {value!r} does not fit in 64 bits") from None
    if arr.dtype == object:
        raise ValueError(f"public operand {value!r} is not an array of 64-bit integers")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"public operands of boolean tensors must be integers, got dtype {arr.dtype}")
    return arr.view(np.int64) if arr.dtype == np.uint64 else arr.astype(np.int64)


def _broadcast(shares: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Shares ``(k, *S)`` broadcast to ``(k, *shape)``, ``S`` aligned with the trailing axes."""
    k, own = shares.shape[0], shares.shape[1:]
    lifted = shares.reshape((k,) + (1,) * (len(shape) - len(own)) + own)
    return np.ascontiguousarray(np.broadcast_to(lifted, (k, *shape)))


def _shift_amount(k: Any) -> int:
    if not isinstance(k, int | np.integer) or not 0 <= int(k) < 64:
        raise ValueError(f"shift amount must be a public integer in [0, 63], got {k!r}")
    return int(k)


class BooleanTensor:
    """A tensor of 64-bit words, XOR-shared among the compute parties.

    ``frac`` records the fixed-point fractional bits of the words when they encode reals
    (set by ``a2b``; :meth:`to_arithmetic` restores it). Right shifts are arithmetic (sign-
    extending, like numpy's ``int64 >>``); :meth:`lshr` shifts in zeros.
    """

    __array_priority__ = 1000

    def __init__(self, session: Session, shares: np.ndarray, frac: int = 0):
        self.session = session
        self.shares = shares
        self.frac = frac

    # -- basics -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.shares.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def proto(self):
        return self.session.protocol

    def __repr__(self) -> str:
        return f"BooleanTensor(shape={self.shape}, party={self.session.party!r})"

    def _new(self, shares: np.ndarray, frac: int | None = None) -> BooleanTensor:
        return BooleanTensor(self.session, shares, self.frac if frac is None else frac)

    def _pair(self, other: BooleanTensor, op: str) -> tuple[np.ndarray, np.ndarray]:
        if other.session is not self.session:
            raise CovaultError("boolean tensors belong to different sessions")
        try:
            shape = np.broadcast_shapes(self.shape, other.shape)
        except ValueError:
            raise ShapeError(f"shapes {self.shape} and {other.shape} do not broadcast for {op!r}") from None
        return _broadcast(self.shares, shape), _broadcast(other.shares, shape)

    def _public(self, other: Any, op: str) -> tuple[np.ndarray, np.ndarray]:
        """Own shares and a public word operand, both broadcast to the common shape."""
        c = _words(other)
        try:
            shape = np.broadcast_shapes(self.shape, c.shape)
        except ValueError:
            raise ShapeError(f"shapes {self.shape} and {c.shape} do not broadcast for {op!r}") from None
        return _broadcast(self.shares, shape), np.broadcast_to(c, shape)

    # -- bitwise operations ------------------------------------------------------------------
    def __xor__(self, other: Any) -> BooleanTensor:
        if isinstance(other, BooleanTensor):
            a, b = self._pair(other, "^")
            return self._new(a ^ b)
        x, c = self._public(other, "^")
        return self._new(self.proto.xor_public(x, c))

    __rxor__ = __xor__

    def __and__(self, other: Any) -> BooleanTensor:
        if isinstance(other, BooleanTensor):
            a, b = self._pair(other, "&")
            return self._new(self.proto.and_(a, b))
        x, c = self._public(other, "&")
        return self._new(x & c)

    __rand__ = __and__

    def __or__(self, other: Any) -> BooleanTensor:
        """``x | y = x ^ y ^ (x & y)`` (one AND round; local for a public ``y``)."""
        if isinstance(other, BooleanTensor):
            a, b = self._pair(other, "|")
            return self._new(a ^ b ^ self.proto.and_(a, b))
        x, c = self._public(other, "|")
        return self._new(self.proto.xor_public(x & ~c, c))

    __ror__ = __or__

    def __invert__(self) -> BooleanTensor:
        return self._new(self.proto.xor_public(self.shares, np.int64(-1)))

    def __lshift__(self, k: Any) -> BooleanTensor:
        return self._new(self.shares << np.int64(_shift_amount(k)))

    def __rshift__(self, k: Any) -> BooleanTensor:
        """Arithmetic right shift (copies of the top bit come in), as numpy ``int64 >>``."""
        return self._new(self.shares >> np.int64(_shift_amount(k)))

    def lshr(self, k: int) -> BooleanTensor:
        """Logical right shift (zeros come in)."""
        return self._new((self.shares.view(np.uint64) >> np.uint64(_shift_amount(k))).view(np.int64))

    # -- shape --------------------------------------------------------------------------------
    def __getitem__(self, idx: Any) -> BooleanTensor:
        idx = idx if isinstance(idx, tuple) else (idx,)
        try:
            return self._new(np.ascontiguousarray(self.shares[(slice(None), *idx)]))
        except IndexError as e:
            raise ShapeError(f"bad index for shape {self.shape}: {e}") from None

    def reshape(self, *shape: Any) -> BooleanTensor:
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        try:
            new = np.empty(self.shape, np.int8).reshape(shape).shape
        except ValueError as e:
            raise ShapeError(f"cannot reshape {self.shape} to {shape}: {e}") from None
        return self._new(self.shares.reshape((self.shares.shape[0], *new)))

    # -- opening and conversion --------------------------------------------------------------
    def reveal(self, to: str | Sequence[str] | None = None) -> np.ndarray | None:
        """Open the words (int64) to ``to`` (None: every compute party); None elsewhere."""
        return self.proto.reveal_bool(self.shares, self.session.receivers(to))

    def to_arithmetic(self) -> SecretTensor:
        """Arithmetic shares of the words (see :func:`covault.ops.convert.b2a`)."""
        from covault.ops import convert

        return convert.b2a(self)

    def bit_to_arith(self) -> SecretTensor:
        """Integer 0/1 secret tensor of the lowest bit of every word."""
        from covault.ops import convert

        return convert.bit_to_arith(self)
