"""covault.ml: secure estimators against their plaintext references, scikit-learn and numpy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.preprocessing import StandardScaler as SkScaler

import covault
from covault import ml
from covault.errors import ProtocolError, ShapeError
from covault.ml.reference import standardise
from tests.helpers import IDS, VARIANTS, owner_value, run_both

BC_X, BC_Y = load_breast_cancer(return_X_y=True)
SPLIT = 400  # train on the first rows, test on the rest
LR_KW = dict(epochs=8, learning_rate=0.1, batch_size=32, C=1.0, seed=3)


def enc(a):
    """Values as the fixed-point encoding stores them (16 fractional bits)."""
    return np.round(np.asarray(a, dtype=float) * 2**16) / 2**16


def two_owners(s, x, y):
    """Rows split between the first two compute parties, concatenated."""
    a, b = s.compute_parties[0], s.compute_parties[1]
    h = len(x) // 2
    xs = ml.concat_rows(
        [s.input(owner_value(s, x[:h], a), owner=a), s.input(owner_value(s, x[h:], b), owner=b)]
    )
    ys = ml.concat_rows(
        [s.input(owner_value(s, y[:h], a), owner=a), s.input(owner_value(s, y[h:], b), owner=b)]
    )
    return xs, ys


# -- standardisation -------------------------------------------------------------------------------
SC_X = np.concatenate([BC_X[:200], np.full((200, 1), 7.5)], axis=1)  # scales 1e-3 .. 1e3, a constant


@pytest.mark.parametrize("row_block", [None, 64], ids=["whole", "row-blocks"])
@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_standard_scaler(proto, row_block, monkeypatch):
    if row_block is not None:  # 200 rows standardised 64 at a time: the same statistics
        monkeypatch.setattr(ml.preprocessing, "ROW_BLOCK", row_block)

    def prog(s):
        x = s.input(owner_value(s, SC_X), owner=s.compute_parties[0])
        sc = ml.StandardScaler().fit(x)
        pub = sc.reveal()
        return sc.mean_.reveal(), sc.inv_scale_.reveal(), sc.transform(x).reveal(), pub and pub[1]

    mean, inv, xs, scale = run_both(prog, proto)
    x = enc(SC_X)
    rmean, rinv = standardise(x)
    # two probabilistic truncations, the first scaled by 2^s / n <= 2: at most 3 units of 2^-16
    np.testing.assert_allclose(mean, rmean, rtol=1e-5, atol=3 * 2.0**-16)
    np.testing.assert_allclose(inv, rinv, rtol=2e-3)
    assert inv[-1] == 1.0  # constant column: scale 1, as scikit-learn
    np.testing.assert_allclose(scale[:-1], x[:, :-1].std(0), rtol=2e-3)
    np.testing.assert_allclose(xs, (x - rmean) * rinv, rtol=2e-3, atol=5e-3)
    np.testing.assert_allclose(xs[:, :-1], SkScaler().fit_transform(x)[:, :-1], rtol=2e-3, atol=5e-3)


def test_standard_scaler_keeps_its_precision_on_many_rows():
    """300,000 rows: the coefficients ``1/n`` and ``1/sqrt(n)`` keep their bits (``1/n`` and
    ``1/(n sqrt n)`` on sums of n values kept 29 - log2(n): variances 15% too large here, zero
    at 2.4 million rows)."""
    n = 300_000
    rng = np.random.default_rng(4)  # test data only
    x = np.column_stack([rng.normal(size=n), 500 + 100 * rng.normal(size=n), np.full(n, 3.0)])

    def prog(s):
        sc = ml.StandardScaler().fit(s.input(owner_value(s, x), owner=s.compute_parties[0]))
        return sc.mean_.reveal(), sc.var_.reveal(), sc.inv_scale_.reveal()

    mean, var, inv = covault.run(prog, 2, "2pc")["p0"]
    ex = enc(x)
    np.testing.assert_allclose(mean, ex.mean(0), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(var[:2], ex.var(0)[:2], rtol=1e-4)
    assert var[2] < ml.preprocessing.VAR_EPS and inv[2] == 1.0  # the constant column: scale 1


# -- logistic regression ---------------------------------------------------------------------------
def prog_logistic(s, sigmoid, shuffle):
    x, y = two_owners(s, BC_X[:SPLIT], BC_Y[:SPLIT])
    xt = s.input(owner_value(s, BC_X[SPLIT:]), owner=s.compute_parties[0])
    yt = s.input(owner_value(s, BC_Y[SPLIT:]), owner=s.compute_parties[0])
    model = ml.LogisticRegression(sigmoid=sigmoid, shuffle=shuffle, **LR_KW).fit(x, y)
    public = model.reveal(to=s.compute_parties[0])
    proba = model.predict_proba(xt).reveal()
    return model.score(x, y), model.score(xt, yt), public, proba


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_logistic_regression_matches_reference(proto):
    name, n = proto
    res = covault.run(lambda s: prog_logistic(s, "piecewise", "none"), n, name)
    train, test, public, proba = res["p0"]
    assert res["p1"][2] is None  # revealed to p0 only
    ref = ml.ReferenceLogisticRegression(sigmoid="piecewise", shuffle="none", **LR_KW).fit(
        enc(BC_X[:SPLIT]), BC_Y[:SPLIT]
    )
    assert abs(train - ref.score(BC_X[:SPLIT], BC_Y[:SPLIT])) <= 0.01
    assert abs(test - ref.score(BC_X[SPLIT:], BC_Y[SPLIT:])) <= 0.01
    sc = SkScaler().fit(BC_X[:SPLIT])
    sk = SkLogistic(C=1.0, max_iter=5000).fit(sc.transform(BC_X[:SPLIT]), BC_Y[:SPLIT])
    assert test >= sk.score(sc.transform(BC_X[SPLIT:]), BC_Y[SPLIT:]) - 0.03
    # the public copy predicts like the secret model and is close to the reference
    z = BC_X[SPLIT:] @ public.coef_ + public.intercept_
    assert np.mean((z > 0) == (ref.decision_function(BC_X[SPLIT:]) > 0)) >= 0.98
    np.testing.assert_allclose(proba[:, 1], public.predict_proba(BC_X[SPLIT:])[:, 1], atol=0.02)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-4)
    assert public.score(BC_X[SPLIT:], BC_Y[SPLIT:]) == pytest.approx(test, abs=0.01)


def test_logistic_regression_exact_sigmoid_and_shuffle():
    train, test, _, _ = covault.run(lambda s: prog_logistic(s, "exact", "once"), 2, "2pc")["p0"]
    ref = ml.ReferenceLogisticRegression(sigmoid="exact", **LR_KW).fit(BC_X[:SPLIT], BC_Y[:SPLIT])
    # different (hidden) batch order: same quality, not the same numbers
    assert test >= ref.score(BC_X[SPLIT:], BC_Y[SPLIT:]) - 0.03 and train >= 0.95


def prog_chunked(s, shuffle, overwrite):
    x, y = two_owners(s, BC_X[:SPLIT], BC_Y[:SPLIT])
    before = x.shares.copy(), y.shares.copy()
    model = ml.LogisticRegression(shuffle=shuffle, **LR_KW).fit(x, y, track_loss=True, overwrite=overwrite)
    kept = np.array_equal(x.shares, before[0]) and np.array_equal(y.shares, before[1])
    public = model.reveal(to=s.compute_parties[0])
    return public, model.loss_curve_.reveal(), kept


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_logistic_regression_standardises_large_tables_chunk_by_chunk(proto, monkeypatch):
    """Above ROW_BLOCK rows (here 96: chunks of 3 batches of 32) each chunk is standardised as
    it is visited, and the per-epoch losses are evaluated LOSS_ELEMS outputs at a time (here
    50: blocks of 6 rows x 8 epochs): the model and the losses of the whole-table transform,
    up to fixed-point noise; ``overwrite=False`` leaves the caller's tensors as they were."""
    name, n = proto
    whole = covault.run(lambda s: prog_chunked(s, "none", False), n, name)["p0"]
    monkeypatch.setattr(ml.linear, "ROW_BLOCK", 96)
    monkeypatch.setattr(ml.linear, "LOSS_ELEMS", 50)
    chunked = covault.run(lambda s: prog_chunked(s, "none", False), n, name)["p0"]
    np.testing.assert_allclose(chunked[0].coef_, whole[0].coef_, rtol=2e-2, atol=2e-3)  # noise
    assert chunked[0].intercept_ == pytest.approx(whole[0].intercept_, abs=2e-2)
    np.testing.assert_allclose(chunked[1], whole[1], atol=2e-3)
    assert chunked[2] and whole[2]
    for overwrite in (False, True):  # shuffled in place: in the caller's arrays only if allowed
        public, curve, kept = covault.run(lambda s: prog_chunked(s, "once", overwrite), n, name)["p0"]
        assert kept is not overwrite
        assert np.mean((BC_X[SPLIT:] @ public.coef_ + public.intercept_ > 0) == BC_Y[SPLIT:]) > 0.93
        assert curve[-1] < curve[0]


# -- linear regression ------------------------------------------------------------------------------
RG = np.random.default_rng(5)  # test data only
REG_X = RG.normal(size=(160, 4)) * np.array([1.0, 10.0, 0.05, 300.0]) + np.array([0, 5, 1, 1000])
REG_W = np.array([0.8, -0.05, 30.0, 0.004])
REG_Y = REG_X @ REG_W + 3.0 + 0.5 * RG.normal(size=160)
REG_KW = dict(epochs=30, learning_rate=0.05, batch_size=32, seed=1)


@pytest.mark.parametrize("alpha", [0.0, 0.1])
@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_linear_regression(proto, alpha):
    def prog(s):
        x, y = two_owners(s, REG_X, REG_Y)
        model = ml.LinearRegression(alpha=alpha, shuffle="none", **REG_KW).fit(x, y)
        public = model.reveal()
        return model.score(x, y), public and public.coef_, public and public.intercept_

    r2, coef, intercept = run_both(prog, proto)
    ref = ml.ReferenceLinearRegression(alpha=alpha, shuffle="none", **REG_KW).fit(enc(REG_X), enc(REG_Y))
    np.testing.assert_allclose(coef, ref.coef_, rtol=0.02, atol=1e-3)
    assert intercept == pytest.approx(ref.intercept_, abs=0.1)
    assert r2 == pytest.approx(ref.score(REG_X, REG_Y), abs=2e-3)
    a = np.c_[REG_X, np.ones(160)]
    best = 1 - np.sum((REG_Y - a @ np.linalg.lstsq(a, REG_Y, rcond=None)[0]) ** 2) / np.sum(
        (REG_Y - REG_Y.mean()) ** 2
    )
    assert r2 <= best + 1e-3 and r2 >= best - (0.002 if alpha == 0 else 0.05)


def test_linear_lr_schedule_matches_reference():
    """``lr_schedule="linear"``: epoch e of E steps with ``lr (1 - e/E)``, the same in the secure
    run and the float64 twin (which records the model after every epoch)."""
    kw = dict(REG_KW, epochs=3, learning_rate=0.05, shuffle="none", lr_schedule="linear")  # not converged

    def prog(s):
        x, y = two_owners(s, REG_X, REG_Y)
        public = ml.LinearRegression(**kw).fit(x, y).reveal()
        return public and (public.coef_, public.intercept_)

    coef, intercept = covault.run(prog, 2, "2pc")["p0"]
    ref = ml.ReferenceLinearRegression(**kw).fit(enc(REG_X), enc(REG_Y))
    constant = ml.ReferenceLinearRegression(**dict(kw, lr_schedule="constant")).fit(enc(REG_X), enc(REG_Y))
    assert abs(ref.intercept_ - constant.intercept_) > 4  # the schedule changes the path
    np.testing.assert_allclose(coef, ref.coef_, rtol=0.02, atol=1e-3)
    assert intercept == pytest.approx(ref.intercept_, abs=0.1)
    assert len(ref.coef_path_) == 3 and np.array_equal(ref.coef_path_[-1][0], ref.coef_)
    assert ml.params.epoch_learning_rate(0.05, "linear", 2, 3) == pytest.approx(0.05 / 3)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        ml.LogisticRegression(lr_schedule="cosine")


# -- MLP ------------------------------------------------------------------------------------------
DG_X, DG_Y = load_digits(return_X_y=True)
MLP_KW = dict(hidden=(16,), n_classes=10, learning_rate=0.05, epochs=5, batch_size=32, seed=2)


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_mlp_learns_digits(proto):
    def prog(s):
        x, y = two_owners(s, DG_X[:160], DG_Y[:160])
        xt = s.input(owner_value(s, DG_X[160:360]), owner=s.compute_parties[0])
        yt = s.input(owner_value(s, DG_Y[160:360]), owner=s.compute_parties[0])
        model = ml.MLPClassifier(shuffle="none", **MLP_KW).fit(x, y)
        public = model.reveal()
        shapes = public and [w.shape for w in public.coefs_]
        return (
            model.score(x, y),
            model.score(xt, yt),
            shapes,
            public and public.score(DG_X[160:360], DG_Y[160:360]),
        )

    train, test, shapes, public_test = run_both(prog, proto)
    ref = ml.ReferenceMLPClassifier(shuffle="none", **MLP_KW).fit(enc(DG_X[:160]), DG_Y[:160])
    assert test > 0.6  # chance: 0.1
    assert abs(train - ref.score(DG_X[:160], DG_Y[:160])) <= 0.03
    assert abs(test - ref.score(DG_X[160:360], DG_Y[160:360])) <= 0.03
    assert shapes == [(64, 16), (16, 10)]
    assert public_test == pytest.approx(test, abs=0.02)


def test_mlp_adam_binary():
    kw = dict(hidden=(8,), optimizer="adam", learning_rate=0.01, epochs=3, batch_size=64, seed=1)

    def prog(s):
        x, y = two_owners(s, BC_X[:SPLIT], BC_Y[:SPLIT])
        return ml.MLPClassifier(**kw).fit(x, y).score(x, y)

    acc = run_both(prog, ("rep3", 3))
    ref = ml.ReferenceMLPClassifier(**kw).fit(BC_X[:SPLIT], BC_Y[:SPLIT])
    assert acc >= ref.score(BC_X[:SPLIT], BC_Y[:SPLIT]) - 0.03 and acc > 0.9


# -- metrics ---------------------------------------------------------------------------------------
MT = np.random.default_rng(9)  # test data only
M_Y = MT.integers(0, 2, 70)
M_SCORE = np.round(M_Y * 0.8 + MT.normal(size=70), 1)  # rounded: ties across classes
M_PRED = np.where(MT.random(70) < 0.8, M_Y, 1 - M_Y)
M_REG = MT.normal(size=70) * 3 + 2
M_REG_HAT = M_REG + MT.normal(size=70) * 0.7


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_metrics_match_sklearn(proto):
    def prog(s):
        def inp(v, integer=False):
            return s.input(owner_value(s, v), owner=s.compute_parties[0], integer=integer)

        y, yi = inp(M_Y.astype(float)), inp(M_Y, integer=True)
        return (
            ml.accuracy_score(y, inp(M_PRED, integer=True)),
            ml.roc_auc_score(yi, inp(M_SCORE), block=512),
            ml.roc_auc_score(y, inp(M_SCORE)),
            ml.r2_score(inp(M_REG), inp(M_REG_HAT)),
            ml.root_mean_squared_error(inp(M_REG), inp(M_REG_HAT)),
            ml.accuracy_score(y, inp(M_PRED, integer=True), to=s.compute_parties[-1]),
        )

    name, n = proto
    res = covault.run(prog, n, name)
    acc, auc, auc2, r2, rmse, only_last = res["p0"]
    assert acc == pytest.approx(skm.accuracy_score(M_Y, M_PRED), abs=1e-12)
    assert auc == pytest.approx(skm.roc_auc_score(M_Y, enc(M_SCORE)), abs=1e-3)
    assert auc2 == pytest.approx(auc, abs=1e-4)
    assert r2 == pytest.approx(skm.r2_score(enc(M_REG), enc(M_REG_HAT)), abs=1e-3)
    assert rmse == pytest.approx(np.sqrt(skm.mean_squared_error(enc(M_REG), enc(M_REG_HAT))), rel=1e-3)
    assert only_last is None and res[f"p{n - 1}"][-1] == pytest.approx(acc)


# -- errors ----------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError):
        ml.LogisticRegression(penalty="l1")
    with pytest.raises(ValueError):
        ml.LogisticRegression(epochs=0)
    with pytest.raises(ValueError):
        ml.LogisticRegression(sigmoid="tanh")
    with pytest.raises(ValueError):
        ml.MLPClassifier(optimizer="rmsprop")
    with pytest.raises(ValueError):
        ml.LinearRegression(shuffle="sometimes")

    def prog(s):
        x = s.input(owner_value(s, BC_X[:20]), owner=s.compute_parties[0])
        y = s.input(owner_value(s, BC_Y[:20]), owner=s.compute_parties[0])
        with pytest.raises(TypeError):
            ml.LogisticRegression().fit(BC_X[:20], y)
        with pytest.raises(ShapeError):
            ml.LogisticRegression().fit(x, y[:10])
        with pytest.raises(ProtocolError):
            ml.LogisticRegression().predict(x)
        with pytest.raises(ProtocolError):
            ml.MLPClassifier().reveal()
        with pytest.raises(ShapeError):
            ml.concat_rows([x, y])
        with pytest.raises(ShapeError):
            ml.accuracy_score(y, x)
        return True

    run_both(prog, ("2pc", 2))


def prog_tcp(s):
    x, y = two_owners(s, BC_X[:96], BC_Y[:96])
    return ml.LogisticRegression(epochs=1, batch_size=32).fit(x, y).score(x, y)


@pytest.mark.processes
def test_tcp_logistic_regression():
    assert run_both(prog_tcp, ("2pc", 2), transport="tcp") > 0.8
