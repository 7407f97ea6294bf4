"""Public randomness: streams determined by a PUBLIC seed, for what every party must agree on and
a plaintext run must replay (mini-batch orders, train/test splits, initial weights).

AES-CTR keyed by a hash of the seed and a label; nothing here is secret or may be used for a
share, mask or key (those come from :mod:`covault.randomness.prg` keyed by ``os.urandom``).
"""

from __future__ import annotations

import hashlib

import numpy as np

from covault.randomness.prg import PRG, random_permutation


def public_prg(seed: int, label: str) -> PRG:
    """An AES-CTR stream determined by a PUBLIC ``seed`` and a ``label`` (not for secrets)."""
    if not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    digest = hashlib.sha256(f"covault.public/{label}/{int(seed)}".encode()).digest()
    return PRG(digest[:16])


def public_uniform(seed: int, label: str, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """Public float64 values uniform in ``[low, high)`` from :func:`public_prg`."""
    words = public_prg(seed, label).words(shape, np.uint64)
    u = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return low + (high - low) * u


def public_permutation(seed: int, label: str, n: int) -> np.ndarray:
    """A public permutation of ``range(n)``: argsort of 64-bit AES-CTR keys."""
    return random_permutation(public_prg(seed, label), n)
