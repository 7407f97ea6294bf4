"""Hyper-parameters of the estimators, declared once for each secure estimator and its plaintext twin.

Each class lists its parameters as keyword arguments of ``__init__`` (the contract of
:mod:`covault.ml.base`), stores them unchanged and checks them in ``_validate_params`` without
converting them; training converts where a type matters (``int(seed)``, ``float(alpha)``), so
the results are those of the converted values.
"""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np

from covault.ml import batching
from covault.ml.base import Estimator
from covault.nn import glorot_uniform
from covault.nn.layers import SIGMOIDS

SHUFFLES = ("once", "epoch", "none")
CLASS_WEIGHTS = ("balanced", None)
PENALTIES = ("l2", None)
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "linear")
MAX_LEARNING_RATE = 10.0  # a larger step overflows the fixed-point update bound (SGD 16, Adam 64)


def check_learning_rate(learning_rate: float) -> None:
    """ValueError unless ``0 < learning_rate <= MAX_LEARNING_RATE``."""
    if not learning_rate <= MAX_LEARNING_RATE:
        raise ValueError(
            f"learning_rate must be at most {MAX_LEARNING_RATE:g} (with standardised features a "
            f"larger step overflows the fixed-point weight update; usual values are 0.001 to 1), "
            f"got {learning_rate!r}"
        )


def check_class_weight(class_weight: object) -> None:
    """ValueError unless ``class_weight`` is None, ``"balanced"`` (scikit-learn's
    ``n / (2 n_c)``) or a dict of positive weights for the labels 0 and 1."""
    if isinstance(class_weight, dict):
        bad = [k for k in class_weight if k not in (0, 1)]
        if bad or not all(isinstance(v, numbers.Real) and v > 0 for v in class_weight.values()):
            raise ValueError(
                f"class_weight must map the labels 0 and 1 to positive weights, got {class_weight!r}"
            )
    elif class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS} or a dict, got {class_weight!r}")


def epoch_learning_rate(learning_rate: float, schedule: str, epoch: int, epochs: int) -> float:
    """The public learning rate of epoch ``epoch`` (0-based) of ``epochs``: ``learning_rate``
    (``"constant"``) or ``learning_rate * (1 - epoch / epochs)`` (``"linear"``: decays to
    ``learning_rate / epochs`` in the last epoch)."""
    lr = float(learning_rate)
    return lr * (1.0 - epoch / int(epochs)) if schedule == "linear" else lr


def _check_schedule(p: Estimator) -> None:
    """The schedule every estimator has: ``epochs``, ``batch_size``, ``learning_rate``."""
    batching.check_hyper(p.epochs, p.batch_size, p.learning_rate)
    check_learning_rate(p.learning_rate)


def _check_convertible(*checks: tuple[type, object]) -> None:
    """``convert(value)`` for each ``(convert, value)``: values that training converts fail now
    (ValueError or TypeError) rather than in ``fit``."""
    for convert, value in checks:
        convert(value)


class LinearParams(Estimator):
    """Hyper-parameters of the linear models (:class:`~covault.ml.LinearRegression` and twin)."""

    _estimator_type = "regressor"

    def __init__(
        self,
        *,
        alpha: float = 0.0,
        epochs: int = 10,
        learning_rate: float = 0.05,
        batch_size: int = 128,
        momentum: float = 0.0,
        standardize: bool = True,
        shuffle: str = "once",
        seed: int = 0,
        lr_schedule: str = "constant",
    ):
        self._store_params(locals())

    def _validate_params(self) -> None:
        _check_schedule(self)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        if self.shuffle not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {SHUFFLES}, got {self.shuffle!r}")
        _check_convertible((float, self.alpha), (float, self.momentum), (int, self.seed))

    def _penalty(self, n: int) -> float:
        return float(self.alpha)

    def _epoch_lr(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based) under ``lr_schedule``."""
        return epoch_learning_rate(self.learning_rate, self.lr_schedule, epoch, self.epochs)

    def _trivial_loss(self) -> float | None:
        """Training loss of the zero model (the mean): 1 on the standardised target; unknown
        (None) without standardisation."""
        return 1.0 if self.standardize else None


class LogisticParams(LinearParams):
    """Hyper-parameters of :class:`~covault.ml.LogisticRegression` and its twin."""

    _estimator_type = "classifier"

    def __init__(
        self,
        *,
        penalty: str | None = "l2",
        C: float = 1.0,
        alpha: float = 0.0,
        epochs: int = 10,
        learning_rate: float = 0.1,
        batch_size: int = 128,
        momentum: float = 0.0,
        standardize: bool = True,
        sigmoid: str = "piecewise",
        shuffle: str = "once",
        seed: int = 0,
        class_weight: str | dict | None = None,
        lr_schedule: str = "constant",
    ):
        self._store_params(locals())

    def _validate_params(self) -> None:
        super()._validate_params()
        check_class_weight(self.class_weight)
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.sigmoid not in SIGMOIDS:
            raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {self.sigmoid!r}")
        if self.C is not None and not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C!r}")

    def _penalty(self, n: int) -> float:
        """L2 strength on the mean loss: ``alpha`` if given, else ``1 / (C n)`` (scikit-learn's
        objective ``C sum(loss) + |w|^2 / 2`` divided by ``C n``)."""
        if self.penalty is None:
            return 0.0
        alpha = float(self.alpha)
        return alpha if alpha else 1.0 / (self.C * n)

    def _trivial_loss(self) -> float | None:
        """Cross-entropy of the zero model (probability 1/2 everywhere): ln 2 (also the
        weighted mean loss with ``class_weight="balanced"``, whose weights average 1)."""
        return math.log(2.0)

    def _class_weights(self, n: int, positives: float) -> tuple[float, float] | None:
        """Plaintext weights ``(w_0, w_1)`` of the labels 0 and 1 for ``n`` rows with
        ``positives`` ones (None without ``class_weight``)."""
        cw = self.class_weight
        if cw is None:
            return None
        if cw == "balanced":
            if not 0 < positives < n:
                raise ValueError("class_weight='balanced' needs both classes in the training labels")
            return n / (2.0 * (n - positives)), n / (2.0 * positives)
        return float(cw.get(0, 1.0)), float(cw.get(1, 1.0))


class MLPParams(Estimator):
    """Hyper-parameters of :class:`~covault.ml.MLPClassifier` and its twin."""

    _estimator_type = "classifier"

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (64,),
        n_classes: int = 2,
        optimizer: str = "sgd",
        learning_rate: float = 0.1,
        momentum: float = 0.9,
        alpha: float = 0.0,
        epochs: int = 10,
        batch_size: int = 128,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        standardize: bool = True,
        shuffle: str = "once",
        seed: int = 0,
    ):
        self._store_params(locals())

    def _validate_params(self) -> None:
        _check_schedule(self)
        hidden = self._hidden()
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden layer sizes must be positive, got {hidden!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {self.n_classes!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.shuffle not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {SHUFFLES}, got {self.shuffle!r}")
        if self.alpha < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need alpha >= 0 and 0 <= momentum < 1, got {self.alpha!r}, {self.momentum!r}")
        _check_convertible(
            (int, self.n_classes), (float, self.alpha), (float, self.momentum), (tuple, self.betas),
            (float, self.eps), (int, self.seed),
        )  # fmt: skip

    def _epoch_lr(self, epoch: int) -> float:
        """The learning rate of every epoch (the MLP has no schedule)."""
        return float(self.learning_rate)

    def _hidden(self) -> tuple[int, ...]:
        return tuple(int(h) for h in self.hidden)

    def _trivial_loss(self) -> float:
        """Cross-entropy of uniform class probabilities: ln(n_classes)."""
        return math.log(int(self.n_classes))

    def _sizes(self, d: int) -> list[int]:
        return [d, *self._hidden(), int(self.n_classes)]

    def _init_weights(self, d: int) -> list[np.ndarray]:
        sizes = self._sizes(d)
        return [
            glorot_uniform(a, b, int(self.seed), f"mlp/{i}")
            for i, (a, b) in enumerate(itertools.pairwise(sizes))
        ]
