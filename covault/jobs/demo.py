"""Demo job: hospitals jointly train a breast-cancer classifier without pooling their records.

:func:`make_breast_cancer_job` splits scikit-learn's copy of the Wisconsin diagnostic
breast-cancer data (569 patients, 30 features; ``pip install 'covault[demo]'``) into one
training CSV and one held-out CSV per hospital (unequal shares, each stratified 70/30) and
writes a job file training logistic regression on the label ``malignant`` (1 = malignant).
The split uses numpy's generator: demo data, not a secret.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covault.jobs.errors import JobError

LABEL = "malignant"


def breast_cancer() -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(feature names, X, y)`` with ``y = 1`` for malignant tumours."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        raise JobError("the demo data comes from scikit-learn: pip install 'covault[demo]'") from None
    data = load_breast_cancer()
    return [str(n) for n in data.feature_names], data.data, 1 - data.target


def _write_csv(path: Path, columns: list[str], x: np.ndarray, y: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*columns, LABEL])
        for row, label in zip(x, y):
            w.writerow([*(f"{v:.6g}" for v in row), int(label)])


def make_breast_cancer_job(
    directory: str | Path,
    parties: Sequence[str] = ("hospital_a", "hospital_b", "hospital_c"),
    protocol: str = "rep3",
    *,
    seed: int = 0,
    test_fraction: float = 0.3,
    epochs: int = 10,
    learning_rate: float = 0.1,
    batch_size: int = 32,
) -> Path:
    """Write per-party CSV files and ``job.toml`` into ``directory``; the job file's path.

    Parties get unequal shares of the patients (weights 2 : 3 : 4 ... in order). ``rep3`` uses
    the first three parties as compute parties, ``2pc`` the first two (plus a dealer party
    ``dealer``); further parties are data owners only.
    """
    parties = tuple(parties)
    need = {"rep3": 3, "2pc": 2}.get(protocol)
    if need is None:
        raise JobError(f"protocol must be 'rep3' or '2pc', got {protocol!r}")
    if len(parties) < need or len(set(parties)) != len(parties):
        raise JobError(f"protocol {protocol!r} needs at least {need} distinct parties, got {list(parties)}")
    columns, x, y = breast_cancer()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = np.arange(2, 2 + len(parties), dtype=np.float64)
    owner = np.empty(len(y), dtype=np.int64)
    for cls in (0, 1):  # every hospital sees both diagnoses
        idx = rng.permutation(np.flatnonzero(y == cls))
        cuts = np.round(np.cumsum(weights / weights.sum())[:-1] * len(idx)).astype(int)
        for i, part in enumerate(np.split(idx, cuts)):
            owner[part] = i
    q = json.dumps  # a JSON string is a valid TOML string
    lines = [
        "# Joint training demo: hospitals train a breast-cancer classifier on their pooled",
        "# patients without revealing any record to each other (covault).",
        f"protocol = {q(protocol)}",
        'task = "logistic_regression"',
        f"label = {q(LABEL)}",
        f"compute = [{', '.join(q(p) for p in parties[:need])}]",
        f"seed = {int(seed)}",
        'model_out = "model.onnx"',
    ]
    if protocol == "2pc":
        lines.append('dealer = "dealer"')
    lines += [
        "",
        "[model]",
        f"epochs = {int(epochs)}",
        f"learning_rate = {learning_rate!r}",
        f"batch_size = {int(batch_size)}",
    ]
    for i, name in enumerate(parties):
        rows = np.flatnonzero(owner == i)
        test = np.zeros(len(rows), dtype=bool)
        for cls in (0, 1):
            mine = rows[y[rows] == cls]
            pick = rng.permutation(len(mine))[: round(test_fraction * len(mine))]
            test[np.isin(rows, mine[pick])] = True
        train_file, test_file = f"{name}.csv", f"{name}_test.csv"
        _write_csv(out / train_file, columns, x[rows[~test]], y[rows[~test]])
        _write_csv(out / test_file, columns, x[rows[test]], y[rows[test]])
        lines += ["", f"[parties.{q(name)}]", f"data = {q(train_file)}", f"test = {q(test_file)}"]
    if protocol == "2pc":
        lines += ["", '[parties."dealer"]']
    path = out / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
