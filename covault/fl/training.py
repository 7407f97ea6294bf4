"""Federated logistic regression on the breast-cancer data: the data split, local training
(numpy, full-batch gradient descent), evaluation, and plaintext FedAvg as the baseline.

FedAvg (McMahan et al., AISTATS 2017): each round the server sends the global weights ``w``;
each participating client runs ``epochs`` steps of gradient descent on its own rows from ``w``
and returns its update ``w_local - w``; the server adds the mean update to ``w``. Under secure
aggregation (:mod:`covault.fl.federated`) the server sees only the sum of the clipped,
quantised updates and the number of clients in it; :func:`fedavg_plain` runs the same rounds
in the clear, without clipping or quantisation, with the same clients in each round.

Data: scikit-learn's Wisconsin breast-cancer table (569 patients, 30 features), standardised
with the whole table's mean and deviation (a public preprocessing step of this demo), 20 % held
out for the test set by a public permutation, the rest dealt to the clients round-robin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covault.randomness.public import public_permutation

Shard = tuple[np.ndarray, np.ndarray]


def breast_cancer_split(clients: int, seed: int = 0) -> tuple[list[Shard], Shard]:
    """The clients' shards and the test set (features with a trailing 1 for the bias)."""
    from covault.jobs.demo import breast_cancer

    _, x, y = breast_cancer()
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = np.hstack([x, np.ones((len(x), 1))])
    order = public_permutation(seed, "federated demo split", len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    shards = [(x[train[i::clients]], y[train[i::clients]].astype(np.float64)) for i in range(clients)]
    return shards, (x[test], y[test].astype(np.float64))


def local_update(w: np.ndarray, shard: Shard, epochs: int, lr: float) -> np.ndarray:
    """``w_local - w`` after ``epochs`` full-batch gradient steps of the logistic loss."""
    x, y = shard
    v = w.copy()
    for _ in range(epochs):
        p = 1.0 / (1.0 + np.exp(-(x @ v)))
        v -= lr * (x.T @ (p - y)) / len(y)
    return v - w


def accuracy(w: np.ndarray, data: Shard) -> float:
    x, y = data
    return float(np.mean((x @ w > 0) == (y > 0.5)))


def fedavg_plain(
    shards: Sequence[Shard], participants: Sequence[Sequence[int]], epochs: int, lr: float
) -> np.ndarray:
    """Plaintext FedAvg: round ``r`` averages the float updates of ``participants[r]``."""
    w = np.zeros(shards[0][0].shape[1])
    for ids in participants:
        w = w + sum(local_update(w, shards[u], epochs, lr) for u in ids) / len(ids)
    return w
