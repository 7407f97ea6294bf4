"""Masks of secure aggregation: a seed expanded by AES-128-CTR into a vector of Z_2^b.

Bonawitz et al. (CCS 2017): client ``u`` sends ``y_u = x_u + PRG(b_u) + sum_v d_uv PRG(s_uv)``
in Z_2^b, where ``b_u`` is its self-mask seed, ``s_uv`` the seed it agrees with neighbour
``v`` (:mod:`covault.fl.keys`) and ``d_uv = +1`` if ``u < v``, ``-1`` otherwise. Over the
clients that sent ``y``, pairwise masks cancel in pairs; the server removes the self masks of
the survivors and the pairwise masks that dropped clients would have cancelled. One mask is
the keystream of :class:`covault.randomness.prg.PRG` (AES-CTR) read as ``uint32``/``uint64``
words: one vectorised call per mask, uniform over the ring. Cost: one AES-CTR pass over
``b / 8`` bytes per entry per mask (``k + 1`` masks per client).
"""

from __future__ import annotations

import numpy as np

from covault.randomness.prg import PRG, SEED_BYTES


def expand(seed: bytes, dim: int, dtype: type) -> np.ndarray:
    """``dim`` uniform ring words from a 16-byte seed."""
    return PRG(seed).words(dim, dtype)


def sign(u: int, v: int) -> int:
    """``d_uv``: +1 if ``u < v``, -1 otherwise (so ``d_uv + d_vu = 0``)."""
    return 1 if u < v else -1


def add_pairwise(acc: np.ndarray, u: int, v: int, seed: bytes) -> None:
    """``acc += d_uv * PRG(seed)`` in place (wrapping)."""
    mask = expand(seed, acc.size, acc.dtype.type)
    if sign(u, v) > 0:
        np.add(acc, mask, out=acc)
    else:
        np.subtract(acc, mask, out=acc)


__all__ = ["SEED_BYTES", "add_pairwise", "expand", "sign"]
