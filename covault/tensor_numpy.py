"""numpy functions and ufuncs on secret tensors (``np.mean(x)``, ``np.maximum(x, y)``, ``a + x``).

:class:`~covault.tensor.SecretTensor` implements numpy's ``__array_ufunc__`` and
``__array_function__`` protocols by dispatching here: a numpy call that covault has a secure
operation for runs it (same semantics and arguments as numpy, or a TypeError naming the argument
covault does not take); any other numpy call raises a TypeError that names the covault method to
use, or says that there is no secure equivalent. A secret tensor never turns into a plain array.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from covault import tensor as T

# ufunc -> (method on the left operand, method on the right operand when the left is public)
_BINARY: dict[Any, tuple[str, str]] = {
    np.add: ("__add__", "__radd__"),
    np.subtract: ("__sub__", "__rsub__"),
    np.multiply: ("__mul__", "__rmul__"),
    np.true_divide: ("__truediv__", "__rtruediv__"),
    np.matmul: ("__matmul__", "__rmatmul__"),
    np.less: ("__lt__", "__gt__"),
    np.greater: ("__gt__", "__lt__"),
    np.less_equal: ("__le__", "__ge__"),
    np.greater_equal: ("__ge__", "__le__"),
    np.equal: ("__eq__", "__eq__"),
    np.not_equal: ("__ne__", "__ne__"),
}
_UNARY: dict[Any, str] = {
    np.negative: "__neg__",
    np.positive: "__pos__",
    np.absolute: "abs",
    np.sign: "sign",
    np.exp: "exp",
    np.log: "log",
    np.sqrt: "sqrt",
    np.tanh: "tanh",
    np.square: "square",
    np.reciprocal: "reciprocal",
}
_HINTS: dict[str, str] = {
    "argmax": "SecretTensor.argmax() returns a one-hot 0/1 indicator, not an index",
    "argmin": "use (-x).argmax(), a one-hot 0/1 indicator",
    "sort": "there is no secure sort in covault yet",
    "argsort": "there is no secure sort in covault yet",
    "median": "there is no secure median in covault yet (it needs a secure sort)",
    "percentile": "there is no secure percentile in covault yet (it needs a secure sort)",
    "unique": "secret values cannot be deduplicated without revealing them",
    "nonzero": "use covault.where(); positions of secret values would reveal them",
    "round": "secret values are fixed point already; use truncate() for division by 2^k",
    "floor_divide": "use x / d (fixed point)",
    "power": "use x ** k for a small integer k, or exp()/log()",
    "clip": "use covault.maximum(covault.minimum(x, hi), lo)",
}


def _reject(name: str) -> TypeError:
    hint = _HINTS.get(name)
    return TypeError(f"numpy.{name} is not supported on secret tensors" + (f": {hint}" if hint else ""))


def array_ufunc(ufunc: Any, method: str, inputs: tuple, kwargs: dict) -> Any:
    name = getattr(ufunc, "__name__", str(ufunc))
    if method == "reduce" and ufunc is np.add and len(inputs) == 1:
        # numpy's defaults: axis=0 when not given; axis=None reduces over every axis
        args = _no(kwargs, "add.reduce", "axis", "keepdims", keep_none=("axis",))
        return inputs[0].sum(args.get("axis", 0), bool(args.get("keepdims", False)))
    extra = {k: v for k, v in kwargs.items() if v is not None}
    if method != "__call__":
        raise _reject(f"{name}.{method}")
    if extra:
        raise TypeError(f"numpy.{name} on secret tensors takes no {sorted(extra)} argument")
    if ufunc in _UNARY and len(inputs) == 1:
        return getattr(inputs[0], _UNARY[ufunc])()
    if ufunc in _BINARY and len(inputs) == 2:
        a, b = inputs
        fwd, rev = _BINARY[ufunc]
        return getattr(a, fwd)(b) if isinstance(a, T.SecretTensor) else getattr(b, rev)(a)
    if ufunc is np.maximum and len(inputs) == 2:
        return T.maximum(*inputs)
    if ufunc is np.minimum and len(inputs) == 2:
        return T.minimum(*inputs)
    if ufunc is np.power and len(inputs) == 2 and isinstance(inputs[0], T.SecretTensor):
        return inputs[0] ** inputs[1]
    raise _reject(name)


def _no(kwargs: dict, name: str, *allowed: str, keep_none: tuple[str, ...] = ()) -> dict:
    """The keyword arguments of ``numpy.name`` covault honours; TypeError for any other that is
    set. ``keep_none``: arguments for which None is a value (numpy's ``axis``)."""
    bad = [k for k, v in kwargs.items() if k not in allowed and v is not None and v is not np._NoValue]
    if bad:
        raise TypeError(f"numpy.{name} on secret tensors takes no {sorted(bad)} argument")
    return {
        k: v
        for k, v in kwargs.items()
        if k in allowed and v is not np._NoValue and (v is not None or k in keep_none)
    }


def _method(name: str, method: str, signature: tuple[str, ...], *allowed: str) -> Callable[..., Any]:
    """``numpy.name(a, *args, **kwargs)`` as ``a.method(...)``: positional arguments are taken
    by numpy's ``signature`` (the names after ``a``), then checked like keywords."""

    def run(a: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(signature):
            raise TypeError(f"numpy.{name} takes at most {len(signature) + 1} positional arguments")
        given = dict(zip(signature, args))
        if given.keys() & kwargs.keys():
            raise TypeError(f"numpy.{name} got {sorted(given.keys() & kwargs.keys())} twice")
        return getattr(a, method)(**_no(given | kwargs, name, *allowed, keep_none=("axis",)))

    return run


_SUM = ("axis", "dtype", "out", "keepdims")  # numpy.sum / numpy.mean after the array
_VAR = ("axis", "dtype", "out", "ddof", "keepdims")  # numpy.var / numpy.std
_MAX = ("axis", "out", "keepdims")  # numpy.max / numpy.min


def _join(fn: Callable[..., Any]) -> Callable[..., Any]:
    """numpy.concatenate / numpy.stack over secret and public arrays: public ones become
    constants of the first secret's session (range-checked like inputs)."""

    def run(arrays: Any, axis: int = 0, **kwargs: Any) -> Any:
        _no(kwargs, fn.__name__, "axis")
        parts = list(arrays)
        secrets = [p for p in parts if isinstance(p, T.SecretTensor)]
        if not secrets:
            raise TypeError(
                f"numpy.{fn.__name__} of secret tensors got none (a generator is consumed by numpy)"
            )
        session, integer = secrets[0].session, all(p.frac == 0 for p in secrets)

        def lift(p: Any) -> Any:
            if isinstance(p, T.SecretTensor):
                return p
            arr = np.asarray(p)
            whole = integer and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_)
            return session.constant(arr, integer=whole)

        return fn([lift(p) for p in parts], axis)

    return run


_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    np.sum: _method("sum", "sum", _SUM, "axis", "keepdims"),
    np.mean: _method("mean", "mean", _SUM, "axis", "keepdims"),
    np.var: _method("var", "var", _VAR, "axis", "ddof", "keepdims"),
    np.std: _method("std", "std", _VAR, "axis", "ddof", "keepdims"),
    np.max: _method("max", "max", _MAX, "axis", "keepdims"),
    np.min: _method("min", "min", _MAX, "axis", "keepdims"),
    np.amax: _method("amax", "max", _MAX, "axis", "keepdims"),
    np.amin: _method("amin", "min", _MAX, "axis", "keepdims"),
    np.transpose: lambda a, axes=None: a.transpose(*(() if axes is None else (tuple(axes),))),
    np.reshape: lambda a, shape=None, **kw: a.reshape(shape if shape is not None else kw.pop("newshape")),
    np.squeeze: lambda a, axis=None: a.squeeze(axis),
    np.expand_dims: lambda a, axis: a.expand_dims(axis),
    np.broadcast_to: lambda a, shape: a.broadcast_to(shape),
    np.ravel: lambda a: a.flatten(),
    np.concatenate: _join(T.concatenate),
    np.stack: _join(T.stack),
    np.where: lambda cond, a, b: T.where(cond, a, b),
    np.dot: lambda a, b: a @ b if isinstance(a, T.SecretTensor) else b.__rmatmul__(a),
    np.shape: lambda a: a.shape,
    np.ndim: lambda a: a.ndim,
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
}


def array_function(func: Any, args: tuple, kwargs: dict) -> Any:
    impl = _FUNCTIONS.get(func)
    if impl is None:
        raise _reject(getattr(func, "__name__", str(func)))
    try:
        return impl(*args, **kwargs)
    except TypeError as e:
        if "secret tensors" in str(e) or "x ** k" in str(e):
            raise
        raise TypeError(f"numpy.{func.__name__} on secret tensors: {e}") from None
