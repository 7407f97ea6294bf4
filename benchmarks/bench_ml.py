"""LR 10k x 30 one epoch (batch 128) and an MLP 30-64-2 step: time, rounds, bytes per batch.

Usage: python benchmarks/bench_ml.py [local|tcp] [lr|mlp]
"""

import sys
import time

import numpy as np

import covault
from covault import ml, nn, optim
from covault.ml import batching

N, D, B = 10_000, 30, 128


def data():
    rng = np.random.default_rng(7)  # test data only
    X = rng.normal(size=(N, D))
    w = rng.normal(size=D)
    y = (X @ w + 0.5 * rng.normal(size=N) > 0).astype(float)
    return X, y


def lr_epoch(s):
    X, y = data()
    a = s.compute_parties[0]
    x = s.input(X if s.party == a else None, owner=a)
    t = s.input(y.reshape(-1, 1) if s.party == a else None, owner=a)
    sigmoid = SIG
    model = nn.Linear(D, 1, weight=np.zeros((D, 1)))
    loss = nn.BCEWithLogitsLoss(sigmoid=sigmoid)
    opt = optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)
    with s.scope() as sh:
        t0 = time.perf_counter()
        x, t = ml.shuffle_together([x, t])
        tsh = time.perf_counter() - t0
    g = loss.backward(model(x[:B]), t[:B])  # warm-up (imports, first-use checks)
    model.backward(g, scale=loss.scale, input_grad=False)
    opt.zero_grad()
    t0 = time.perf_counter()
    with s.scope() as c:
        order = batching.epoch_order(N, 0, 0)
        xe, te = x[order], t[order]
        for sl in batching.batch_slices(N, B):
            g = loss.backward(model(xe[sl]), te[sl])
            model.backward(g, scale=loss.scale, input_grad=False)
            opt.step()
            opt.zero_grad()
    el = time.perf_counter() - t0
    with s.scope() as one:
        g = loss.backward(model(xe[:B]), te[:B])
        model.backward(g, scale=loss.scale, input_grad=False)
        opt.step()
        opt.zero_grad()
    return el, c.as_dict(), one.as_dict(), tsh, sh.as_dict()


def mlp_step(s):
    X, y = data()
    a = s.compute_parties[0]
    xb = s.input(X[:B] if s.party == a else None, owner=a)
    yb = s.input(np.stack([1 - y[:B], y[:B]], 1) if s.party == a else None, owner=a)
    model = nn.Sequential(nn.Linear(D, 64, seed=1), nn.ReLU(), nn.Linear(64, 2, seed=2))
    loss = nn.SoftmaxCrossEntropyLoss()
    opt = (
        optim.Adam(model.parameters(), lr=1e-3)
        if OPT == "adam"
        else optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    )
    out = []
    for _ in range(4):
        t0 = time.perf_counter()
        with s.scope() as c:
            g = loss.backward(model(xb), yb)
            model.backward(g, scale=loss.scale, input_grad=False)
            opt.step()
            opt.zero_grad()
        out.append((time.perf_counter() - t0, c.as_dict()))
    return out


SIG = "piecewise"
OPT = "sgd"

if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "local"
    what = sys.argv[2] if len(sys.argv) > 2 else "lr"
    for proto, n in [("2pc", 2), ("rep3", 3)]:
        if what == "lr":
            r = covault.run(lr_epoch, n, proto, transport=transport, timeout=300)
            el, c, one, tsh, sh = r["p0"]
            nb = len(batching.batch_slices(N, B))
            print(
                f"{proto} {transport} LR epoch {el:.3f}s ({1000 * el / nb:.2f} ms/batch); per batch: {one}; shuffle {tsh * 1000:.1f} ms {sh}"
            )
            if "dealer" in r:
                print("   dealer per batch", r["dealer"][2])
            for p in r:
                if p != "p0" and r[p] is not None:
                    print("   ", p, f"{r[p][0]:.3f}s", r[p][2])
        else:
            r = covault.run(mlp_step, n, proto, transport=transport, timeout=300)
            print(
                proto,
                transport,
                "MLP step",
                [(round(1000 * t, 1), c["rounds"], c["bytes_sent"]) for t, c in r["p0"]],
            )
