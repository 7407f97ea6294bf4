"""Machine learning on secret-shared data with a scikit-learn-like API.

Estimators take :class:`~covault.tensor.SecretTensor` features ``X`` (rows of every data owner,
see :func:`concat_rows`; columns of owners of the same rows: :func:`concat_cols`) and targets ``y``; they train inside MPC, keep the model secret and
predict secretly. ``reveal(to=...)`` opens the coefficients to named parties only and returns
a plaintext copy there. Metrics open a single number to named parties. ``Reference*`` classes
run the same algorithms in float64 numpy for comparison. Every estimator follows scikit-learn's
contract (:mod:`covault.ml.base`: parameters from ``__init__``, ``get_params`` / ``set_params``,
:func:`clone`); :data:`ESTIMATORS` lists them all. Details: ``docs/ml.md``.
"""

from covault.ml.base import Estimator, NotFittedError, ParameterError, clone, is_classifier
from covault.ml.linear import LinearRegression, LogisticRegression
from covault.ml.metrics import (
    UndefinedMetricWarning,
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    predict_at_threshold,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)
from covault.ml.mlp import MLPClassifier, one_hot
from covault.ml.preprocessing import StandardScaler, concat_cols, concat_rows
from covault.ml.reference import (
    ReferenceLinearRegression,
    ReferenceLogisticRegression,
    ReferenceMLPClassifier,
)
from covault.ops.shuffle import shuffle_rows, shuffle_together

# Every estimator class: the secure ones (their plaintext twin in ``_reference``), then the twins.
ESTIMATORS: tuple[type[Estimator], ...] = (
    LogisticRegression,
    LinearRegression,
    MLPClassifier,
    ReferenceLogisticRegression,
    ReferenceLinearRegression,
    ReferenceMLPClassifier,
)

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "LinearRegression",
    "LogisticRegression",
    "MLPClassifier",
    "NotFittedError",
    "ParameterError",
    "ReferenceLinearRegression",
    "ReferenceLogisticRegression",
    "ReferenceMLPClassifier",
    "StandardScaler",
    "UndefinedMetricWarning",
    "accuracy_score",
    "average_precision_score",
    "clone",
    "concat_cols",
    "concat_rows",
    "f1_score",
    "is_classifier",
    "one_hot",
    "precision_score",
    "predict_at_threshold",
    "r2_score",
    "recall_score",
    "roc_auc_score",
    "root_mean_squared_error",
    "shuffle_rows",
    "shuffle_together",
]
