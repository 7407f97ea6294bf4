"""The images attacked: scikit-learn's digits (8x8, pixels scaled to [0, 1]), the error
measures (MSE, PSNR) and the guesses an attacker makes without seeing anything (baselines)."""

from __future__ import annotations

import numpy as np

PIXELS = 64
CLASSES = 10


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: the 1797 digits as float64 rows of 64 pixels in [0, 1], and their labels."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise ImportError(
            "the attack demo's images come from scikit-learn: pip install 'covault[demo]'"
        ) from None
    data = sk_digits()
    return data.data.astype(np.float64) / 16.0, data.target.astype(np.int64)


def distinct_labels(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first image of each class 0, 1, ... in turn: ``n`` images, labels as
    distinct as ``n`` allows (cycling through the classes)."""
    order = [np.flatnonzero(y == c) for c in range(CLASSES)]
    return np.array([order[i % CLASSES][i // CLASSES] for i in range(n)], dtype=np.int64)


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error per image of the rows of ``a`` against the rows of ``b`` (pixels in [0, 1])."""
    return np.mean((np.atleast_2d(a) - np.atleast_2d(b)) ** 2, axis=-1)


def psnr(error: np.ndarray | float) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of an MSE (peak 1); capped at 200 dB for an exact copy."""
    return 10.0 * np.log10(1.0 / np.maximum(np.asarray(error, dtype=np.float64), 1e-20))


def to_image(candidates: np.ndarray) -> np.ndarray:
    """Candidates as images an attacker would show: clipped to the pixel range [0, 1]."""
    return np.clip(np.nan_to_num(candidates, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def best_match(candidates: np.ndarray, originals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each original, the index of the candidate closest to it and that MSE (an oracle that
    knows the originals: the most generous reading of a pile of candidates)."""
    c = np.asarray(candidates, dtype=np.float64).reshape(-1, PIXELS)
    errors = np.stack([mse(c, o) for o in np.atleast_2d(originals)])  # (originals, candidates)
    pick = np.argmin(errors, axis=1)
    return pick, errors[np.arange(len(pick)), pick]


def matched(recon: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """Reconstructions of a batch reordered to the originals (the assignment of least total MSE;
    a batch's gradient does not say which image is which), one row per original."""
    from scipy.optimize import linear_sum_assignment

    r, o = np.atleast_2d(recon), np.atleast_2d(originals)
    cost = np.stack([mse(r, x) for x in o])  # (originals, reconstructions)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty_like(o)
    out[rows] = r[cols]
    return out


def baselines(originals: np.ndarray, indices: np.ndarray, x: np.ndarray, tries: int, seed: int = 0) -> dict:
    """What guessing achieves without the attack, per original (MSE): one random other image (the mean over all of them), and the best of ``tries`` random other
    images (matched to the original by the same oracle as :func:`best_match`)."""
    others = np.ones(len(x), dtype=bool)
    others[indices] = False
    pool = x[others]
    rng = np.random.default_rng(seed)  # the attack's experiment: nothing secret here
    best = []
    for o in np.atleast_2d(originals):
        draw = pool if tries >= len(pool) else pool[rng.choice(len(pool), size=tries, replace=False)]
        best.append(float(mse(draw, o).min()))
    return {
        "random_image": np.array([float(mse(pool, o).mean()) for o in np.atleast_2d(originals)]),
        "best_of_tries": np.array(best),
        "tries": int(min(tries, len(pool))),
    }
