"""Multi-layer perceptron classifier on secret-shared data.

``Linear -> ReLU -> ... -> Linear`` with a softmax cross-entropy loss (two classes: one sigmoid
of the logit difference), trained by mini-batch SGD (momentum) or Adam with the same data
pipeline as the linear models (secure standardisation folded into the first layer afterwards,
oblivious shuffle, public epoch orders). One training step of 30 -> 64 -> 2 on a batch of 128
(rounds, 2pc): first matmul 2, ReLU 8, second matmul 2, loss gradient 16 (its comparison, on
256 values, takes the radix-4 carry tree of :mod:`covault.ops.compare`; a ReLU of at most
1,024 values would too: 4), input gradient of the second layer 2, ReLU backward 1, weight
gradients (formed inside the SGD truncation) 2, SGD 1: 34 in all; rep3: 35 for P1 and P2, the
weight gradients costing no round (Adam: about 50 more). Above 512 rows per batch the loss
gradient takes 20 rounds (38 and 39 in all).

:class:`~covault.ml.reference.ReferenceMLPClassifier` runs the same algorithm in float64
numpy (same Glorot initialisation from the public seed, same batches, same update formulas)
and is the type of the public copy returned by :meth:`MLPClassifier.reveal`. Hyper-parameters:
:mod:`covault.ml.params`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np

from covault.errors import ResourceError
from covault.ml.base import check_fitted
from covault.ml.linear import _check_xy, fitted_input, train_epochs
from covault.ml.params import MLPParams
from covault.ml.preprocessing import StandardScaler
from covault.ml.reference import ReferenceMLPClassifier
from covault.nn import Linear, ReLU, Sequential, SoftmaxCrossEntropyLoss
from covault.nn.layers import softmax
from covault.ops import compare
from covault.ops.shuffle import shuffle_together
from covault.optim import SGD, Adam
from covault.tensor import SecretTensor

if TYPE_CHECKING:
    from covault.privacy.dpsgd import DPSGD

# Peak memory of one party (a compute party or the 2pc dealer) training an MLP, in bytes: per
# hidden unit of every row evaluated at once (the comparisons of a ReLU keep about 15 words
# per share component), per weight (value, gradient, velocity and the update's temporaries;
# Adam keeps its moments of all weights at once) and per input cell. Measured with rep3 and
# 2pc (10 to 2000 features, hidden layers of 500 to 8000 units, 200 to 800 rows at once:
# 234 / 163 / 550 bytes in rep3, 2pc 70-85% of that), with a margin of about 20%.
ACTIVATION_BYTES = 288
WEIGHT_BYTES = {"sgd": 192, "adam": 640}
INPUT_BYTES = 64


def memory_estimate(
    n_features: int,
    hidden: Sequence[int],
    n_classes: int,
    rows: int,
    rows_at_once: int,
    optimizer: str = "sgd",
) -> int:
    """Estimated peak bytes one party needs to train an MLP with ``n_features`` inputs, the
    ``hidden`` layer sizes and ``n_classes`` outputs on ``rows`` rows, of which at most
    ``rows_at_once`` pass through the network at once (a batch; all rows when the loss is
    tracked or the model evaluated). Both protocols; see the constants above."""
    widths = [int(n_features), *(int(h) for h in hidden), int(n_classes)]
    weights = sum((a + 1) * b for a, b in itertools.pairwise(widths))
    return (
        WEIGHT_BYTES[optimizer] * weights
        + ACTIVATION_BYTES * int(rows_at_once) * max(widths[1:])
        + INPUT_BYTES * int(rows) * widths[0]
    )


def describe_network(n_features: int, hidden: Sequence[int], rows_at_once: int) -> str:
    """``hidden layer of 1000 units, 4 features, 105 rows at once``: what an estimate grows with."""
    sizes = ", ".join(str(int(h)) for h in hidden)
    layers = f"hidden layer{'s' if len(hidden) > 1 else ''} of {sizes} units" if hidden else "no hidden layer"
    return f"{layers}, {n_features} features, {rows_at_once} rows at once"


def format_bytes(n: float) -> str:
    """``180 GB``, ``2.5 GB``, ``640 MB`` (decimal units)."""
    if n >= 10e9:
        return f"{n / 1e9:.0f} GB"
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB"


MEMINFO = "/proc/meminfo"
CGROUP_MEMORY = (  # (folder, limit file, usage file, reclaimable cache in memory.stat): v2, v1
    ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
    ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
)


def available_memory() -> int | None:
    """Bytes this host can still give a process: ``MemAvailable`` of ``/proc/meminfo`` (else
    the free pages of ``os.sysconf``), capped by the room under a cgroup memory limit; None
    where neither is known."""
    free = None
    try:
        with open(MEMINFO) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            pass
    room = _cgroup_room()
    if room is not None:
        free = room if free is None else min(free, room)
    return free


def _cgroup_room() -> int | None:
    """Bytes left under the cgroup memory limit (v2, else v1; reclaimable file cache counts as
    free); None without a limit."""
    for base, limit_name, usage_name, inactive in CGROUP_MEMORY:
        try:
            limit_text = Path(base, limit_name).read_text().strip()
            usage = int(Path(base, usage_name).read_text())
        except (OSError, ValueError):
            continue
        if not limit_text.isdigit() or int(limit_text) >= 1 << 60:
            return None
        cache = 0
        try:
            for line in Path(base, "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == inactive:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return max(0, int(limit_text) - usage + cache)
    return None


# -- secure --------------------------------------------------------------------------------------
def one_hot(y: SecretTensor, n_classes: int) -> SecretTensor:
    """Secret 0/1 integer matrix ``[y == k]`` (n, n_classes): one zero test per entry."""
    return compare.equal(y.reshape(y.shape[0], 1), np.arange(n_classes))


class MLPClassifier(MLPParams):
    """Multi-layer perceptron classifier trained on secret data.

    Parameters: ``hidden`` (layer sizes), ``n_classes`` (labels are the integers
    ``0 .. n_classes - 1``; public), ``optimizer`` ("sgd" with ``momentum``, or "adam" with
    ``betas``, ``eps``), ``learning_rate``, ``alpha`` (L2 weight on the weights), ``epochs``,
    ``batch_size``, ``standardize``, ``shuffle`` ("once", "epoch", "none"), ``seed`` (public:
    initial weights and epoch orders). Fitted: ``secret_coefs_``, ``secret_intercepts_``
    (first layer folded for raw features), ``n_features_in_``, ``loss_curve_``;
    ``coefs_``/``intercepts_`` after :meth:`reveal`, at the receivers.
    """

    _reference = ReferenceMLPClassifier

    def memory_bytes(self, n_features: int, rows: int, rows_at_once: int) -> int:
        """:func:`memory_estimate` for this network (per party)."""
        return memory_estimate(
            n_features, self._hidden(), int(self.n_classes), rows, rows_at_once, self.optimizer
        )

    def _check_memory(self, party: str, n: int, d: int, rows_at_once: int) -> None:
        """ResourceError, before anything is allocated, if this host lacks the memory of
        :meth:`memory_bytes` (the library's guard; jobs check every party's host first)."""
        need, free = self.memory_bytes(d, n, rows_at_once), available_memory()
        if free is not None and need > free:
            raise ResourceError(
                f"party {party!r}: MLPClassifier.fit needs about {format_bytes(need)} of memory per "
                f"party ({describe_network(d, self._hidden(), rows_at_once)}); this host has "
                f"{format_bytes(free)} available"
            )

    def _build(self, d: int) -> Sequential:
        ws = self._init_weights(d)
        layers = []
        for i, w in enumerate(ws):
            layers.append(Linear(w.shape[0], w.shape[1], weight=w))
            if i < len(ws) - 1:
                layers.append(ReLU())
        return Sequential(*layers)

    def fit(
        self,
        x: SecretTensor,
        y: SecretTensor,
        *,
        track_loss: bool = False,
        on_epoch: Callable[[int], None] | None = None,
        privacy: DPSGD | None = None,
    ) -> Self:
        """Train on secret rows ``x`` (n, d) and integer class labels ``y`` (n,) or (n, 1); returns
        the estimator.
        ``track_loss``: keep the secret mean training cross-entropy after every epoch in
        ``loss_curve_`` (as :meth:`covault.ml.LogisticRegression.fit`); ``on_epoch(k)`` is
        called after epoch ``k``. ``privacy``: train by DP-SGD inside MPC instead
        (:func:`covault.ml.dp.fit_private_mlp`: SGD only, no loss curve; ``privacy_`` reports
        the epsilon spent)."""
        x = _check_xy(x, y)
        n, d = x.shape
        if privacy is not None and track_loss:
            raise ValueError(
                f"{type(self).__name__}.fit: track_loss with privacy would release the training loss "
                f"outside the privacy accounting"
            )
        self._check_memory(x.session.party, n, d, n if track_loss else min(self.batch_size, n))
        self.n_features_in_ = d
        target = one_hot(y, int(self.n_classes))
        if privacy is not None:
            from covault.ml.dp import fit_private_mlp

            fit_private_mlp(self, x, target, privacy, on_epoch)
            for stale in ("coefs_", "intercepts_"):
                self.__dict__.pop(stale, None)
            return self
        scaler = None
        if self.standardize:
            scaler = StandardScaler()
            x = scaler.fit_transform(x)
        if self.shuffle == "once":
            x, target = shuffle_together([x, target])
        model = self._build(d)
        loss = SoftmaxCrossEntropyLoss()
        lr, alpha = float(self.learning_rate), float(self.alpha)
        if self.optimizer == "sgd":
            opt = SGD(model.parameters(), lr=lr, momentum=float(self.momentum), weight_decay=alpha)
        else:
            opt = Adam(
                model.parameters(), lr=lr, betas=tuple(self.betas), eps=float(self.eps), weight_decay=alpha
            )
        self.loss_curve_ = train_epochs(self, model, loss, opt, x, target, track_loss, on_epoch)
        model.eval()
        linears = [m for m in model.modules if isinstance(m, Linear)]
        ws = [m.weight.value for m in linears]
        bs = [m.bias.value for m in linears]
        if scaler is not None:
            ws[0], bs[0] = scaler.fold(ws[0], bs[0])
        self.secret_coefs_, self.secret_intercepts_ = ws, bs
        for stale in ("coefs_", "intercepts_"):  # a model revealed before: not this one
            self.__dict__.pop(stale, None)
        return self

    def _check_fitted(self, x) -> SecretTensor:
        return fitted_input(self, "secret_coefs_", x)

    def decision_function(self, x: SecretTensor) -> SecretTensor:
        """Secret logits (n, n_classes)."""
        h = self._check_fitted(x)
        last = len(self.secret_coefs_) - 1
        for i, (w, b) in enumerate(zip(self.secret_coefs_, self.secret_intercepts_)):
            h = h @ w + b
            if i < last:
                h = h.relu()
        return h

    def predict_proba(self, x: SecretTensor) -> SecretTensor:
        """Secret class probabilities (softmax of the logits)."""
        return softmax(self.decision_function(x))

    def predict(self, x: SecretTensor) -> SecretTensor:
        """Secret integer labels: the one-hot argmax of the logits times ``0 .. n_classes - 1``."""
        hot = self.decision_function(x).argmax(axis=1)
        return (hot * np.arange(int(self.n_classes))).sum(axis=1)

    def score(self, x: SecretTensor, y: SecretTensor, to=None) -> float | None:
        """Accuracy revealed to ``to`` (None: every compute party); None elsewhere."""
        from covault.ml.metrics import accuracy_score

        return accuracy_score(y, self.predict(x), to=to)

    def reveal(self, to=None) -> ReferenceMLPClassifier | None:
        """Open the weights (first layer for raw features) to ``to``: sets ``coefs_`` and
        ``intercepts_`` (numpy, scikit-learn layout) at the receivers and returns a plaintext
        :class:`ReferenceMLPClassifier` copy there; None elsewhere."""
        check_fitted(self, "secret_coefs_")
        ws = [w.reveal(to) for w in self.secret_coefs_]
        bs = [b.reveal(to) for b in self.secret_intercepts_]
        if ws[0] is None:
            return None
        self.coefs_, self.intercepts_ = ws, bs
        public = self._reference(**self.get_params())
        public.coefs_, public.intercepts_, public.n_features_in_ = ws, bs, self.n_features_in_
        return public
