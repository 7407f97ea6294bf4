"""Public mini-batch schedule shared by the secure estimators and their plaintext references.

Rows are first put in a hidden random order by the oblivious shuffle
(:mod:`covault.ops.shuffle`); each epoch then visits them in a PUBLIC order drawn from
the estimator's public ``seed`` (AES-CTR, :func:`covault.randomness.public.public_permutation`) and
cuts it into contiguous batches. A public reordering of obliviously shuffled rows reveals
nothing (the map from positions to original rows stays hidden) and gives every epoch different
batches at no cost; the plaintext reference trainers use the very same orders.
"""

from __future__ import annotations

import numpy as np

from covault.randomness.public import public_permutation


def epoch_order(n: int, epoch: int, seed: int) -> np.ndarray:
    """The public visiting order of ``n`` rows in ``epoch`` (0-based)."""
    return public_permutation(seed, f"epoch/{epoch}", n)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Contiguous batches of ``batch_size`` rows; the last one holds the remainder."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def check_hyper(epochs: int, batch_size: int, learning_rate: float) -> None:
    """Validate the schedule hyper-parameters every estimator shares."""
    if not isinstance(epochs, int | np.integer) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
