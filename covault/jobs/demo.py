"""Demo job: hospitals jointly train a breast-cancer classifier without pooling their records.

:func:`make_breast_cancer_job` writes scikit-learn's copy of the Wisconsin diagnostic
breast-cancer data (569 patients, 30 features; ``pip install 'covault[demo]'``) as one
training CSV and one held-out CSV per hospital, and a job file training logistic regression on
the label ``malignant`` (1 = malignant):

- horizontal (default): each hospital holds full records of its own patients (unequal shares,
  weights 2 : 3 : 4 ..., each stratified 70/30 into training and held-out rows);
- vertical (``vertical=True``): the hospitals hold different columns of the same patients,
  matched on ``patient_id`` (``"P000123"``): the 30 features in contiguous groups (with three
  hospitals: the ``mean ...``, ``... error`` and ``worst ...`` columns), the label at the first
  hospital only; each hospital lacks a random ``missing`` share of the patients and lists its
  patients in its own random order; the held-out patients (``test_fraction``, stratified) are
  the same for every hospital.

The split uses numpy's generator: demo data, not a secret.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covault import schemes
from covault.errors import ProtocolError
from covault.jobs.errors import JobError
from covault.randomness.providers import choose, needs_dealer

LABEL = "malignant"
ID_COLUMN = "patient_id"
N_PATIENTS = 569


def breast_cancer() -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(feature names, X, y)`` with ``y = 1`` for malignant tumours."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        raise JobError("the demo data comes from scikit-learn: pip install 'covault[demo]'") from None
    data = load_breast_cancer()
    return [str(n) for n in data.feature_names], data.data, 1 - data.target


def hospital_names(n: int) -> tuple[str, ...]:
    """``hospital_a``, ``hospital_b``, ... (``n`` names)."""
    if not 1 <= n <= 26:
        raise JobError(f"the demo has 1 to 26 hospitals, got {n}")
    return tuple(f"hospital_{chr(ord('a') + i)}" for i in range(n))


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _cells(x: np.ndarray) -> list[str]:
    return [f"{v:.6g}" for v in x]


def make_breast_cancer_job(
    directory: str | Path,
    parties: int | Sequence[str] = ("hospital_a", "hospital_b", "hospital_c"),
    protocol: str = schemes.DEFAULT,
    *,
    vertical: bool = False,
    missing: float = 0.1,
    seed: int = 0,
    test_fraction: float = 0.3,
    epochs: int = 10,
    learning_rate: float = 0.1,
    batch_size: int = 32,
    provider: str | None = None,
) -> Path:
    """Write per-party CSV files and ``job.toml`` into ``directory``; the job file's path.

    ``parties``: names, or a number of hospitals (``hospital_a`` ...). The first parties are the
    protocol's compute parties (:mod:`covault.schemes`: three for ``rep3``, two for ``2pc``, plus
    a dealer party ``dealer`` where its provider needs one); further parties are data owners only. ``vertical``: split the columns instead of the
    patients (module docstring); ``missing``: the share of patients each hospital lacks then.
    ``provider``: the protocol's correlation provider (None: its default); one with no oblivious
    shuffle (:attr:`~covault.randomness.providers.Provider.shuffle`) trains with
    ``shuffle = "none"``, written in the job file (every provider has one today).
    """
    parties = hospital_names(parties) if isinstance(parties, int) else tuple(parties)
    try:
        need = schemes.get(protocol).parties
    except ProtocolError:
        raise JobError(f"protocol must be one of {list(schemes.names())}, got {protocol!r}") from None
    try:
        dealer = needs_dealer(protocol, provider)
        entry = choose(protocol, provider)
    except ProtocolError as e:
        raise JobError(str(e)) from None
    if len(parties) < need or len(set(parties)) != len(parties):
        raise JobError(f"protocol {protocol!r} needs at least {need} distinct parties, got {list(parties)}")
    if not 0 <= missing < 0.5:
        raise JobError(f"missing must be in [0, 0.5), got {missing!r}")
    columns, x, y = breast_cancer()
    if vertical and len(parties) > len(columns):
        raise JobError(f"a vertical split of {len(columns)} columns has at most {len(columns)} parties")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write = _vertical_files if vertical else _horizontal_files
    files = write(out, parties, columns, x, y, rng, test_fraction, missing)
    q = json.dumps  # a JSON string is a valid TOML string
    lines = [
        "# Joint training demo: hospitals train a breast-cancer classifier on their pooled",
        "# patients without revealing any record to each other (covault).",
        f"protocol = {q(protocol)}",
        *([f"provider = {q(provider)}"] if provider is not None else []),
        'task = "logistic_regression"',
        f"label = {q(LABEL)}",
    ]
    if vertical:
        lines += ['partition = "vertical"', f"id = {q(ID_COLUMN)}"]
    lines += [
        f"compute = [{', '.join(q(p) for p in parties[:need])}]",
        f"seed = {int(seed)}",
        'model_out = "model.onnx"',
    ]
    if dealer:
        lines.append('dealer = "dealer"')
    lines += [
        "",
        "[model]",
        f"epochs = {int(epochs)}",
        f"learning_rate = {learning_rate!r}",
        f"batch_size = {int(batch_size)}",
    ]
    if entry is not None and not entry.shuffle:
        lines.append(f'shuffle = "none"  # provider {entry.name!r}: 2pc has no oblivious shuffle with it')
    for name, (train_file, test_file) in files.items():
        lines += ["", f"[parties.{q(name)}]", f"data = {q(train_file)}", f"test = {q(test_file)}"]
    if dealer:
        lines += ["", '[parties."dealer"]']
    path = out / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _held_out(y: np.ndarray, rows: np.ndarray, fraction: float, rng) -> np.ndarray:
    """Boolean mask over ``rows``: a stratified ``fraction`` of them, by class."""
    test = np.zeros(len(rows), dtype=bool)
    for cls in (0, 1):
        mine = np.flatnonzero(y[rows] == cls)
        test[mine[rng.permutation(len(mine))[: round(fraction * len(mine))]]] = True
    return test


def _horizontal_files(out, parties, columns, x, y, rng, test_fraction, missing):
    weights = np.arange(2, 2 + len(parties), dtype=np.float64)
    owner = np.empty(len(y), dtype=np.int64)
    for cls in (0, 1):  # every hospital sees both diagnoses
        idx = rng.permutation(np.flatnonzero(y == cls))
        cuts = np.round(np.cumsum(weights / weights.sum())[:-1] * len(idx)).astype(int)
        for i, part in enumerate(np.split(idx, cuts)):
            owner[part] = i
    files = {}
    for i, name in enumerate(parties):
        rows = np.flatnonzero(owner == i)
        test = _held_out(y, rows, test_fraction, rng)
        files[name] = (f"{name}.csv", f"{name}_test.csv")
        for fname, sel in zip(files[name], (rows[~test], rows[test])):
            _write_csv(out / fname, [*columns, LABEL], ([*_cells(x[r]), int(y[r])] for r in sel))
    return files


def _vertical_files(out, parties, columns, x, y, rng, test_fraction, missing):
    n = len(y)
    ids = [f"P{v:06d}" for v in rng.choice(1_000_000, size=n, replace=False)]
    everyone = np.arange(n)
    is_test = _held_out(y, everyone, test_fraction, rng)
    groups = np.array_split(np.arange(len(columns)), len(parties))
    files = {}
    for i, (name, cols) in enumerate(zip(parties, groups)):
        has = np.ones(n, dtype=bool)
        has[rng.choice(n, size=round(missing * n), replace=False)] = False
        order = rng.permutation(n)  # each hospital lists its patients in its own order
        header = [ID_COLUMN, *(columns[c] for c in cols)] + ([LABEL] if i == 0 else [])
        files[name] = (f"{name}.csv", f"{name}_test.csv")
        for fname, held_out in zip(files[name], (False, True)):
            sel = order[has[order] & (is_test[order] == held_out)]
            rows = ([ids[r], *_cells(x[r, cols])] + ([int(y[r])] if i == 0 else []) for r in sel)
            _write_csv(out / fname, header, rows)
    return files
