"""Secret-shared tensors: the type programs compute with.

:class:`SecretTensor` holds this party's shares (``(k, *shape)`` int64, see
:mod:`covault.protocols.base`) and the number of fractional bits of its fixed-point encoding
(``frac``: the session's ``f`` for reals, 0 for exact integers such as comparison results).
Linear operations are local; products call the protocol and truncate back to ``f``
fractional bits. Integer-valued operands (bits, counts) multiply without truncation.

Every tensor also carries ``bound``, a public real with ``|value| <= bound`` (inputs: the encoding
range or a declared bound; see :mod:`covault.bounds`). Operations derive the result's bound,
choose the scale of public multipliers from it, and raise :class:`~covault.errors.BoundError`
naming the operation when a result could leave the ring's exact range, instead of wrapping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from covault import bounds, ring
from covault.bounds import EXACT_LIMIT, RING_LIMIT
from covault.encoding import INT_RANGE
from covault.errors import BoundError, CovaultError, EncodingError, ShapeError

if TYPE_CHECKING:
    from covault.session import Session


def _is_int_public(v: Any) -> bool:
    if isinstance(v, bool | int | np.integer):
        return True
    return isinstance(v, np.ndarray) and (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_)


class SecretTensor:
    """A tensor of fixed-point reals (or integers) secret-shared among the compute parties."""

    __array_priority__ = 1000  # make ``ndarray (op) SecretTensor`` defer to us

    def __init__(self, session: Session, shares: np.ndarray, frac: int, bound: float | None = None):
        self.session = session
        self.shares = shares
        self.frac = frac
        self.bound = None if bound is None else float(bound)

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
        return (
            f"SecretTensor(shape={self.shape}, {kind}, "
            + ("bound untracked, " if self.bound is None else f"|x| <= {self.bound:.6g}, ")
            + f"party={self.session.party!r})"
        )

    @property
    def proto(self):
        return self.session.protocol

    def _new(self, shares: np.ndarray, frac: int | None = None, bound: float | None = None) -> SecretTensor:
        """A tensor of this session with ``frac`` (default: this one's) and ``bound`` (default:
        untracked): every caller that computes new values states their bound."""
        return SecretTensor(self.session, shares, self.frac if frac is None else frac, bound)

    def _same(self, shares: np.ndarray) -> SecretTensor:
        """This tensor's values rearranged (reshaped, indexed, negated, permuted): its frac and
        bound."""
        return SecretTensor(self.session, shares, self.frac, self.bound)

    def with_bound(self, bound: float) -> SecretTensor:
        """The same shares with a tighter public bound ``|value| <= bound``, which the caller
        guarantees (e.g. a function's range); a looser one is ignored."""
        b = float(bound) if self.bound is None else min(self.bound, float(bound))
        return SecretTensor(self.session, self.shares, self.frac, b)

    def _same_session(self, other: SecretTensor) -> None:
        if other.session is not self.session:
            raise CovaultError("secret tensors belong to different sessions")

    # -- fixed-point bookkeeping -------------------------------------------------------------
    def _rescale(self, frac: int) -> SecretTensor:
        """The same value with ``frac >= self.frac`` fractional bits (exact, local)."""
        if frac == self.frac:
            return self
        bounds.check(self.bound, frac, "rescale")
        return self._new(self.shares << np.int64(frac - self.frac), frac, self.bound)

    def _plan_bound(self) -> float:
        """The tracked bound, or the one assumed for an untracked tensor."""
        if self.bound is not None:
            return self.bound
        return bounds.default_bound(self.session.frac_bits, self.frac)

    def _public(self, value: Any, frac: int) -> np.ndarray:
        """Encode a public operand with ``frac`` fractional bits (range-checked like inputs)."""
        if isinstance(value, SecretTensor):
            raise TypeError("expected a public value")
        if _is_int_public(value) and self.frac == 0:
            enc = self.session.fxp.encode_int(value, what="public operand", bound=INT_RANGE)
            return enc << np.int64(frac)
        if _is_int_public(value):  # an integer added to reals: the reals' range
            ints = self.session.fxp.encode_int(value, what="public operand", bound=RING_LIMIT)
            enc = self.session.fxp.encode(ints, what="public operand")
            return enc << np.int64(frac - self.session.frac_bits)
        enc = self.session.fxp.encode(value, what="public operand")
        return enc << np.int64(frac - self.session.frac_bits)

    def _int_product(self, value: Any, apply, gain, op: str) -> SecretTensor:
        """``apply(shares, C)`` for a public integer multiplier or matrix (no truncation); the
        result's bound must stay in the ring (for an untracked operand: its assumed bound)."""
        ci = self.session.fxp.encode_int(value, what=op, bound=RING_LIMIT)
        g = gain(np.abs(ci.astype(np.float64)))
        bounds.check(self._plan_bound() * g, self.frac, op)
        return self._new(apply(self.shares, ci), self.frac, bounds.scale(self.bound, g))

    def _scaled(self, c: Any, apply, gain, op: str) -> SecretTensor:
        """``apply(shares, C)`` for a public real multiplier or matrix ``c``, encoded from this
        tensor's bound (:class:`covault.bounds.MultiplierPlan`: every raw product below 2^62,
        one truncation, up to two more where the bound leaves the constant too few bits),
        truncated to ``f`` bits. ``gain(|C|)``: the largest sum of magnitudes one output
        collects."""
        arr = np.asarray(c, dtype=np.float64)
        if arr.size and not np.isfinite(arr).all():
            raise EncodingError(f"{op}: NaN or infinite public value")
        f = self.session.frac_bits
        if not arr.size or not np.any(arr):
            return self._new(apply(self.shares, np.zeros(arr.shape, np.int64)), f, 2.0**-f)
        known, g = self._plan_bound(), gain(np.abs(arr))
        if not math.isfinite(g):
            raise BoundError(f"{op}: the public value's magnitudes add up beyond floating point")
        plan = bounds.MultiplierPlan.make(known, self.frac, f, arr, gain)
        if plan is None:
            bounds.check(known * g, f, op, EXACT_LIMIT)
            raise BoundError(
                f"{op}: the operand's bound |x| <= {known:.6g} ({bounds.log2_str(known)}) leaves the "
                "public value too few bits for a result exact to float32 precision; declare a "
                "tighter bound (session.input(..., bound=B)) or scale the data down"
            )
        x = self.proto.trunc(self.shares, plan.t) if plan.t else self.shares
        z = apply(x, plan.hi)
        if plan.lo is not None:
            z = z + self.proto.trunc(apply(x, plan.lo), plan.u)
        bound = bounds.add(bounds.scale(self.bound, g), plan.error)
        return self._fix(z, self.frac - plan.t + plan.s, bound)

    def _fix(self, shares: np.ndarray, frac: int, bound: float | None) -> SecretTensor:
        """Truncate a product of bound ``bound`` back to the session's fractional bits when
        it exceeds them."""
        f = self.session.frac_bits
        if frac > f:
            return self._new(self.proto.trunc(shares, frac - f), f, bounds.add(bound, 2.0**-f))
        return self._new(shares, frac, bound)

    def _product(
        self, x: np.ndarray, y: np.ndarray, other: SecretTensor, matmul: bool, terms: int
    ) -> SecretTensor:
        """Secret-secret product; fused with truncation when the result needs it."""
        frac, f = self.frac + other.frac, self.session.frac_bits
        bound = bounds.product(self.bound, other.bound, terms, frac)
        if frac > f:
            return self._new(self.proto.mul_trunc(x, y, frac - f, matmul), f, bounds.add(bound, 2.0**-f))
        z = self.proto.matmul(x, y) if matmul else self.proto.mul(x, y)
        return self._new(z, frac, bound)

    def truncate(self, bits: int) -> SecretTensor:
        """Divide by ``2^bits`` with the protocol's probabilistic truncation (frac unchanged)."""
        bounds.check(self.bound, self.frac, "truncate", EXACT_LIMIT)
        b = bounds.add(bounds.scale(self.bound, 2.0**-bits), 2.0**-self.frac)
        return self._new(self.proto.trunc(self.shares, bits), self.frac, b)

    # -- arithmetic -----------------------------------------------------------------------
    def _add(self, other: Any, sign: int) -> SecretTensor:
        if isinstance(other, SecretTensor):
            self._same_session(other)
            frac = max(self.frac, other.frac)
            a, b = self._rescale(frac), other._rescale(frac)
            nd = len(_broadcast(a.shape, b.shape, "+"))
            bound = bounds.check(bounds.add(a.bound, b.bound), frac, "addition")
            return self._new(_lift(a.shares, nd) + sign * _lift(b.shares, nd), frac, bound)
        frac = self.frac if _is_int_public(other) else max(self.frac, self.session.frac_bits)
        a = self._rescale(frac)
        c = self._public(other, frac)
        _broadcast(a.shape, np.shape(c), "+")
        peak = float(np.abs(c).max()) / 2.0**frac if np.size(c) else 0.0
        bound = bounds.check(bounds.add(a.bound, peak), frac, "addition of a public value")
        return self._new(self.proto.add_public(a.shares, sign * c), frac, bound)

    def __add__(self, other: Any) -> SecretTensor:
        return self._add(other, 1)

    __radd__ = __add__

    def __sub__(self, other: Any) -> SecretTensor:
        return self._add(other, -1)

    def __rsub__(self, other: Any) -> SecretTensor:
        return (-self)._add(other, 1)

    def __neg__(self) -> SecretTensor:
        return self._same(-self.shares)

    def __pos__(self) -> SecretTensor:
        return self

    def __mul__(self, other: Any) -> SecretTensor:
        if isinstance(other, SecretTensor):
            self._same_session(other)
            nd = len(_broadcast(self.shape, other.shape, "*"))
            return self._product(_lift(self.shares, nd), _lift(other.shares, nd), other, False, 1)
        if _is_int_public(other):
            _broadcast(self.shape, np.shape(other), "*")
            return self._int_product(other, _elementwise, _peak, "product with a public integer")
        c = np.asarray(other, dtype=np.float64)
        _broadcast(self.shape, c.shape, "*")
        return self._scaled(c, _elementwise, _peak, "product with a public value")

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
            return self._product(self.shares, other.shares, other, True, _inner(self.shape))
        return self._public_matmul(other, right=True)

    def __rmatmul__(self, other: Any) -> SecretTensor:
        return self._public_matmul(other, right=False)

    def _public_matmul(self, other: Any, right: bool) -> SecretTensor:
        """``self @ c`` (``right``) or ``c @ self`` for a public matrix ``c``."""
        c = np.asarray(other)
        out_shape = (
            ring.matmul_shape(self.shape, c.shape) if right else ring.matmul_shape(c.shape, self.shape)
        )
        side = "right" if right else "left"

        def apply(shares: np.ndarray, ci: np.ndarray) -> np.ndarray:
            if not shares.shape[0]:
                return np.zeros((0, *out_shape), np.int64)
            prods = [ring.matmul(s, ci) if right else ring.matmul(ci, s) for s in shares]
            return np.stack(prods)

        def gain(a: np.ndarray) -> float:
            return bounds.column_gain(a, side)

        if _is_int_public(other):
            return self._int_product(c, apply, gain, "matmul with a public integer matrix")
        return self._scaled(c.astype(np.float64), apply, gain, "matmul with a public matrix")

    def square(self) -> SecretTensor:
        return self * self

    def __pow__(self, k: Any) -> SecretTensor:
        """``x ** k`` for a small non-negative integer ``k`` (square-and-multiply:
        ``ceil(log2 k)`` product rounds plus one per further set bit)."""
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or not 0 <= k <= MAX_POWER:
            raise TypeError(
                f"x ** k needs an integer 0 <= k <= {MAX_POWER}, got {k!r}; "
                "use exp()/log() for real exponents and reciprocal() for negative ones"
            )
        if k == 0:
            ones = self.proto.add_public(self.proto.empty(self.shape), self._public(1, self.frac))
            return self._new(ones, self.frac, 1.0)
        result, base, k = None, self, int(k)
        while True:
            if k & 1:
                result = base if result is None else result * base
            k >>= 1
            if not k:
                return result
            base = base * base

    # -- reductions -----------------------------------------------------------------------
    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> SecretTensor:
        ax = _shift_axes(axis, self.ndim)
        count = _count(self.shape, axis)
        bound = bounds.check(bounds.scale(self.bound, count), self.frac, f"sum of {count} elements")
        return self._new(self.shares.sum(axis=ax, keepdims=keepdims), self.frac, bound)

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> SecretTensor:
        n = _count(self.shape, axis)
        if n == 0:
            raise ShapeError("mean of an empty secret tensor")
        return self.sum(axis, keepdims) / n

    def var(
        self, axis: int | Sequence[int] | None = None, ddof: int = 0, keepdims: bool = False
    ) -> SecretTensor:
        """Variance ``sum((x - mean)^2) / (n - ddof)`` (two passes: the mean, then the
        squared deviations; one product round and two scalings)."""
        n = _count(self.shape, axis)
        if n - ddof <= 0:
            raise ShapeError(f"var of {n} elements with ddof={ddof}")
        centred = self - self.mean(axis, keepdims=True)
        return (centred * centred).sum(axis, keepdims) / (n - ddof)

    def std(
        self, axis: int | Sequence[int] | None = None, ddof: int = 0, keepdims: bool = False
    ) -> SecretTensor:
        """Standard deviation: ``sqrt`` of :meth:`var` (see docs/precision.md for sqrt)."""
        return self.var(axis, ddof, keepdims).sqrt()

    # -- shape manipulation -------------------------------------------------------------------
    def reshape(self, *shape: Any) -> SecretTensor:
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        k = self.shares.shape[0]
        try:
            return self._same(
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
        return self._same(self.shares.transpose((0, *[a % self.ndim + 1 for a in axes])))

    @property
    def T(self) -> SecretTensor:
        return self.transpose()

    def __getitem__(self, idx: Any) -> SecretTensor:
        if isinstance(idx, SecretTensor):
            raise TypeError("indexing with a secret tensor is not supported; use where()")
        idx = idx if isinstance(idx, tuple) else (idx,)
        try:
            return self._same(np.ascontiguousarray(self.shares[(slice(None), *idx)]))
        except IndexError as e:
            raise ShapeError(f"bad index for shape {self.shape}: {e}") from None

    def expand_dims(self, axis: int) -> SecretTensor:
        return self._same(np.expand_dims(self.shares, axis % (self.ndim + 1) + 1))

    def squeeze(self, axis: int | None = None) -> SecretTensor:
        ax = None if axis is None else axis % self.ndim + 1
        if ax is None:
            ax = tuple(i + 1 for i, s in enumerate(self.shape) if s == 1)
        return self._same(np.squeeze(self.shares, axis=ax))

    def broadcast_to(self, shape: Sequence[int]) -> SecretTensor:
        k = self.shares.shape[0]
        lifted = _lift(self.shares, len(tuple(shape)))
        try:
            return self._same(np.ascontiguousarray(np.broadcast_to(lifted, (k, *shape))))
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
        from covault.ops import compare

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

    # -- numpy interoperability (covault/tensor_numpy.py) -------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from covault import tensor_numpy

        return tensor_numpy.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from covault import tensor_numpy

        return tensor_numpy.array_function(func, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "a secret tensor cannot become a numpy array; reveal() it (every compute party "
            "learns it) or keep computing on it"
        )

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> SecretTensor:
        """One-hot indicator (integer 0/1) of the first maximum along ``axis``."""
        return self._cmp().argmax(self, axis, keepdims)

    def _nl(self):
        from covault.ops import nonlinear

        return nonlinear

    # Each function's result gets the bound of its range (docs/precision.md, "Domains"), with
    # 1% + 2 ulp for the approximation error.
    def _ranged(self, out: SecretTensor, top: float) -> SecretTensor:
        return out.with_bound(top * 1.01 + 2.0 ** (1 - self.session.frac_bits))

    def exp(self) -> SecretTensor:
        top = min(math.exp(min(self._plan_bound(), 700.0)), self.session.fxp.max_abs)
        return self._ranged(self._nl().exp(self), top)

    def log(self) -> SecretTensor:
        """Natural log for ``x > 0`` (see docs/precision.md for the domain)."""
        f = self.session.frac_bits
        return self._ranged(
            self._nl().log(self), max(f * math.log(2), math.log(max(self._plan_bound(), 1.0)))
        )

    def reciprocal(self) -> SecretTensor:
        """``1/x`` for ``x > 0`` (the smallest positive value, 2^-f, gives 2^f)."""
        return self._ranged(self._nl().reciprocal(self), 2.0**self.session.frac_bits)

    def sqrt(self) -> SecretTensor:
        return self._ranged(self._nl().sqrt(self), math.sqrt(self._plan_bound()))

    def inv_sqrt(self) -> SecretTensor:
        return self._ranged(self._nl().inv_sqrt(self), 2.0 ** (self.session.frac_bits / 2))

    def sigmoid(self) -> SecretTensor:
        return self._ranged(self._nl().sigmoid(self), 1.0)

    def tanh(self) -> SecretTensor:
        return self._ranged(self._nl().tanh(self), 1.0)

    def softmax(self, axis: int = -1) -> SecretTensor:
        return self._ranged(self._nl().softmax(self, axis), 1.0)

    # -- conversions -----------------------------------------------------------------------
    def to_boolean(self):
        """XOR shares of the 64-bit two's-complement encoding."""
        from covault.ops import convert

        return convert.a2b(self)


MAX_POWER = 64


def _elementwise(shares: np.ndarray, c: np.ndarray) -> np.ndarray:
    return shares * c


def _peak(a: np.ndarray) -> float:
    return float(a.max()) if a.size else 0.0


def _inner(shape: tuple[int, ...]) -> int:
    return int(shape[-1]) if shape else 1


def _count(shape: tuple[int, ...], axis) -> int:
    """How many elements one output of a reduction over ``axis`` sums."""
    if axis is None:
        return int(np.prod(shape, dtype=np.int64))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    try:
        return int(np.prod([shape[a] for a in axes], dtype=np.int64))
    except IndexError:
        raise ShapeError(f"axis {axis!r} is out of range for shape {shape}") from None


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
    out = cond * diff + b
    if isinstance(cond, SecretTensor) and cond.frac == 0 and cond.bound is not None and cond.bound <= 1:
        out = _tighter(out, _bound_of(a, cond), _bound_of(b, cond))
    return out


def _tighter(out: SecretTensor, a: float | None, b: float | None) -> SecretTensor:
    """``out`` bounded by the larger of two operand bounds (when both are tracked)."""
    return out if a is None or b is None else out.with_bound(max(a, b))


def _bound_of(v: Any, like: SecretTensor) -> float | None:
    if isinstance(v, SecretTensor):
        return v.bound
    return float(np.abs(np.asarray(v, dtype=np.float64)).max(initial=0.0)) + 2.0**-like.session.frac_bits


def maximum(a: Any, b: Any) -> SecretTensor:
    """Elementwise maximum of two tensors (either may be public): ``b + relu(a - b)``."""
    if not isinstance(a, SecretTensor):
        a, b = b, a
    return _tighter((a - b).relu() + b, _bound_of(a, a), _bound_of(b, a))


def minimum(a: Any, b: Any) -> SecretTensor:
    """Elementwise minimum: ``-maximum(-a, -b)``."""
    return -maximum(_negate(a), _negate(b))


def _negate(v: Any) -> Any:
    return -v if isinstance(v, SecretTensor) else -np.asarray(v)


def concatenate(tensors: Sequence[SecretTensor], axis: int = 0) -> SecretTensor:
    if not tensors:
        raise ShapeError("concatenate needs at least one tensor")
    first = tensors[0]
    frac = max(t.frac for t in tensors)
    parts = [t._rescale(frac).shares for t in tensors]
    bound = None if any(t.bound is None for t in tensors) else max(t.bound for t in tensors)
    try:
        return first._new(np.concatenate(parts, axis=axis % first.ndim + 1), frac, bound)
    except ValueError as e:
        raise ShapeError(f"cannot concatenate shapes {[t.shape for t in tensors]}: {e}") from None


def stack(tensors: Sequence[SecretTensor], axis: int = 0) -> SecretTensor:
    if not tensors:
        raise ShapeError("stack needs at least one tensor")
    first = tensors[0]
    frac = max(t.frac for t in tensors)
    parts = [t._rescale(frac).shares for t in tensors]
    bound = None if any(t.bound is None for t in tensors) else max(t.bound for t in tensors)
    try:
        return first._new(np.stack(parts, axis=axis % (first.ndim + 1) + 1), frac, bound)
    except ValueError as e:
        raise ShapeError(f"cannot stack shapes {[t.shape for t in tensors]}: {e}") from None
