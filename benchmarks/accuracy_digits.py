"""MLP accuracy on scikit-learn's digits: secure (2pc and rep3) against the plaintext reference.

500 training and 500 test rows, MLP 64 -> 32 -> 10, 10 epochs, batch 32, SGD (lr 0.05,
momentum 0.9), rows in their given order; the reference runs the same algorithm in float64 on
the same fixed-point-encoded inputs. Usage: python benchmarks/accuracy_digits.py
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_digits

import covault
from covault import ml

X, Y = load_digits(return_X_y=True)
XTR, YTR, XTE, YTE = X[:500], Y[:500], X[500:1000], Y[500:1000]
KW = dict(
    hidden=(32,),
    n_classes=10,
    epochs=10,
    batch_size=32,
    learning_rate=0.05,
    momentum=0.9,
    seed=0,
    shuffle="none",
)


def prog(s):
    owner = s.compute_parties[0]
    mine = s.party == owner
    x = s.input(XTR if mine else None, owner=owner)
    y = s.input(YTR.astype(float) if mine else None, owner=owner)
    xt = s.input(XTE if mine else None, owner=owner)
    yt = s.input(YTE.astype(float) if mine else None, owner=owner)
    t0 = time.perf_counter()
    model = ml.MLPClassifier(**KW).fit(x, y)
    seconds = time.perf_counter() - t0
    return model.score(xt, yt), round(seconds, 2)


if __name__ == "__main__":
    ref = ml.ReferenceMLPClassifier(**KW).fit(np.round(XTR * 2**16) / 2**16, YTR)
    print(f"plaintext reference: test accuracy {ref.score(XTE, YTE):.4f}")
    for protocol, n in (("2pc", 2), ("rep3", 3)):
        res = covault.run(prog, parties=n, protocol=protocol)
        acc, secs = res[next(iter(res))]
        print(f"secure {protocol}: test accuracy {acc:.4f} (training {secs} s, transport=local)")
