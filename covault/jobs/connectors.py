"""Read a party's table: CSV (``.csv``, ``.tsv``, ``.txt``) or Parquet (``.parquet``, ``.pq``).

:func:`load_table` returns the column names and a float64 matrix. Every cell must be a finite
number, except in the row-identifier column of vertically partitioned data (``id_column``), read
as text (integers as their decimal digits). Errors name the file, the column and the (1-based)
data row, never the cell's content (the message may be shown to the other parties of a job).
Parquet needs ``pyarrow``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from covault.jobs.errors import DataError

CSV_SUFFIXES = {".csv": ",", ".txt": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


def load_table(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(columns, values)`` of the table at ``path``; ``values`` is float64 ``(rows, columns)``."""
    columns, values, _ = load_table_with_ids(path, None)
    return columns, values


def load_table_with_ids(path: str | Path, id_column: str | None) -> tuple[list[str], np.ndarray, list[str]]:
    """``(columns, values, ids)``: as :func:`load_table` without the column ``id_column``, whose
    cells are returned as non-empty strings (``[]`` when ``id_column`` is None)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"data file {p} is a directory, not a file")
    suffix = p.suffix.lower()
    if suffix not in CSV_SUFFIXES and suffix not in PARQUET_SUFFIXES:
        raise DataError(f"data file {p}: unsupported type {suffix or '(no suffix)'!r}; use .csv or .parquet")
    _check_readable(p)
    if suffix in PARQUET_SUFFIXES:
        return _load_parquet(p, id_column)
    return _load_csv(p, CSV_SUFFIXES[suffix], id_column)


def _check_readable(p: Path) -> None:
    """DataError unless ``p`` is a regular file this process may read (missing, not a regular
    file, permission denied or another system error, each named)."""
    try:
        if not p.exists():
            raise DataError(f"data file {p} not found")
        if not p.is_file():
            raise DataError(f"data file {p} is not a regular file")
        with p.open("rb"):
            pass
    except OSError as exc:
        raise DataError(f"data file {p} cannot be read: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    """The system's reason for ``exc`` (``permission denied``, ``input/output error``)."""
    return exc.strerror.lower() if exc.strerror else str(exc)


def _id_index(p: Path, columns: list[str], id_column: str | None) -> int | None:
    if id_column is None:
        return None
    if id_column not in columns:
        raise DataError(f"data file {p}: id column {id_column!r} is missing (columns: {', '.join(columns)})")
    return columns.index(id_column)


def _check_columns(p: Path, columns: list[str]) -> None:
    seen: set[str] = set()
    for i, c in enumerate(columns):
        if not c:
            raise DataError(f"data file {p}: column {i + 1} has an empty name in the header")
        if c in seen:
            raise DataError(f"data file {p}: column {c!r} appears twice in the header")
        seen.add(c)


def _load_csv(p: Path, delimiter: str, id_column: str | None) -> tuple[list[str], np.ndarray, list[str]]:
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, delimiter=delimiter))
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {p} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise DataError(f"data file {p} cannot be read: {_reason(exc)}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]  # blank lines
    if not rows:
        raise DataError(f"data file {p} is empty (expected a header line and data rows)")
    columns = [c.strip() for c in rows[0]]
    _check_columns(p, columns)
    body = rows[1:]
    if not body:
        raise DataError(f"data file {p} has a header but no data rows")
    width = len(columns)
    for i, r in enumerate(body):
        if len(r) != width:
            raise DataError(f"data file {p}: row {i + 1} has {len(r)} fields, the header has {width}")
    cells = np.array(body, dtype=str)
    ic = _id_index(p, columns, id_column)
    ids: list[str] = []
    if ic is not None:
        ids = [cell.strip() for cell in cells[:, ic].tolist()]
        cells = np.delete(cells, ic, axis=1)
        columns = columns[:ic] + columns[ic + 1 :]
    values = np.empty(cells.shape, dtype=np.float64)
    for j, name in enumerate(columns):
        col = np.char.strip(cells[:, j])
        empty = np.flatnonzero(col == "")
        if empty.size:
            raise DataError(f"data file {p}: column {name!r}, row {empty[0] + 1}: empty value")
        try:
            values[:, j] = col.astype(np.float64)
        except ValueError:
            row = next(i for i, v in enumerate(col) if not _is_number(v))
            raise DataError(f"data file {p}: column {name!r} is not numeric (row {row + 1})") from None
        _check_finite(p, name, values[:, j])
    _check_ids(p, id_column, ids)
    return columns, values, ids


def _check_ids(p: Path, id_column: str | None, ids: list[str]) -> None:
    empty = [i for i, v in enumerate(ids) if not v]
    if empty:
        raise DataError(f"data file {p}: id column {id_column!r}, row {empty[0] + 1}: empty id")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_finite(p: Path, name: str, col: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(col))
    if bad.size:
        what = "NaN" if math.isnan(col[bad[0]]) else "infinite"
        raise DataError(f"data file {p}: column {name!r}, row {bad[0] + 1}: {what} value")


def _load_parquet(p: Path, id_column: str | None) -> tuple[list[str], np.ndarray, list[str]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading the Parquet file {p} needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"data file {p} is not a readable Parquet file: {exc}") from None
    columns = [str(c) for c in table.column_names]
    _check_columns(p, columns)
    if not columns or table.num_rows == 0:
        raise DataError(f"data file {p} is empty (no columns or no rows)")
    ic = _id_index(p, columns, id_column)
    ids: list[str] = []
    if ic is not None:
        col = table.column(ic)
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise DataError(
                f"data file {p}: id column {id_column!r} must hold strings or integers (type {t})"
            )
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"data file {p}: id column {id_column!r}, row {row + 1}: empty (null) id")
        ids = [str(v).strip() for v in col.to_pylist()]
        table = table.remove_column(ic)
        columns = columns[:ic] + columns[ic + 1 :]
    values = np.empty((table.num_rows, len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        col = table.column(j)
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise DataError(f"data file {p}: column {name!r} is not numeric (type {t})")
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"data file {p}: column {name!r}, row {row + 1}: empty (null) value")
        values[:, j] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        _check_finite(p, name, values[:, j])
    _check_ids(p, id_column, ids)
    return columns, values, ids
