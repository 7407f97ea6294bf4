"""Clipping and fixed-point quantisation of model updates into the ring Z_2^b (b = 32 or 64).

Steps, per client: scale the update so that its L2 norm is at most ``clip`` (then every entry
is at most ``clip`` in absolute value), multiply by 2^f, round to the nearest integer, and take
it modulo 2^b (two's complement, numpy's wrapping ``uint32`` / ``uint64``). Secure aggregation
adds the ring vectors of up to ``max_clients`` clients; the sum is decoded as a signed integer
and divided by 2^f.

Distributed DP noise (:mod:`covault.fl.dp`), if any, is added after clipping and before
rounding; it lies on the grid ``2^-f`` and within ``NOISE_TAIL * noise_sigma`` of 0 (the
largest value :func:`covault.privacy.noise.gaussian` can return, from its 53-bit uniforms).

Overflow bound: each entry of one client is at most ``(clip + NOISE_TAIL * noise_sigma) * 2^f
+ 1/2`` after rounding, so the sum of ``n`` clients is exact as long as ``n * ((clip + NOISE_TAIL
* noise_sigma) * 2^f + 1/2) < 2^(b-1)``.
:class:`Quantiser` checks this for ``max_clients`` when it is made and raises
:class:`~covault.errors.BoundError` naming the bound otherwise; :meth:`Quantiser.decode_sum`
refuses a sum of more clients than that. Rounding error: at most ``2^-(f+1)`` per entry and
client. Cost: ``b / 8`` bytes per entry.
"""

from __future__ import annotations

import numpy as np

from covault.errors import BoundError, EncodingError

DTYPES = {32: np.uint32, 64: np.uint64}
SIGNED = {32: np.int32, 64: np.int64}
NOISE_TAIL = 8.66  # > sqrt(2 ln 2^54): Box-Muller's radius from uniforms of at least 2^-54


class Quantiser:
    """Clip to L2 norm ``clip``, fixed point with ``frac_bits``, in Z_2^``bits``."""

    def __init__(
        self, clip: float, frac_bits: int, bits: int = 32, max_clients: int = 1, noise_sigma: float = 0.0
    ):
        if bits not in DTYPES:
            raise EncodingError(f"quantisation: the ring must be Z_2^32 or Z_2^64, got 2^{bits}")
        if not (np.isfinite(clip) and clip > 0):
            raise EncodingError(f"quantisation: the clipping norm must be positive and finite, got {clip!r}")
        if not 0 <= frac_bits < bits:
            raise EncodingError(f"quantisation: frac_bits must be in [0, {bits}), got {frac_bits}")
        self.clip, self.frac_bits, self.bits, self.max_clients = (
            float(clip),
            int(frac_bits),
            bits,
            int(max_clients),
        )
        if not (np.isfinite(noise_sigma) and noise_sigma >= 0):
            raise EncodingError(f"quantisation: noise_sigma must be finite and >= 0, got {noise_sigma!r}")
        self.noise_sigma = float(noise_sigma)
        self.dtype = DTYPES[bits]
        bound = self.max_clients * ((self.clip + NOISE_TAIL * self.noise_sigma) * 2.0**frac_bits + 0.5)
        if not bound < 2.0 ** (bits - 1):
            raise BoundError(
                f"quantisation: the sum of {max_clients} clients, each clipped to L2 norm {clip:g} with "
                f"{frac_bits} fractional bits (noise sigma {noise_sigma:g}), can reach {bound:.4g} >= 2^{bits - 1}: it could wrap around "
                f"Z_2^{bits} (need max_clients * ((clip + {NOISE_TAIL} noise_sigma) 2^frac_bits + 1/2) < "
                f"2^{bits - 1}; lower frac_bits "
                "or clip, or use bits=64)"
            )

    def clip_update(self, update: np.ndarray) -> np.ndarray:
        """``update`` (float64) scaled down to L2 norm at most ``clip``."""
        v = np.asarray(update, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(v)):
            raise EncodingError("quantisation: the update holds NaN or infinite values")
        norm = float(np.linalg.norm(v))
        return v * (self.clip / norm) if norm > self.clip else v

    def encode(self, update: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """The clipped update (plus ``noise``, on the grid and within the tail bound) in fixed
        point, as a ring vector (``uint32`` or ``uint64``)."""
        v = self.clip_update(update)
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float64).reshape(-1)
            grid = noise * 2.0**self.frac_bits
            if noise.shape != v.shape or not np.array_equal(grid, np.rint(grid)):
                raise EncodingError(
                    "quantisation: the noise must match the update and lie on the 2^-frac_bits grid"
                )
            if np.any(np.abs(noise) > NOISE_TAIL * self.noise_sigma):
                raise BoundError(
                    f"quantisation: noise beyond {NOISE_TAIL} x noise_sigma = {NOISE_TAIL * self.noise_sigma:g}, "
                    "the margin of the overflow bound"
                )
            v = v + noise
        scaled = np.rint(v * 2.0**self.frac_bits)
        return scaled.astype(np.int64).astype(SIGNED[self.bits]).view(self.dtype)

    def decode_sum(self, total: np.ndarray, clients: int) -> np.ndarray:
        """The float64 sum of ``clients`` updates from their ring sum (signed, divided by 2^f)."""
        if clients > self.max_clients:
            raise BoundError(
                f"quantisation: a sum of {clients} clients exceeds max_clients = {self.max_clients}, "
                f"the most whose sum is exact in Z_2^{self.bits}"
            )
        signed = np.asarray(total, dtype=self.dtype).view(SIGNED[self.bits])
        return signed.astype(np.float64) / 2.0**self.frac_bits
