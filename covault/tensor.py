"""Secret-shared tensors: the type programs compute with.

:class:`SecretTensor` holds this party's shares (``(k, *shape)`` int64, see
:mod:`covault.protocols.base`) and the number of fractional bits of its fixed-point encoding
(``frac``: the session's ``f`` for reals, 0 for exact integers such as comparison results).
Linear operations are local; products call the protocol and truncate back to ``f``
fractional bits. Integer-valued operands (bits, counts) multiply without truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from covault import ring
from covault.errors import CovaultError, ShapeError

if TYPE_CHECKING:
    from covault.session import Session


def _is_int_public(v: Any) -> bool:
    if isinstance(v, bool | int | np.integer):
        return True
    return isinstance(v, np.ndarray) and (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_)


class SecretTensor:
    """A tensor of fixed-point reals (or integers) secret-shared among the compute parties."""

    __array_priority__ = 1000  # make ``ndarray (op) SecretTensor`` defer to us

    def __init__(self, session: Session, shares: np.ndarray, frac: int):
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

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d secret tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        kind = "int" if self.frac == 0 else f"fixed{self.frac}"
        return f"SecretTensor(shape={self.shape}, {kind}, party={self.session.party!r})"

    @property
    def proto(self):
        return self.session.protocol

    def _new(self, shares: np.ndarray, frac: int | None = None) -> SecretTensor:
        return SecretTensor(self.session, shares, self.frac if frac is None else frac)

    def _same_session(self, other: SecretTensor) -> None:
        if other.session is not self.session:
            raise CovaultError("secret tensors belong to different sessions")

    # -- fixed-point bookkeeping -------------------------------------------------------------
    def _rescale(self, frac: int) -> SecretTensor:
        """The same value with ``frac >= self.frac`` fractional bits (exact, local)."""
        if frac == self.frac:
            return self
        return self._new(self.shares << np.int64(frac - self.frac), frac)

    def _public(self, value: Any, frac: int) -> np.ndarray:
        """Encode a public operand with ``frac`` fractional bits."""
        if isinstance(value, SecretTensor):
            raise TypeError("expected a public value")
        if _is_int_public(value):
            return np.asarray(value, dtype=np.int64) << np.int64(frac)
        enc = self.session.fxp.encode(value, what="public operand")
        return enc << np.int64(frac - self.session.frac_bits)

    def _public_multiplier(self, value: Any) -> tuple[np.ndarray, int]:
        """Encode a public real multiplier with about 24 significant bits: ``(c, s)`` with
        ``value ~= c / 2^s``, ``|c| < 2^24`` (so products of encodable values stay below 2^56).
        Small constants such as ``1/n`` keep their relative precision (6e-8) instead of the
        ``2^-f`` absolute precision of plain encoding."""
        arr = np.asarray(value, dtype=np.float64)
        self.session.fxp.encode(arr, what="public operand")  # NaN/inf/range checks
        peak = float(np.abs(arr).max()) if arr.size else 0.0
        f = self.session.frac_bits
        scale = f if peak == 0.0 else int(np.clip(23 - np.floor(np.log2(peak)), 0, 46))
        return np.round(arr * 2.0**scale).astype(np.int64), scale

    def _fix(self, shares: np.ndarray, frac: int) -> SecretTensor:
        """Truncate a product back to the session's fractional bits when it exceeds them."""
        f = self.session.frac_bits
        if frac > f:
            return self._new(self.proto.trunc(shares, frac - f), f)
        return self._new(shares, frac)

    def _product(self, x: np.ndarray, y: np.ndarray, other_frac: int, matmul: bool) -> SecretTensor:
        """Secret-secret product; fused with truncation when the result needs it."""
        frac, f = self.frac + other_frac, self.session.frac_bits
        if frac > f:
            return self._new(self.proto.mul_trunc(x, y, frac - f, matmul), f)
        z = self.proto.matmul(x, y) if matmul else self.proto.mul(x, y)
        return self._new(z, frac)

    def truncate(self, bits: int) -> SecretTensor:
        """Divide by ``2^bits`` with the protocol's probabilistic truncation (frac unchanged)."""
        return self._new(self.proto.trunc(self.shares, bits))

    # -- arithmetic -----------------------------------------------------------------------
    def _add(self, other: Any, sign: int) -> SecretTensor:
        if isinstance(other, SecretTensor):
            self._same_session(other)
            frac = max(self.frac, other.frac)
            a, b = self._rescale(frac), other._rescale(frac)
            nd = len(_broadcast(a.shape, b.shape, "+"))
            return self._new(_lift(a.shares, nd) + sign * _lift(b.shares, nd), frac)
        frac = self.frac if _is_int_public(other) else max(self.frac, self.session.frac_bits)
        a = self._rescale(frac)
        c = self._public(other, frac)
        _broadcast(a.shape, np.shape(c), "+")
        return self._new(self.proto.add_public(a.shares, sign * c), frac)

    def __add__(self, other: Any) -> SecretTensor:
        return self._add(other, 1)

    __radd__ = __add__

    def __sub__(self, other: Any) -> SecretTensor:
        return self._add(other, -1)

    def __rsub__(self, other: Any) -> SecretTensor:
        return (-self)._add(other, 1)

    def __neg__(self) -> SecretTensor:
        return self._new(-self.shares)

    def __mul__(self, other: Any) -> SecretTensor:
        if isinstance(other, SecretTensor):
            self._same_session(other)
            nd = len(_broadcast(self.shape, other.shape, "*"))
            return self._product(_lift(self.shares, nd), _lift(other.shares, nd), other.frac, False)
        if _is_int_public(other):
            c = np.asarray(other, dtype=np.int64)
            _broadcast(self.shape, c.shape, "*")
            return self._new(self.shares * c)
        c, scale = self._public_multiplier(other)
        _broadcast(self.shape, c.shape, "*")
        return self._fix(self.shares * c, self.frac + scale)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> SecretTensor:
        if isinstance(other, SecretTensor):
            return self * other.reciprocal()
        d = np.asarray(other, dtype=np.float64)
        if d.size and (d == 0).any():
            raise ZeroDivisionError("division of a secret tensor by a public zero")
        return self * (1.0 / d)

    def __rtruediv__(self, other: Any) -> SecretTensor:
        return self.reciprocal() * other

    def __matmul__(self, other: Any) -> SecretTensor:
        if isinstance(other, SecretTensor):
            self._same_session(other)
            ring.matmul_shape(self.shape, other.shape)
            return self._product(self.shares, other.shares, other.frac, True)
        integer = _is_int_public(other)
        c = np.asarray(other, dtype=np.int64) if integer else self._public(other, self.session.frac_bits)
        ring.matmul_shape(self.shape, c.shape)
        z = (
            np.stack([ring.matmul(s, c) for s in self.shares])
            if self.shares.shape[0]
            else np.zeros((0, *ring.matmul_shape(self.shape, c.shape)), np.int64)
        )
        return self._fix(z, self.frac + (0 if integer else self.session.frac_bits))

    def __rmatmul__(self, other: Any) -> SecretTensor:
        integer = _is_int_public(other)
        c = np.asarray(other, dtype=np.int64) if integer else self._public(other, self.session.frac_bits)
        out_shape = ring.matmul_shape(c.shape, self.shape)
        z = (
            np.stack([ring.matmul(c, s) for s in self.shares])
            if self.shares.shape[0]
            else np.zeros((0, *out_shape), np.int64)
        )
        return self._fix(z, self.frac + (0 if integer else self.session.frac_bits))

    def square(self) -> SecretTensor:
        return self * self

    # -- reductions -----------------------------------------------------------------------
    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> SecretTensor:
        ax = _shift_axes(axis, self.ndim)
        return self._new(self.shares.sum(axis=ax, keepdims=keepdims))

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> SecretTensor:
        total = self.sum(axis, keepdims)
        n = self.size // max(total.size, 1) if self.size else 0
        if n == 0:
            raise ShapeError("mean of an empty secret tensor")
        return total / n

    # -- shape manipulation -------------------------------------------------------------------
    def reshape(self, *shape: Any) -> SecretTensor:
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        k = self.shares.shape[0]
        try:
            return self._new(
                self.shares.reshape((k, *shape))
                if k
                else np.zeros((0, *np.empty(self.shape, np.int8).reshape(shape).shape), np.int64)
            )
        except ValueError as e:
            raise ShapeError(f"cannot reshape {self.shape} to {shape}: {e}") from None

    def flatten(self) -> SecretTensor:
        return self.reshape(-1)

    def transpose(self, *axes: int) -> SecretTensor:
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            axes = tuple(axes[0])
        axes = axes or tuple(reversed(range(self.ndim)))
        return self._new(self.shares.transpose((0, *[a % self.ndim + 1 for a in axes])))

    @property
    def T(self) -> SecretTensor:
        return self.transpose()

    def __getitem__(self, idx: Any) -> SecretTensor:
        if isinstance(idx, SecretTensor):
            raise TypeError("indexing with a secret tensor is not supported; use where()")
        idx = idx if isinstance(idx, tuple) else (idx,)
        try:
            return self._new(np.ascontiguousarray(self.shares[(slice(None), *idx)]))
        except IndexError as e:
            raise ShapeError(f"bad index for shape {self.shape}: {e}") from None

    def expand_dims(self, axis: int) -> SecretTensor:
        return self._new(np.expand_dims(self.shares, axis % (self.ndim + 1) + 1))

    def squeeze(self, axis: int | None = None) -> SecretTensor:
        ax = None if axis is None else axis % self.ndim + 1
        if ax is None:
            ax = tuple(i + 1 for i, s in enumerate(self.shape) if s == 1)
        return self._new(np.squeeze(self.shares, axis=ax))

    def broadcast_to(self, shape: Sequence[int]) -> SecretTensor:
        k = self.shares.shape[0]
        lifted = _lift(self.shares, len(tuple(shape)))
        try:
            return self._new(np.ascontiguousarray(np.broadcast_to(lifted, (k, *shape))))
        except ValueError:
            raise ShapeError(f"cannot broadcast shape {self.shape} to {tuple(shape)}") from None

    # -- opening ---------------------------------------------------------------------------
    def reveal(self, to: str | Sequence[str] | None = None) -> np.ndarray | None:
        """Open to ``to`` (None: every compute party). Returns floats (ints when frac is 0)
        at the receivers and None elsewhere."""
        receivers = self.session.receivers(to)
        raw = self.proto.reveal(self.shares, receivers)
        if raw is None:
            return None
        if self.frac == 0:
            return raw
        return raw.astype(np.float64) / float(1 << self.frac)

    # -- comparisons and non-linear functions (protocols in covault.protocols) ---------------
    def _cmp(self):
        from covault.protocols import compare

        return compare

    def __lt__(self, other: Any) -> SecretTensor:
        return self._cmp().less_than(self, other)

    def __gt__(self, other: Any) -> SecretTensor:
        return self._cmp().greater_than(self, other)

    def __le__(self, other: Any) -> SecretTensor:
        return 1 - self._cmp().greater_than(self, other)

    def __ge__(self, other: Any) -> SecretTensor:
        return 1 - self._cmp().less_than(self, other)

    def __eq__(self, other: Any) -> SecretTensor:  # type: ignore[override]
        return self._cmp().equal(self, other)

    def __ne__(self, other: Any) -> SecretTensor:  # type: ignore[override]
        return 1 - self._cmp().equal(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        raise TypeError("a secret tensor has no truth value; reveal() it or use where()")

    def sign(self) -> SecretTensor:
        return self._cmp().sign(self)

    def abs(self) -> SecretTensor:
        return self._cmp().abs_(self)

    __abs__ = abs

    def relu(self) -> SecretTensor:
        return self._cmp().relu(self)

    def max(self, axis: int | None = None, keepdims: bool = False) -> SecretTensor:
        return self._cmp().max_(self, axis, keepdims)

    def min(self, axis: int | None = None, keepdims: bool = False) -> SecretTensor:
        return -self._cmp().max_(-self, axis, keepdims)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> SecretTensor:
        """One-hot indicator (integer 0/1) of the first maximum along ``axis``."""
        return self._cmp().argmax(self, axis, keepdims)

    def _nl(self):
        from covault.protocols import nonlinear

        return nonlinear

    def exp(self) -> SecretTensor:
        return self._nl().exp(self)

    def log(self) -> SecretTensor:
        return self._nl().log(self)

    def reciprocal(self) -> SecretTensor:
        return self._nl().reciprocal(self)

    def sqrt(self) -> SecretTensor:
        return self._nl().sqrt(self)

    def inv_sqrt(self) -> SecretTensor:
        return self._nl().inv_sqrt(self)

    def sigmoid(self) -> SecretTensor:
        return self._nl().sigmoid(self)

    def tanh(self) -> SecretTensor:
        return self._nl().tanh(self)

    def softmax(self, axis: int = -1) -> SecretTensor:
        return self._nl().softmax(self, axis)

    # -- conversions -----------------------------------------------------------------------
    def to_boolean(self):
        """XOR shares of the 64-bit two's-complement encoding."""
        from covault.protocols import convert

        return convert.a2b(self)


def _shift_axes(axis, ndim):
    if axis is None:
        return tuple(range(1, ndim + 1))
    if isinstance(axis, int):
        return axis % ndim + 1 if ndim else 1
    return tuple(a % ndim + 1 for a in axis)


def _lift(shares: np.ndarray, ndim: int) -> np.ndarray:
    """Insert unit axes after the component axis so shares broadcast like ``ndim``-d arrays."""
    missing = ndim - (shares.ndim - 1)
    if missing <= 0:
        return shares
    return shares.reshape((shares.shape[0], *(1,) * missing, *shares.shape[1:]))


def _broadcast(sa, sb, op):
    try:
        return np.broadcast_shapes(tuple(sa), tuple(sb))
    except ValueError:
        raise ShapeError(f"shapes {tuple(sa)} and {tuple(sb)} do not broadcast for {op!r}") from None


def where(cond: SecretTensor, a: Any, b: Any) -> SecretTensor:
    """``cond ? a : b`` elementwise for a secret 0/1 ``cond``: ``b + cond * (a - b)``."""
    if isinstance(a, SecretTensor):
        diff = a - b
    elif isinstance(b, SecretTensor):
        diff = (-b) + a
    else:
        diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        if _is_int_public(np.asarray(a)) and _is_int_public(np.asarray(b)):
            diff = diff.astype(np.int64)
    picked = cond * diff
    return picked + b


def concatenate(tensors: Sequence[SecretTensor], axis: int = 0) -> SecretTensor:
    if not tensors:
        raise ShapeError("concatenate needs at least one tensor")
    first = tensors[0]
    frac = max(t.frac for t in tensors)
    parts = [t._rescale(frac).shares for t in tensors]
    try:
        return first._new(np.concatenate(parts, axis=axis % first.ndim + 1), frac)
    except ValueError as e:
        raise ShapeError(f"cannot concatenate shapes {[t.shape for t in tensors]}: {e}") from None


def stack(tensors: Sequence[SecretTensor], axis: int = 0) -> SecretTensor:
    if not tensors:
        raise ShapeError("stack needs at least one tensor")
    first = tensors[0]
    frac = max(t.frac for t in tensors)
    parts = [t._rescale(frac).shares for t in tensors]
    try:
        return first._new(np.stack(parts, axis=axis % (first.ndim + 1) + 1), frac)
    except ValueError as e:
        raise ShapeError(f"cannot stack shapes {[t.shape for t in tensors]}: {e}") from None
