"""A client's query rows in the model's input space, from the raw columns its job named.

A model trained by a job carries the job's preprocessing in its public header
(``info["preprocessing"]``: :meth:`covault.ingest.transforms.Preprocessing.to_json`, with the
raw columns, their kinds, the categories, the resolved means and scale factors) and its input
columns (``info["model_inputs"]``). :class:`ModelInputs` reads rows given by column name (a
pandas DataFrame, a mapping of column to values, a list of JSON-like row objects, or a CSV or
Parquet file with a header) the way the job's data owners read theirs
(:func:`covault.ingest.connectors.read_table`, the same Python and frame column rules) and
applies the job's transforms with the code training used (:meth:`Preprocessing.apply`): the
same imputation, clipping, ``log1p``, scales and one-hot encoding. Standardisation needs no
step: it is folded into the model's first layer (:meth:`covault.ml.preprocessing.StandardScaler.fold`).

A bare matrix is taken as it is only where it already is the model's input space: a model
without preprocessing or whose preprocessing passes number columns through unchanged
(:attr:`ModelInputs.identity`), or ``prepared=True``. A missing, extra or misspelt column, a value of
the wrong type, a missing cell without ``impute``, an infinite value or a bool column outside
0/1 is a :class:`~covault.errors.ShapeError` naming the model and the column, raised before
anything is sent.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from covault.errors import ShapeError
from covault.ingest.connectors import read_table
from covault.ingest.connectors.common import number_text, python_column
from covault.ingest.connectors.frames import frame_kind
from covault.ingest.errors import DataError
from covault.ingest.table import Column, Table
from covault.ingest.transforms import NONE, Preprocessing

SOURCE = "query rows"


class ModelInputs:
    """The input columns of the model ``name`` whose public header info is ``info``; call
    :meth:`rows` per query (the preprocessing is parsed once)."""

    def __init__(self, info: Mapping[str, Any], name: str = "?", n_features: int | None = None) -> None:
        self.name = name
        raw = info.get("preprocessing") if isinstance(info, Mapping) else None
        try:
            self.preprocessing = None if raw is None else Preprocessing.from_json(raw)
        except DataError as exc:
            raise ShapeError(f"model {name!r}: its header's preprocessing is unreadable ({exc})") from None
        inputs = info.get("model_inputs") if isinstance(info, Mapping) else None
        self.model_inputs: list[str] | None = None if inputs is None else [str(c) for c in inputs]
        if self.preprocessing is not None:
            self.model_inputs = list(self.preprocessing.outputs)
        self.n_features = n_features if self.model_inputs is None else len(self.model_inputs)
        if n_features is not None and self.n_features != n_features:
            raise ShapeError(
                f"model {name!r}: its header names {self.n_features} inputs, its first layer takes {n_features}"
            )

    @property
    def columns(self) -> list[tuple[str, str]] | None:
        """The raw ``(column, kind)`` pairs a query names (None: the model names no columns)."""
        if self.preprocessing is not None:
            return list(self.preprocessing.inputs)
        return None if self.model_inputs is None else [(c, "number") for c in self.model_inputs]

    @property
    def identity(self) -> bool:
        """Whether the model's inputs are its raw columns as they are: no preprocessing, or one
        that only passes number columns through (no transform, scale factor 1)."""
        pre = self.preprocessing
        if pre is None:
            return True
        return all(
            k == "number" and pre.transform_of(c) == NONE and pre.factors[c] == 1.0 for c, k in pre.inputs
        )

    def _expects(self) -> str:
        cols = self.columns
        if cols is None:
            return f"rows of {self.n_features} numbers" if self.n_features else "rows of numbers"
        return "the columns " + ", ".join(f"{c!r} ({k})" for c, k in cols)

    def rows(self, rows: Any, *, prepared: bool = False) -> np.ndarray:
        """float64 ``(n, n_features)``: ``rows`` in the model's input space (module docstring).
        ``prepared``: the rows already are (a matrix, or named columns of the model's inputs)."""
        if _is_matrix(rows):
            if not (prepared or self.identity):
                raise ShapeError(
                    f"model {self.name!r} takes raw columns and applies its job's transforms: pass "
                    f"{self._expects()} by name (a DataFrame, a mapping of column to values, a list of "
                    "row objects or a CSV file with a header), or prepared=True for rows already in "
                    f"the model's {self.n_features} inputs {self.model_inputs}"
                )
            return self._matrix(rows)
        table = self._table(rows)
        if prepared or self.preprocessing is None:
            if self.model_inputs is None:
                raise ShapeError(
                    f"model {self.name!r} names no input columns (an imported model): pass its rows as "
                    f"a matrix of {self.n_features or 'its'} numbers per row"
                )
            self._check_names(table, self.model_inputs)
            for c in self.model_inputs:
                self._check_kind(table[c], "number", raw=False)
            return self._matrix(table.numeric(self.model_inputs))
        pre = self.preprocessing
        self._check_names(table, pre.names)
        cols = [self._check_kind(table[c], k) for c, k in pre.inputs]
        try:
            out = pre.apply(Table(cols, SOURCE))
        except DataError as exc:
            raise ShapeError(f"model {self.name!r}: {exc}") from None
        return out

    def _matrix(self, rows: Any) -> np.ndarray:
        try:
            arr = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ShapeError(f"model {self.name!r}: rows must be numbers: {exc}") from None
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[0] < 1 or (self.n_features and arr.shape[1] != self.n_features):
            raise ShapeError(
                f"model {self.name!r}: rows must have shape (n, {self.n_features or 'features'}) with "
                f"n >= 1 ({self._expects()}), got {arr.shape}"
            )
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:
            r, j = (int(v) for v in bad[0])
            col = self.model_inputs[j] if self.model_inputs else f"{j + 1}"
            raise ShapeError(f"model {self.name!r}: row {r + 1}, column {col!r}: NaN or infinite value")
        return arr

    def _table(self, rows: Any) -> Table:
        try:
            if isinstance(rows, str | os.PathLike) or frame_kind(rows) is not None:
                table = read_table(rows)
            elif isinstance(rows, Mapping):
                table = _mapping_table(rows)
            elif isinstance(rows, Sequence) and rows and all(isinstance(r, Mapping) for r in rows):
                table = _records_table(rows)
            else:
                raise ShapeError(
                    f"model {self.name!r}: rows of type {type(rows).__name__} are not supported; pass "
                    f"{self._expects()} by name (a DataFrame, a mapping of column to values, a list of "
                    "row objects or a CSV file with a header)"
                )
        except DataError as exc:
            raise ShapeError(f"model {self.name!r}: {exc}") from None
        if table.n_rows < 1:
            raise ShapeError(f"model {self.name!r}: the query has no rows")
        return table

    def _check_names(self, table: Table, want: list[str]) -> None:
        missing = [c for c in want if c not in table]
        extra = [c for c in table.names if c not in want]
        if not missing and not extra:
            return
        if missing:
            near = difflib.get_close_matches(missing[0], extra, n=1, cutoff=0.6)
            hint = f"; {near[0]!r} is given: misspelt?" if near else ""
            raise ShapeError(
                f"model {self.name!r}: the query has no column {missing[0]!r}{hint} "
                f"(the model takes {self._expects()})"
            )
        raise ShapeError(
            f"model {self.name!r}: the query has column {extra[0]!r}, which the model does not take "
            f"(it takes {self._expects()})"
        )

    def _check_kind(self, col: Column, kind: str, raw: bool = True) -> Column:
        """``col`` as the training data's kind ``kind`` would have it, or ShapeError naming it
        (``raw``: a raw number column takes no true/false; the model's inputs, such as one-hot
        columns, may)."""
        if kind == "text":
            if col.kind == "text":
                return col
            # a column of numbers read where the job had text: its cells as text, as a data
            # owner's reader does for a column that turns out to hold text
            return Column(col.name, "text", number_text(col.values, col.kind))
        if col.kind == "text":
            raise ShapeError(f"model {self.name!r}: column {col.name!r} holds text, the model takes a {kind}")
        if raw and kind == "number" and col.kind == "bool":
            raise ShapeError(
                f"model {self.name!r}: column {col.name!r} holds true/false, the model takes a number"
            )
        if kind == "bool":
            v = col.values[~np.isnan(col.values)]
            if not np.isin(v, (0.0, 1.0)).all():
                raise ShapeError(
                    f"model {self.name!r}: column {col.name!r} is a bool: its values must be 0/1 or true/false"
                )
        return col


def _is_matrix(rows: Any) -> bool:
    """A numpy array, or a list of numbers or of lists of numbers (JSON arrays)."""
    if isinstance(rows, np.ndarray):
        return True
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Sequence):
        return False
    return bool(rows) and not any(isinstance(r, Mapping) for r in rows)


def _values(values: Any) -> list[Any]:
    """A column's cells: a sequence, an array or a pandas Series; a scalar is one row."""
    if isinstance(values, str | bytes):
        return [values]
    if isinstance(values, np.ndarray):
        return values.reshape(-1).tolist()
    if hasattr(values, "tolist") and hasattr(values, "__len__"):
        return list(values.tolist())
    return list(values) if isinstance(values, Sequence) else [values]


def _columns_table(names: list[str], cells: list[list[Any]]) -> Table:
    """The table of columns ``names`` holding ``cells`` (one list per column), each column as
    :func:`python_column` reads it; by one array where every cell is a finite Python number (a
    query's usual rows: the same columns, without a loop per column)."""
    same = len({len(col) for col in cells}) == 1
    if same and all(type(v) is float or type(v) is int for col in cells for v in col):
        arr = np.array(cells, dtype=np.float64).reshape(len(names), -1)
        if np.isfinite(arr).all():
            return Table([Column(n, "number", arr[j]) for j, n in enumerate(names)], SOURCE)
    return Table([python_column(SOURCE, n, col) for n, col in zip(names, cells)], SOURCE)


def _mapping_table(rows: Mapping[str, Any]) -> Table:
    return _columns_table([str(k) for k in rows], [_values(v) for v in rows.values()])


def _records_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    names = list(rows[0])
    for i, r in enumerate(rows):
        if set(r) != set(names):
            diff = sorted(set(names) ^ set(r))
            raise DataError(f"{SOURCE}: row {i + 1} has other columns than row 1 (column {diff[0]!r})")
    return _columns_table([str(n) for n in names], [[r[n] for r in rows] for n in names])


def model_rows(
    info: Mapping[str, Any],
    rows: Any,
    *,
    prepared: bool = False,
    name: str = "?",
    n_features: int | None = None,
) -> np.ndarray:
    """float64 ``(n, n_features)``: the query ``rows`` in the input space of the model whose
    header info is ``info`` (:class:`ModelInputs`)."""
    return ModelInputs(info, name, n_features).rows(rows, prepared=prepared)
