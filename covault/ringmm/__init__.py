"""Exact matrix products modulo 2^64 for int64 arrays, by the engine measured fastest here.

Engines are the modules of this package named in ``ENGINE_MODULES``: ``numpy_`` (numpy's int64
matmul), ``einsum``, ``int64`` (torch's int64 matmul) and ``int8`` (byte-sliced int8 GEMMs; its
module explains why it is exact). Each has ``NAME``, ``available()``, ``matmul(a, b)`` (non-empty
int64 operands of two or more dimensions, numpy broadcasting) and the terms of its cost model,
``terms(m, k, n, blocks)`` with candidate block sizes ``BLOCKS``.

``method="auto"`` picks, for each ``(m, k) @ (k, n)`` product:

1. the engine named by ``$COVAULT_MATMUL`` (``numpy``, ``einsum``, ``int64``, ``int8``; unset
   or ``auto``: the steps below);
2. without torch: ``numpy`` for tiny products (``m k n <= TINY``), ``einsum`` for
   matrix-vector ones (``m == 1`` or ``n == 1``), ``numpy`` where typical figures (``TYPICAL``
   of ``numpy_`` and ``int64``) make it at least twice as fast as torch int64 (few output
   columns). Programs of such products never import torch (about a second of CPU);
3. otherwise the engine with the least predicted time under this machine's calibration
   (``calibrate.py``: measured at the first such product, cached per machine and versions).
"""

from __future__ import annotations

import functools
import importlib
import os
from types import MappingProxyType, ModuleType

import numpy as np

from covault.errors import EncodingError, ProtocolError, ShapeError
from covault.ringmm import calibrate

METHODS = ("auto", "int8", "int64", "numpy", "einsum")
ENGINE_MODULES = ("numpy_", "einsum", "int64", "int8")  # the engines, by module name
ENGINES: MappingProxyType[str, ModuleType] = MappingProxyType(
    {e.NAME: e for e in (importlib.import_module(f"{__name__}.{m}") for m in ENGINE_MODULES)}
)
_ALL = tuple(ENGINES.values())
ENV = "COVAULT_MATMUL"
_INT64 = np.dtype(np.int64)
TINY = 1 << 15  # m*k*n at or below which numpy's zero-overhead matmul is used without torch
K_CHUNK: int = ENGINES["int8"].K_CHUNK


def matmul(a: np.ndarray, b: np.ndarray, *, method: str = "auto") -> np.ndarray:
    """``a @ b`` modulo 2^64 with numpy ``matmul`` semantics (1-D operands, broadcast batches).

    Operands are integer arrays (converted to int64, wrapping); the result is a new int64
    array, exact modulo 2^64 for all inputs. ``method`` forces one engine (module doc);
    ``"auto"`` picks the fastest for each shape.
    """
    if (  # a tiny 2-D product of int64 matrices: numpy's, without the dispatch (step 2)
        method == "auto"
        and type(a) is np.ndarray
        and type(b) is np.ndarray
        and a.ndim == 2 == b.ndim
        and a.dtype == _INT64 == b.dtype
        and 0 < a.shape[1] == b.shape[0]
        and a.shape[0] * a.shape[1] * b.shape[1] <= TINY
        and ENV not in os.environ
    ):
        return np.matmul(a, b)
    if method not in METHODS:
        raise ProtocolError(f"unknown ring matmul method {method!r}; expected one of {METHODS}")
    if method == "auto":
        method = forced()
    a = _as_ring(a, "left")
    b = _as_ring(b, "right")
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul needs operands with at least one dimension")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ShapeError(
            f"matmul shape mismatch: {a.shape} @ {b.shape} (inner sizes {a2.shape[-1]} != {b2.shape[-2]})"
        )
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) if a2.ndim + b2.ndim > 4 else ()
    except ValueError:
        raise ShapeError(f"matmul batch shapes do not broadcast: {a.shape} @ {b.shape}") from None
    out = _product(a2, b2, batch, method)
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return np.asarray(out)


def choose(m: int, k: int, n: int) -> str:
    """The engine ``method="auto"`` uses for one ``(m, k) @ (k, n)`` product (module doc)."""
    name = forced()
    return _auto(m, k, n) if name == "auto" else name


def _auto(m: int, k: int, n: int) -> str:
    if (name := _without_torch(m, k, n)) is not None:
        return name
    return calibrate.calibration(_ALL).fastest(ENGINES, m, k, n) or "numpy"


def forced() -> str:
    """The method ``$COVAULT_MATMUL`` names for ``method="auto"`` (``"auto"`` when unset)."""
    value = os.environ.get(ENV)
    if not value:
        return "auto"
    value = value.strip().lower() or "auto"
    if value not in METHODS:
        raise ProtocolError(f"{ENV}={value!r} is not a ring matmul method; expected one of {METHODS}")
    return value


def prepare() -> None:
    """Import torch and load this machine's calibration (measuring it if there is none) now,
    with the int8 engine's self-check where the calibration would use it, rather than at the
    first product that needs them."""
    name = forced()
    if name != "auto":
        ENGINES[name].available()
        return
    cal = calibrate.calibration(_ALL)
    for m, k, n in (*calibrate.SHAPES, (1000, 1000, 1000), (4000, 4000, 4000)):
        cal.fastest(ENGINES, m, k, n)  # checks the engines it would use (int8: its self-check)


def int8_available() -> bool:
    """Whether the int8 engine runs here and passes its exactness self-check (cached)."""
    return bool(ENGINES["int8"].available())


@functools.lru_cache(maxsize=4096)
def _without_torch(m: int, k: int, n: int) -> str | None:
    """The engine for a product whose choice needs no measurement (module doc, step 2)."""
    if m * k * n <= TINY:
        return "numpy"
    if m == 1 or n == 1:
        return "einsum"
    fast, torch = ENGINES["numpy"], ENGINES["int64"]
    if 2 * _typical(fast, m, k, n) <= _typical(torch, m, k, n):
        return "numpy"
    return None


def _typical(engine: ModuleType, m: int, k: int, n: int) -> float:
    blocks, coef = engine.TYPICAL
    return sum(c * t for c, t in zip(coef, engine.terms(m, k, n, blocks)))


def _as_ring(x: np.ndarray, side: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.int64:
        return x
    if x.dtype.kind not in "biu":
        raise EncodingError(f"ring matmul needs integer arrays; the {side} operand has dtype {x.dtype}")
    return x.astype(np.int64)


def _product(a: np.ndarray, b: np.ndarray, batch: tuple[int, ...], method: str) -> np.ndarray:
    m, k = a.shape[-2:]
    n = b.shape[-1]
    if m == 0 or n == 0 or k == 0 or 0 in batch:
        return np.zeros((*batch, m, n), np.int64)
    if batch and b.ndim == 2:  # shared right operand: one tall product
        rows = int(np.prod(batch)) * m
        return _product(a.reshape(rows, k), b, (), method).reshape(*batch, m, n)
    name = _auto(m, k, n) if method == "auto" else method
    engine = ENGINES[name]
    if not engine.available():
        raise ProtocolError(f"the {name} ring matmul engine is not available on this machine")
    return engine.matmul(a, b)
