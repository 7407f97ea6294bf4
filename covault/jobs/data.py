"""One party's rows for a job: load, validate, split into training and held-out rows.

Runs at the data owner only, before anything is sent. Checks (errors name the party, file,
column and row, never a value): the file reads as a numeric table
(:mod:`covault.jobs.connectors`), the label column is present, the test file has the same
columns as the training file, class labels are integers ``0 .. n_classes - 1``, and every
value lies in the fixed-point range of the ML layer (``|x| < 2^15``).

Vertically partitioned jobs (:func:`load_vertical_rows`) also read the row ids; which rows take
part, and which are held out, is decided after the private set intersection
(:mod:`covault.jobs.align`).

Without a ``test`` file, ``test_fraction`` of the rows are held out: a split stratified by
class for classification, drawn from the public ``seed`` and the party's name (AES-CTR,
:func:`covault.randomness.public.public_permutation`), so a plaintext comparison can replay it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covault.jobs.connectors import load_table, load_table_with_ids
from covault.jobs.errors import DataError, JobError
from covault.ml.preprocessing import DATA_BOUND
from covault.randomness.public import public_permutation


@dataclass(frozen=True)
class PartyRows:
    """A data party's validated rows: ``columns`` as in its file (label included), the
    feature names (file order, label removed), and features / labels of both splits."""

    columns: list[str]
    features: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def matrix(self) -> np.ndarray:
        """``[features | label]`` for the training rows, then the held-out rows."""
        x = np.concatenate([self.x_train, self.x_test])
        y = np.concatenate([self.y_train, self.y_test])
        return np.column_stack([x, y])


def load_party_rows(job, party: str) -> PartyRows:
    """Load and validate the rows of ``party`` (a data party of ``job``); raises DataError."""
    return _as_party_error(party, _load, job)


def _as_party_error(party: str, load, job):
    """``load(job, party)``, with every JobError or OSError re-raised as a DataError that
    starts with the party's name."""
    try:
        return load(job, party)
    except JobError as exc:
        msg = str(exc)
        raise DataError(msg if msg.startswith(f"party {party!r}") else f"party {party!r}: {msg}") from None
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise DataError(f"party {party!r}: cannot read its data{where}: {exc.strerror or exc}") from None


def _load(job, party: str) -> PartyRows:
    path = job.data[party]
    columns, values = load_table(path)
    if job.label not in columns:
        raise DataError(
            f"party {party!r}: label column {job.label!r} is missing from {path} (columns: {', '.join(columns)})"
        )
    if len(columns) < 2:
        raise DataError(f"party {party!r}: {path} has no feature columns besides the label {job.label!r}")
    _check_values(job, party, path, columns, values)
    li = columns.index(job.label)
    feats = [i for i in range(len(columns)) if i != li]
    if party in job.test:
        tpath = job.test[party]
        tcols, tvalues = load_table(tpath)
        if tcols != columns:
            i = next(
                (i for i, (a, b) in enumerate(zip(columns, tcols)) if a != b), min(len(columns), len(tcols))
            )
            got = repr(tcols[i]) if i < len(tcols) else "no column"
            want = repr(columns[i]) if i < len(columns) else "no column"
            raise DataError(
                f"party {party!r}: test file {tpath} has other columns than the data file {path}: "
                f"column {i + 1} is {got} there and {want} in the data file"
            )
        _check_values(job, party, tpath, tcols, tvalues)
        train, test = values, tvalues
    else:
        tr, te = split_rows(values[:, li], job.test_fraction, job.seed, party, job.kind == "classification")
        train, test = values[tr], values[te]
    return PartyRows(
        columns=columns,
        features=[columns[i] for i in feats],
        x_train=train[:, feats],
        y_train=train[:, li],
        x_test=test[:, feats],
        y_test=test[:, li],
    )


def _check_values(
    job, party: str, path: Path, columns: list[str], values: np.ndarray, *, label: bool = True
) -> None:
    big = np.abs(values) >= DATA_BOUND
    if big.any():
        r, c = np.argwhere(big)[0]
        raise DataError(
            f"party {party!r}: data file {path}: column {columns[c]!r}, row {r + 1}: |value| >= "
            f"{DATA_BOUND:.0f} is outside the fixed-point range; rescale the column"
        )
    if job.kind != "classification" or not label:
        return
    k = job.n_classes
    y = values[:, columns.index(job.label)]
    bad = np.flatnonzero((y != np.round(y)) | (y < 0) | (y >= k))
    if bad.size:
        want = "0 or 1" if k == 2 else f"integers 0 .. {k - 1} (n_classes = {k})"
        raise DataError(
            f"party {party!r}: data file {path}: label column {job.label!r}, row {bad[0] + 1}: "
            f"class labels must be {want}"
        )


def split_rows(
    labels: np.ndarray, fraction: float, seed: int, party: str, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and held-out row indices: ``round(fraction * rows)`` held out (per class
    when ``stratify``), in a public pseudo-random order drawn from ``seed`` and ``party``."""
    n = len(labels)
    order = public_permutation(seed, f"split/{party}", n) if n else np.arange(0)
    groups = [order[labels[order] == c] for c in np.unique(labels)] if stratify else [order]
    test = np.concatenate([g[: round(fraction * len(g))] for g in groups]) if groups else order
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


@dataclass(frozen=True)
class VerticalRows:
    """A data party's validated columns of a vertically partitioned job: ``columns`` (file order,
    id removed, label included where this party holds it), ``features`` (label removed), the
    row ids and values of the training file and, if given, of the test file (else None)."""

    columns: list[str]
    features: list[str]
    has_label: bool
    train_ids: list[str]
    train: np.ndarray
    test_ids: list[str] | None
    test: np.ndarray | None

    def tagged_ids(self) -> list[str]:
        """Ids for the intersection: ``train:ID`` for every training row, ``test:ID`` for every
        test row, so that both files are aligned by one intersection."""
        return [f"train:{i}" for i in self.train_ids] + [f"test:{i}" for i in self.test_ids or ()]

    def rows(self, tagged_index: np.ndarray) -> np.ndarray:
        """Values of the rows at ``tagged_index`` (positions in :meth:`tagged_ids`)."""
        table = self.train if self.test is None else np.concatenate([self.train, self.test])
        return table[np.asarray(tagged_index, dtype=np.int64)]


def load_vertical_rows(job, party: str) -> VerticalRows:
    """Load and validate ``party``'s columns of a vertical job; raises DataError naming the party."""
    return _as_party_error(party, _load_vertical, job)


def _load_vertical(job, party: str) -> VerticalRows:
    path = job.data[party]
    columns, values, ids = load_table_with_ids(path, job.id_column)
    has_label = job.label in columns
    if not columns:
        raise DataError(f"party {party!r}: {path} has no columns besides the id {job.id_column!r}")
    _check_values(job, party, path, columns, values, label=has_label)
    test_ids = test = None
    if party in job.test:
        tpath = job.test[party]
        tcols, test, test_ids = load_table_with_ids(tpath, job.id_column)
        if tcols != columns:
            raise DataError(
                f"party {party!r}: test file {tpath} has the columns {tcols}, the data file {path} {columns}"
            )
        _check_values(job, party, tpath, tcols, test, label=has_label)
    features = [c for c in columns if c != job.label]
    return VerticalRows(columns, features, has_label, ids, values, test_ids, test)
