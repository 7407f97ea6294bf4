"""Fixed-point encoding of real numbers into Z_2^64.

A real ``v`` is stored as the ring element ``round(v * 2^f)`` (two's complement), with ``f``
fractional bits (16 by default). Products carry ``2f`` fractional bits until truncated, so
inputs must satisfy ``|v| < 2^(62 - 2f)`` for every product and truncation to stay exact;
that bound (``FixedPoint.max_abs``) is enforced at encoding time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covault.errors import EncodingError


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

    def encode(self, values, *, what: str = "input") -> np.ndarray:
        """Encode reals (array-like) as ring elements; reject NaN, inf and out-of-range values."""
        arr = np.asarray(values)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise EncodingError(f"{what}: expected numeric values, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise EncodingError(f"{what}: complex values cannot be encoded")
        arr = arr.astype(np.float64, copy=False)
        if arr.size and not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise EncodingError(f"{what}: NaN or infinite value at index {tuple(int(i) for i in bad)}")
        bound = self.max_abs
        if arr.size and np.abs(arr).max() >= bound:
            idx = np.unravel_index(int(np.abs(arr).argmax()), arr.shape)
            raise EncodingError(
                f"{what}: value {arr[idx]!r} at index {tuple(int(i) for i in idx)} is outside the "
                f"fixed-point range |x| < {bound:g} (2^{31 - self.frac_bits}, "
                f"{self.frac_bits} fractional bits)"
            )
        return np.round(arr * self.scale).astype(np.int64)

    def decode(self, ring: np.ndarray) -> np.ndarray:
        """Decode ring elements (int64, two's complement) to float64."""
        return np.asarray(ring, dtype=np.int64).astype(np.float64) / self.scale
