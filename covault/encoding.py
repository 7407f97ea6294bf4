"""Fixed-point encoding of real numbers into Z_2^64.

A real ``v`` is stored as the ring element ``round(v * 2^f)`` (two's complement), with ``f``
fractional bits (16 by default). Products carry ``2f`` fractional bits until truncated, so
inputs must satisfy ``|v| < 2^(31 - f)`` (``FixedPoint.max_abs``) for the product of two of
them to stay below 2^62, where truncation is exact; encoding enforces that range, or a bound
the caller declares (see :mod:`covault.bounds` for how bounds follow the computation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from covault.errors import EncodingError

INT_RANGE = 2.0**31  # integers (no fractional bits): |v| < 2^31, so a product of two stays exact


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point format with ``frac_bits`` fractional bits in the 64-bit ring."""

    frac_bits: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.frac_bits, int) or not 0 <= self.frac_bits <= 30:
            raise EncodingError(f"frac_bits must be an integer in [0, 30], got {self.frac_bits!r}")

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def max_abs(self) -> float:
        """Largest magnitude accepted by :meth:`encode`: products of two such values stay exact."""
        return float(2 ** (31 - self.frac_bits))

    def encode(self, values, *, what: str = "input", bound: float | None = None) -> np.ndarray:
        """Encode reals (array-like) as ring elements; reject NaN, inf and values with
        ``|v| >= bound`` (default :attr:`max_abs`)."""
        arr = _numeric(values, what).astype(np.float64, copy=False)
        if arr.size and not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise EncodingError(f"{what}: NaN or infinite value at index {tuple(int(i) for i in bad)}")
        limit = self.max_abs if bound is None else self.check_bound(bound, what)
        enc = np.round(arr * self.scale)
        if arr.size and np.abs(enc).max() >= limit * self.scale:
            idx = np.unravel_index(int(np.abs(enc).argmax()), arr.shape)
            raise EncodingError(
                f"{what}: value {float(arr[idx])!r} at index {tuple(int(i) for i in idx)} is outside the "
                + (
                    f"fixed-point range |x| < {limit:g} (2^{31 - self.frac_bits}, "
                    f"{self.frac_bits} fractional bits)"
                    if bound is None
                    else f"declared bound |x| < {limit:g}"
                )
            )
        return enc.astype(np.int64)

    def check_bound(self, bound: float, what: str, frac: int | None = None) -> float:
        """A declared magnitude bound, checked: positive, finite, and small enough that the
        values stay truncatable (``bound 2^frac <= 2^62``; integers may use the whole ring)."""
        frac = self.frac_bits if frac is None else frac
        top = 2.0 ** (62 - frac) if frac else 2.0**63
        if not isinstance(bound, int | float | np.integer | np.floating) or not 0 < bound <= top:
            raise EncodingError(f"{what}: bound must be a number in (0, {top:g}], got {bound!r}")
        return float(bound)

    def encode_int(self, values, *, what: str = "input", bound: float | None = None) -> np.ndarray:
        """Integers (any integer or bool dtype, or whole numbers in floats) as ring elements
        with no fractional bits; values with ``|v| >= bound`` (default :data:`INT_RANGE`) are
        refused, never wrapped."""
        arr = _numeric(values, what)
        if np.issubdtype(arr.dtype, np.floating):  # whole numbers in a float array are fine
            whole = np.isfinite(arr) & (arr == np.round(arr))
            if not whole.all():
                idx = tuple(int(i) for i in np.argwhere(~whole)[0])
                raise EncodingError(f"{what}: expected integers, got {float(arr[idx])!r} at index {idx}")
            if arr.size and np.abs(arr).max() >= 2.0**63:
                idx = tuple(int(i) for i in np.unravel_index(int(np.abs(arr).argmax()), arr.shape))
                raise EncodingError(
                    f"{what}: integer {float(arr[idx]):.0f} at index {idx} is outside the ring"
                )
            arr = arr.astype(np.int64)
        limit = INT_RANGE if bound is None else self.check_bound(bound, what, 0)
        if arr.size and arr.dtype != np.bool_:
            # compare as Python ints: uint64 values above 2^63 and -2^63 have no int64 magnitude
            lo, hi = int(arr.min()), int(arr.max())
            worst = hi if abs(hi) >= abs(lo) else lo
            whole_ring = limit == 2.0**63 and lo == -(2**63)  # bound 2^63 admits every int64
            if abs(worst) >= limit and not (whole_ring and hi < 2**63):
                idx = np.unravel_index(int(np.argmax(arr == worst)), arr.shape)
                raise EncodingError(
                    f"{what}: integer {worst} at index {tuple(int(i) for i in idx)} is outside the "
                    f"range |x| < {limit:.0f} (2^{math.log2(limit):g})"
                )
        return arr.astype(np.int64)

    def decode(self, ring: np.ndarray) -> np.ndarray:
        """Decode ring elements (int64, two's complement) to float64."""
        return np.asarray(ring, dtype=np.int64).astype(np.float64) / self.scale


def _numeric(values, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise EncodingError(f"{what}: expected numeric values, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise EncodingError(f"{what}: complex values cannot be encoded")
    return arr
