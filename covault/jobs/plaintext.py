"""Centralised plaintext baseline of a job: what pooling every party's rows in one place gives.

Only for local runs, where every data file is on this host. Rows are loaded, checked against
each owner's policy and split exactly as the parties do (:mod:`covault.jobs.owner`), the job's
transforms are fitted on the pooled rows as the secure statistics fit them
(:func:`covault.jobs.owner.plain_preprocessing`) and applied, the rows are pooled in job order, and the task's float64
reference trainer (``covault.ml.Reference*``, identical algorithm and hyper-parameters) is
trained on them; scikit-learn's counterpart is added when it is installed. Differences to the
secure run come from fixed-point arithmetic, the piecewise sigmoid of training (also used by
the reference) and the oblivious shuffle (the secure run visits the rows in another order).

The loss curve is the mean training loss after each epoch with the same definition as the
secure one (cross-entropy; regression: mean squared error of the standardised target), from
the linear reference's model after each epoch (the MLP's: refitting it for ``1 .. epochs``
epochs).
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import numpy as np

from covault.jobs.owner import plain_preprocessing, prepare_owner


def pooled_rows(job) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` of every data party, pooled in job order (vertical
    jobs: the columns of the common rows joined in job order, rows aligned as the secure run
    aligns them, :func:`covault.jobs.align.plaintext_alignment`)."""
    if job.partition == "vertical":
        return _joined_rows(job)
    parts = [prepare_owner(job, p) for p in job.data_parties]
    features = list(job.features) if job.features is not None else []
    if job.features is None:
        for r in parts:
            features += [c for c in r.features if c not in features]
    kinds: dict[str, str] = {}
    for f in features:
        got = {r.kinds.get(f) for r in parts}
        kinds[f] = "text" if "text" in got else "number" if "number" in got else "bool"
    pre = plain_preprocessing(parts, [(f, kinds[f]) for f in features], job.transforms)
    xs = [pre.apply(r.table) for r in parts]
    return (
        np.concatenate([x[: r.n_train] for x, r in zip(xs, parts)]),
        np.concatenate([r.y[: r.n_train] for r in parts]),
        np.concatenate([x[r.n_train :] for x, r in zip(xs, parts)]),
        np.concatenate([r.y[r.n_train :] for r in parts]),
    )


def raw_held_out(job):
    """Every data party's held-out rows as read (before the transforms), pooled in job order:
    a :class:`~covault.ingest.table.Table` of the feature columns, the input of an exported
    model with preprocessing (horizontal jobs)."""
    from covault.jobs.owner import concat

    parts = [prepare_owner(job, p) for p in job.data_parties]
    tables = [r.table.take(np.arange(r.n_train, r.table.n_rows)) for r in parts]
    out = tables[0]
    for t in tables[1:]:
        out = concat(out, t.select(out.names))
    return out


def _joined_rows(job) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from covault.jobs.align import plaintext_alignment
    from covault.jobs.data import load_vertical_rows

    parts = {p: load_vertical_rows(job, p) for p in job.data_parties}
    where = plaintext_alignment(job, {p: r.tagged_ids() for p, r in parts.items()})
    out = []
    for k in (0, 1):
        xs, y = [], None
        for p, r in parts.items():
            block = r.rows(where[p][k])
            if r.has_label:
                li = r.columns.index(job.label)
                y = block[:, li]
                block = np.delete(block, li, axis=1)
            xs.append(block)
        out += [np.concatenate(xs, axis=1), y]
    return out[0], out[1], out[2], out[3]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted one half (as :func:`covault.ml.roc_auc_score`)."""
    y = np.asarray(y).reshape(-1) > 0.5
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    pos, neg = score[y], score[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def metrics(job, model, x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """The job's metrics for a plaintext model with ``decision_function`` / ``predict``."""
    if job.kind == "regression":
        pred = np.asarray(model.predict(x)).reshape(-1)
        err = y - pred
        return {
            "r2": float(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2)),
            "rmse": float(np.sqrt(np.mean(err**2))),
        }
    if job.n_classes != 2:
        pred = np.asarray(model.predict(x)).reshape(-1)
        return {"accuracy": float(np.mean(pred == y))}
    if hasattr(model, "predict_proba"):
        score = np.asarray(model.predict_proba(x))[:, 1]
    else:
        score = 1 / (1 + np.exp(-np.asarray(model.decision_function(x), dtype=np.float64)))
    if job.threshold == 0.5:
        pred = np.asarray(model.predict(x)).reshape(-1)
    else:
        pred = (score >= job.threshold).astype(np.float64)
    return {"accuracy": float(np.mean(pred == y)), **binary_metrics(y, pred, score)}


def binary_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """``auc``, ``pr_auc`` (average precision, scikit-learn's definition), ``precision``,
    ``recall`` and ``f1`` (0 where undefined, as scikit-learn) of 0/1 predictions and scores."""
    y = np.asarray(y).reshape(-1) > 0.5
    pred = np.asarray(pred).reshape(-1) > 0.5
    tp, fp, fn = int(np.sum(pred & y)), int(np.sum(pred & ~y)), int(np.sum(~pred & y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {
        "auc": roc_auc(y, score),
        "pr_auc": average_precision(y, score),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, from the highest."""
    y = np.asarray(y).reshape(-1) > 0.5
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    if not y.any():
        return 0.0
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each group of equal scores
    tps = np.cumsum(t)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def training_loss(job, model, x: np.ndarray, y: np.ndarray) -> float:
    """Mean training loss as the secure run defines it (no penalty term)."""
    if job.task == "logistic_regression":
        z = model.decision_function(x)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))
    if job.task == "linear_regression":
        return float(np.mean((model.predict(x) - y) ** 2) / y.var())
    z = model.decision_function(x)
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y.astype(np.int64)]))


def centralised(job) -> dict[str, Any]:
    """Train the job's model on the pooled plaintext rows: ``metrics``, ``loss_curve``,
    ``seconds`` and ``sklearn`` (None without scikit-learn)."""
    x_tr, y_tr, x_te, y_te = pooled_rows(job)
    with np.errstate(all="ignore"):  # a diverging run overflows; its losses become inf / NaN
        t0 = time.perf_counter()
        ref = job.reference().fit(x_tr, y_tr)
        seconds = time.perf_counter() - t0
        curve = [training_loss(job, m, x_tr, y_tr) for m in _epoch_models(job, ref, x_tr, y_tr)]
        plain_metrics = metrics(job, ref, x_te, y_te)
    return {
        "metrics": plain_metrics,
        "loss_curve": curve,
        "seconds": seconds,
        "train_rows": len(y_tr),
        "test_rows": len(y_te),
        "sklearn": sklearn_baseline(job, x_tr, y_tr, x_te, y_te),
    }


def _epoch_models(job, ref, x_tr: np.ndarray, y_tr: np.ndarray) -> list:
    """The reference model after each epoch: the linear models' recorded path (``coef_path_``,
    whatever the learning-rate schedule), the MLP's refits for ``1 .. epochs`` epochs."""
    path = getattr(ref, "coef_path_", None)
    if path is None:
        epochs = int(job.model["epochs"])
        return [job.reference(epochs=e).fit(x_tr, y_tr) for e in range(1, epochs)] + [ref]
    out = []
    for coef, intercept in path:
        m = copy.copy(ref)
        m.coef_, m.intercept_ = coef, intercept
        out.append(m)
    return out


def sklearn_baseline(job, x_tr, y_tr, x_te, y_te) -> dict[str, Any] | None:
    """scikit-learn's model for the task (standardised features) on the same rows; where it
    fails (a diverging learning rate), ``metrics`` is empty and ``error`` says why."""
    try:
        from sklearn import linear_model, neural_network
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return None
    p = job.model
    n = len(y_tr)
    if job.task == "logistic_regression":
        if p.get("penalty", "l2") is None:
            c = np.inf  # no penalty
        else:
            c = 1.0 / (p["alpha"] * n) if p.get("alpha") else p.get("C", 1.0)
        est = linear_model.LogisticRegression(C=c, max_iter=5000, class_weight=p.get("class_weight"))
        name = "LogisticRegression(lbfgs)"
    elif job.task == "linear_regression":
        alpha = p.get("alpha", 0.0)
        est = linear_model.Ridge(alpha=alpha * n) if alpha else linear_model.LinearRegression()
        name = type(est).__name__
    else:
        est = neural_network.MLPClassifier(
            hidden_layer_sizes=tuple(p["hidden"]),
            solver="adam" if p.get("optimizer") == "adam" else "sgd",
            learning_rate_init=p["learning_rate"],
            momentum=p.get("momentum", 0.9),
            alpha=p.get("alpha", 0.0),
            batch_size=min(p["batch_size"], n),
            max_iter=p["epochs"],
            random_state=job.seed,
        )
        name = f"MLPClassifier({tuple(p['hidden'])})"
    pipe = make_pipeline(StandardScaler(), est)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            pipe.fit(x_tr, y_tr)
        except (ValueError, FloatingPointError) as exc:
            return {"model": name, "metrics": {}, "seconds": None, "error": str(exc)}
        seconds = time.perf_counter() - t0
        return {"model": name, "metrics": metrics(job, pipe, x_te, y_te), "seconds": seconds}
