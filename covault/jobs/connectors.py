"""Numeric tables for scripts and vertical jobs: :func:`load_table` over the data owners'
connectors (:mod:`covault.ingest.connectors`: CSV ``.csv`` ``.tsv`` ``.txt``, Parquet ``.parquet``
``.pq``).

:func:`load_table` returns the column names and a float64 matrix: every cell must be a number
(booleans count as 0/1), none missing. The row-identifier column of vertically partitioned data
(``id_column``) is read as text. Errors name the file, the column and the (1-based) data row,
never the cell's content (the message may be shown to the other parties of a job).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from covault.ingest.connectors import read_table
from covault.ingest.errors import DataError as IngestDataError
from covault.jobs.errors import DataError


def load_table(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(columns, values)`` of the table at ``path``; ``values`` is float64 ``(rows, columns)``."""
    columns, values, _ = load_table_with_ids(path, None)
    return columns, values


def load_table_with_ids(path: str | Path, id_column: str | None) -> tuple[list[str], np.ndarray, list[str]]:
    """``(columns, values, ids)``: as :func:`load_table` without the column ``id_column``, whose
    cells are returned as non-empty strings (``[]`` when ``id_column`` is None)."""
    try:
        table = read_table(Path(path), id_column=id_column)
    except IngestDataError as exc:
        raise DataError(str(exc)) from None
    names = [n for n in table.names if n != id_column]
    values = np.empty((table.n_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        col = table[name]
        if col.kind == "text":
            row = next((i for i, v in enumerate(col.values) if v is not None and not _is_number(v)), None)
            where = f" (row {row + 1})" if row is not None else ""
            raise DataError(f"{table.source}: column {name!r} is not numeric{where}")
        missing = np.flatnonzero(np.isnan(col.values))
        if missing.size:
            raise DataError(f"{table.source}: column {name!r}, row {missing[0] + 1}: empty value")
        values[:, j] = col.values
    ids = [] if id_column is None else [str(v) for v in table[id_column].values]
    return names, values, ids


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
