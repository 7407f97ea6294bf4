"""Machine learning on secret-shared data with a scikit-learn-like API.

Estimators take :class:`~covault.tensor.SecretTensor` features ``X`` (rows of every data owner,
see :func:`concat_rows`; columns of owners of the same rows: :func:`concat_cols`) and targets ``y``; they train inside MPC, keep the model secret and
predict secretly. ``reveal(to=...)`` opens the coefficients to named parties only and returns
a plaintext copy there. Metrics open a single number to named parties. ``Reference*`` classes
run the same algorithms in float64 numpy for comparison. Details: ``docs/ml.md``.
"""

from covault.ml.linear import (
    LinearRegression,
    LogisticRegression,
    ReferenceLinearRegression,
    ReferenceLogisticRegression,
)
from covault.ml.metrics import (
    accuracy_score,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from covault.ml.mlp import MLPClassifier, ReferenceMLPClassifier, one_hot
from covault.ml.preprocessing import StandardScaler, concat_cols, concat_rows
from covault.protocols.shuffle import shuffle_rows, shuffle_together

__all__ = [
    "LinearRegression",
    "LogisticRegression",
    "MLPClassifier",
    "ReferenceLinearRegression",
    "ReferenceLogisticRegression",
    "ReferenceMLPClassifier",
    "StandardScaler",
    "accuracy_score",
    "concat_cols",
    "concat_rows",
    "one_hot",
    "r2_score",
    "roc_auc_score",
    "root_mean_squared_error",
    "shuffle_rows",
    "shuffle_together",
]
