"""The revealed model as JSON-ready data, and back to a plaintext model for prediction.

Linear models: ``{"coef": [...], "intercept": b}`` (raw features, scikit-learn layout).
MLP: ``{"coefs": [W1, W2, ...], "intercepts": [b1, b2, ...]}`` with ``W`` of shape
``(inputs, outputs)`` (scikit-learn's ``coefs_``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def model_to_dict(public) -> dict[str, Any]:
    """JSON-ready weights of a plaintext model (a ``covault.ml.Reference*`` instance)."""
    if hasattr(public, "coefs_"):
        return {
            "coefs": [np.asarray(w, dtype=np.float64).tolist() for w in public.coefs_],
            "intercepts": [np.asarray(b, dtype=np.float64).tolist() for b in public.intercepts_],
        }
    return {
        "coef": np.asarray(public.coef_, dtype=np.float64).tolist(),
        "intercept": float(public.intercept_),
    }


def model_from_dict(job, weights: dict[str, Any]):
    """A plaintext model of the job's task (``Reference*`` type) holding ``weights``."""
    public = job.reference()
    if job.task == "mlp":
        public.coefs_ = [np.asarray(w, dtype=np.float64) for w in weights["coefs"]]
        public.intercepts_ = [np.asarray(b, dtype=np.float64) for b in weights["intercepts"]]
    else:
        public.coef_ = np.asarray(weights["coef"], dtype=np.float64)
        public.intercept_ = float(weights["intercept"])
    return public


def predict_scores(job, public, x: np.ndarray) -> np.ndarray:
    """What the exported ONNX model outputs: P(class 1) (logistic regression), the prediction
    (linear regression) or class probabilities (MLP)."""
    if job.task == "logistic_regression":
        return public.predict_proba(x)[:, 1]
    if job.task == "linear_regression":
        return public.predict(x)
    return public.predict_proba(x)
