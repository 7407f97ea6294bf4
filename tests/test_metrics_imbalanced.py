"""Metrics for imbalanced classes against scikit-learn on the same (encoded) values: precision,
recall, F1 (secret 0/1 predictions, thresholds), average precision and the sorted ROC AUC
(oblivious sort, any size), with 10% positives, ties, all-negative predictions and one-class
labels, under every protocol (in-process transport; one case over TCP); class_weight for
logistic regression, secure against its plaintext twin and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import covault
from covault import ml
from covault.ml import ranking
from tests.helpers import IDS, PROTOCOLS, VARIANTS, owner_value, run_both

RNG = np.random.default_rng(21)  # test data only
N = 240
Y = (RNG.random(N) < 0.1).astype(np.float64)  # 10% positives
Y[:3] = 1.0
NOISY = RNG.normal(size=N) + 1.2 * Y
SCORE = np.argsort(np.argsort(NOISY)) / N * 6 - 3  # distinct after encoding
TIED = np.round(NOISY * 2) / 2  # many ties, across the classes
PRED = (NOISY > 0.9).astype(np.float64)
EXACT = 1e-6


def enc(a):
    return np.round(np.asarray(a, dtype=float) * 2**16) / 2**16


def _inp(s, v, integer=False):
    return s.input(owner_value(s, v), owner=s.compute_parties[0], integer=integer)


def ap_bounds(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """AP with every tie group's positives last, and first (descending scores)."""
    out = []
    for first in (False, True):
        order = np.lexsort((-y if first else y, -s))  # by descending score, then label
        ys = y[order]
        tp = np.cumsum(ys)
        out.append(float(np.sum(ys * tp / np.arange(1, len(y) + 1)) / ys.sum()))
    return out[0], out[1]


def prog_all(s):
    y, yi = _inp(s, Y), _inp(s, Y, integer=True)
    pred = _inp(s, PRED, integer=True)
    score, tied = _inp(s, SCORE), _inp(s, TIED)
    last = s.compute_parties[-1]
    return (
        ml.precision_score(y, pred),
        ml.recall_score(yi, pred),
        ml.f1_score(y, pred),
        ml.average_precision_score(y, score),
        ml.roc_auc_score(yi, score),
        ml.roc_auc_score(y, tied),
        ml.roc_auc_score(y, tied, method="pairs"),
        ml.average_precision_score(yi, tied),
        ml.precision_score(y, ml.predict_at_threshold(score, 1.5), to=last),
    )


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_metrics_match_sklearn(proto):
    name, n = proto
    res = covault.run(prog_all, n, name)
    prec, rec, f1, ap, auc, auc_tied, auc_pairs, ap_tied, prec_last = res["p0"]
    assert prec == pytest.approx(skm.precision_score(Y, PRED), abs=EXACT)
    assert rec == pytest.approx(skm.recall_score(Y, PRED), abs=EXACT)
    assert f1 == pytest.approx(skm.f1_score(Y, PRED), abs=EXACT)
    assert ap == pytest.approx(skm.average_precision_score(Y, enc(SCORE)), abs=EXACT)
    assert auc == pytest.approx(skm.roc_auc_score(Y, enc(SCORE)), abs=EXACT)
    # ties count one half in the sorted AUC exactly as in scikit-learn and the pairwise AUC
    assert auc_tied == pytest.approx(skm.roc_auc_score(Y, TIED), abs=EXACT)
    assert auc_pairs == pytest.approx(auc_tied, abs=1e-4)
    # AP under ties: tied rows in a random order, between positives-last and positives-first
    lo, hi = ap_bounds(Y, TIED)
    assert lo - EXACT <= ap_tied <= hi + EXACT and lo < hi
    assert lo <= skm.average_precision_score(Y, TIED) <= hi
    # a probability-free threshold on scores, revealed to the last compute party only
    assert prec_last is None
    want = skm.precision_score(Y, (enc(SCORE) >= 1.5).astype(int))
    assert res[f"p{n - 1}"][-1] == pytest.approx(want, abs=EXACT)


def prog_tcp(s):
    y, score = _inp(s, Y), _inp(s, SCORE)
    return ml.roc_auc_score(y, score), ml.average_precision_score(y, score)


def test_ranking_metrics_over_tcp():
    name, n = PROTOCOLS[0]
    res = covault.run(prog_tcp, n, name, transport="tcp", timeout=60)
    auc, ap = res["p0"]
    assert auc == pytest.approx(skm.roc_auc_score(Y, enc(SCORE)), abs=EXACT)
    assert ap == pytest.approx(skm.average_precision_score(Y, enc(SCORE)), abs=EXACT)


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_undefined_metrics_are_zero_or_nan_with_a_warning(proto):
    none = np.zeros(N)

    def prog(s):
        y, zero, score = _inp(s, Y), _inp(s, none, integer=True), _inp(s, SCORE)
        return (
            ml.precision_score(y, zero),  # nothing predicted positive
            ml.f1_score(zero, zero),  # no positive label nor prediction
            ml.recall_score(zero, _inp(s, PRED, integer=True)),  # no positive label
            ml.average_precision_score(zero, score),
            ml.roc_auc_score(zero, score),
        )

    name, n = proto
    with pytest.warns(ml.UndefinedMetricWarning) as caught:
        res = covault.run(prog, n, name)
    prec, f1, rec, ap, auc = res["p0"]
    np.testing.assert_equal(res[f"p{n - 1}"], res["p0"])  # NaN equals NaN here
    assert (prec, f1, rec, ap) == (0.0, 0.0, 0.0, 0.0) and np.isnan(auc)
    assert skm.precision_score(Y, none, zero_division=0) == 0.0
    assert {"precision", "F1", "recall", "average precision", "ROC AUC"} <= {
        str(w.message).split(" is ")[0] for w in caught
    }


def test_sort_orders_rows_and_keeps_blocks(proto=PROTOCOLS[-1]):
    keys = np.concatenate([TIED[:100], SCORE[:60]])

    def prog(s):
        k = _inp(s, keys)
        order = ranking.sort_order(ranking.shuffled(k)[0], cuts=[100])
        return order, ranking.sort_together(k)[0].reveal()

    order, ordered = run_both(prog, proto)
    assert sorted(order[:100]) == list(range(100)) and sorted(order[100:]) == list(range(100, 160))
    np.testing.assert_array_equal(ordered, np.sort(enc(keys)))


def test_threshold_prediction_matches_the_twin():
    x = RNG.normal(size=(80, 3))
    y = (x @ np.array([1.0, -1.0, 0.5]) + RNG.normal(size=80) > 1.0).astype(float)
    kw = {"epochs": 2, "batch_size": 16, "shuffle": "none"}
    ref = ml.ReferenceLogisticRegression(**kw).fit(x, y)

    def prog(s):
        model = ml.LogisticRegression(**kw).fit(_inp(s, x), _inp(s, y))
        xs = _inp(s, x)
        return model.predict(xs, threshold=0.3).reveal(), model.predict(xs).reveal()

    at_03, default = run_both(prog, PROTOCOLS[0])
    proba = ref.predict_proba(x)[:, 1]
    assert np.sum(at_03 != (proba >= 0.3)) <= 1 and np.sum(default != ref.predict(x)) <= 1
    assert at_03.sum() >= default.sum()
    with pytest.raises(ValueError, match="threshold"):
        ref.predict(x, threshold=1.0)


FRAUD = np.random.default_rng(4)  # test data only
FX = FRAUD.normal(size=(400, 4))
FY = (FX @ np.array([1.0, -1.0, 0.5, 0.0]) - 2.2 + FRAUD.normal(size=400) > 0).astype(np.float64)


def minority_recall(pred) -> float:
    return float(np.mean(np.asarray(pred)[FY == 1] == 1))


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_balanced_class_weight_raises_minority_recall(proto):
    kw = {"epochs": 3, "batch_size": 32, "learning_rate": 0.1, "shuffle": "none"}
    assert 0.05 < FY.mean() < 0.15

    def prog(s):
        x, y = _inp(s, FX), _inp(s, FY)
        out = []
        for cw in (None, "balanced"):
            model = ml.LogisticRegression(class_weight=cw, **kw).fit(x, y)
            out.append(model.predict(x).reveal())
        return tuple(out)

    plain, balanced = run_both(prog, proto)
    ref = {cw: ml.ReferenceLogisticRegression(class_weight=cw, **kw).fit(FX, FY) for cw in (None, "balanced")}
    sk = {cw: SkLogisticRegression(class_weight=cw).fit(FX, FY) for cw in (None, "balanced")}
    for preds in ((plain, balanced), (ref[None].predict(FX), ref["balanced"].predict(FX))):
        assert minority_recall(preds[1]) > minority_recall(preds[0]) + 0.2
    assert minority_recall(sk["balanced"].predict(FX)) > minority_recall(sk[None].predict(FX))
    # the secure model follows its twin (same batches: shuffle="none")
    assert np.sum(balanced != ref["balanced"].predict(FX)) <= 4
    assert np.sum(plain != ref[None].predict(FX)) <= 4


def test_class_weight_parameter():
    assert ml.LogisticRegression(class_weight="balanced").get_params()["class_weight"] == "balanced"
    dict_weights = ml.ReferenceLogisticRegression(class_weight={0: 1.0, 1: 9.0}, epochs=3).fit(FX, FY)
    plain = ml.ReferenceLogisticRegression(epochs=3).fit(FX, FY)
    assert minority_recall(dict_weights.predict(FX)) > minority_recall(plain.predict(FX))
    for bad in ("auto", {2: 1.0}, {1: -1.0}):
        with pytest.raises(ValueError, match="class_weight"):
            ml.LogisticRegression(class_weight=bad)
    with pytest.raises(ValueError, match="both classes"):
        ml.ReferenceLogisticRegression(class_weight="balanced").fit(FX, np.zeros(len(FX)))


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_a_data_party_outside_the_computation_receives_the_metrics(proto):
    def prog(s):
        y = s.input(Y if s.party == "owner" else None, owner="owner")
        score = s.input(SCORE if s.party == "owner" else None, owner="owner")
        pred = ml.predict_at_threshold(score, 1.0)
        first = s.compute_parties[0]
        return (
            ml.roc_auc_score(y, score, to="owner"),
            ml.average_precision_score(y, score, to=["owner", first]),
            ml.f1_score(y, pred, to="owner"),
        )

    name, n = proto
    res = covault.run(prog, n, name, data_parties=["owner"])
    auc, ap, f1 = res["owner"]
    assert auc == pytest.approx(skm.roc_auc_score(Y, enc(SCORE)), abs=EXACT)
    assert ap == pytest.approx(skm.average_precision_score(Y, enc(SCORE)), abs=EXACT)
    assert f1 == pytest.approx(skm.f1_score(Y, enc(SCORE) >= 1.0), abs=EXACT)
    assert res["p0"] == (None, ap, None) and res[f"p{n - 1}"][0] is None
