"""Connectors: read a data owner's raw table from where it lives into a :class:`~covault.ingest.table.Table`.

A source is a path (``.csv``/``.txt`` comma-separated, ``.tsv`` tab-separated, ``.parquet``/``.pq``;
relative to ``base``), a dict naming a SQL table or query (``{url, table}`` / ``{url, query}``,
optionally ``password_env``), or a pandas DataFrame or pyarrow Table. One module per kind of
source: :mod:`.csv`, :mod:`.parquet`, :mod:`.sql`, :mod:`.frames`; what they share is in
:mod:`.common` and :mod:`.arrow`. See ``docs/connectors.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covault.ingest.connectors import csv, parquet
from covault.ingest.connectors.frames import describe_frame, frame_columns, frame_kind, read_frame
from covault.ingest.connectors.sql import describe_sql, read_sql, sql_columns
from covault.ingest.errors import DataError
from covault.ingest.table import Table

#: A path, a SQL source dict, a pandas DataFrame or a pyarrow Table.
Source = str | os.PathLike | dict | Any

__all__ = ["Source", "describe", "read_table", "source_columns"]


def _path(source: str | os.PathLike, base: Path | None) -> Path:
    p = Path(source)
    return p if p.is_absolute() or base is None else Path(base) / p


def _file(source: str | os.PathLike, base: Path | None) -> tuple[Path, str, str]:
    """``(path, 'csv' or 'parquet', description)``; DataError for an unsupported suffix."""
    p = _path(source, base)
    where = f"data file {p}"
    suffix = p.suffix.lower()
    if suffix in csv.SUFFIXES:
        return p, "csv", where
    if suffix in parquet.SUFFIXES:
        return p, "parquet", where
    if p.is_dir():
        raise DataError(f"{where} is a directory, not a file")
    raise DataError(f"{where}: unsupported type {suffix or '(no suffix)'!r}; use .csv, .tsv or .parquet")


def _kind(source: object) -> str:
    if isinstance(source, str | os.PathLike):
        return "file"
    if isinstance(source, dict):
        return "sql"
    if frame_kind(source) is not None:
        return "frame"
    raise DataError(
        f"unsupported data source of type {type(source).__name__} (a path, a SQL dict, "
        "a pandas DataFrame or a pyarrow Table)"
    )


def describe(source: Source, *, base: Path | None = None) -> str:
    """The source for messages (``data file bank_a.csv``, ``table 'tx' at sqlite:///...``); never
    a password."""
    kind = _kind(source)
    if kind == "file":
        p = _path(source, base)
        return f"data file {p}"
    if kind == "sql":
        return describe_sql(source, base)
    return describe_frame(source)


def source_columns(source: Source, *, base: Path | None = None) -> list[str]:
    """The source's column names, in source order, reading no rows (a file's header or footer,
    a table's catalogue, a query's result description)."""
    kind = _kind(source)
    if kind == "file":
        p, fmt, where = _file(source, base)
        if fmt == "csv":
            return csv.csv_columns(p, csv.SUFFIXES[p.suffix.lower()], where)
        return parquet.parquet_columns(p, where)
    if kind == "sql":
        return sql_columns(source, base)
    return frame_columns(source)


def read_table(
    source: Source,
    *,
    base: Path | None = None,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
) -> Table:
    """The table at ``source``: the columns ``columns`` in that order (all, in source order, when
    None), plus ``id_column`` after them when it is not among them, read as text."""
    if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
        raise DataError("columns must be a list of column names")
    kind = _kind(source)
    if kind == "file":
        p, fmt, where = _file(source, base)
        if fmt == "csv":
            return csv.read_csv(p, csv.SUFFIXES[p.suffix.lower()], where, columns, id_column)
        return parquet.read_parquet(p, where, columns, id_column)
    if kind == "sql":
        return read_sql(source, base, columns, id_column)
    return read_frame(source, columns, id_column)
