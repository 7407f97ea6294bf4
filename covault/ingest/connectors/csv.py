"""CSV and TSV files: read in chunks of rows with the ``csv`` module, numbers parsed column by
column into float64 arrays.

A column is ``number`` when every cell is a number or missing (:data:`MISSING_TOKENS`), ``bool``
when every present cell is ``true`` or ``false`` (any case), else ``text``. Only the chunks of
the selected columns are kept, as arrays; a column that turns out to hold text after chunks of
numbers is read again as text at the end (one more pass over the file).
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from covault.ingest.connectors.common import (
    check_finite,
    check_ids,
    check_names,
    is_missing_token,
    selection,
    text_array,
)
from covault.ingest.errors import DataError
from covault.ingest.table import Column, Table

SUFFIXES = {".csv": ",", ".txt": ",", ".tsv": "\t"}
CHUNK_ROWS = 8192
_BOOLS = frozenset({"true", "false"})


def _reason(exc: OSError) -> str:
    """The system's reason for ``exc`` (``permission denied``, ``input/output error``)."""
    return exc.strerror.lower() if exc.strerror else str(exc)


def check_readable(p: Path, source: str) -> None:
    """DataError unless ``p`` is a regular file this process may read."""
    try:
        if not p.exists():
            raise DataError(f"{source} not found")
        if p.is_dir():
            raise DataError(f"{source} is a directory, not a file")
        if not p.is_file():
            raise DataError(f"{source} is not a regular file")
        with p.open("rb"):
            pass
    except OSError as exc:
        raise DataError(f"{source} cannot be read: {_reason(exc)}") from None


def _blank(row: list[str]) -> bool:
    return not any(cell.strip() for cell in row)


def _records(p: Path, delimiter: str, source: str) -> Iterator[list[str] | list[list[str]]]:
    """The header's stripped names, then chunks of data rows (blank lines skipped, widths checked)."""
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next((r for r in reader if not _blank(r)), None)
            if header is None:
                raise DataError(f"{source} is empty (expected a header line and data rows)")
            names = [c.strip() for c in header]
            check_names(source, names)
            yield names
            width, done = len(names), 0
            while rows := list(itertools.islice(reader, CHUNK_ROWS)):
                if any(len(r) != width or not r[0] or r[0].isspace() for r in rows):
                    kept = []
                    for r in rows:
                        if _blank(r):
                            continue
                        if len(r) != width:
                            raise DataError(
                                f"{source}: row {done + len(kept) + 1} has {len(r)} fields, the header has {width}"
                            )
                        kept.append(r)
                    rows = kept
                done += len(rows)
                if rows:
                    yield rows
            if not done:
                raise DataError(f"{source} has a header but no data rows")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise DataError(f"{source} cannot be read: {_reason(exc)}") from None
    except csv.Error as exc:
        raise DataError(f"{source} is not a readable CSV file: {exc}") from None


def csv_columns(p: Path, delimiter: str, source: str) -> list[str]:
    """The header's column names."""
    check_readable(p, source)
    records = _records(p, delimiter, source)
    names = next(records)
    records.close()
    return names  # type: ignore[return-value]


def _parse(cells: Sequence[str]) -> tuple[str | None, np.ndarray]:
    """``(kind, values)`` of one chunk of a column; kind None when every cell is missing."""
    n = len(cells)
    try:
        values = np.fromiter(map(float, cells), dtype=np.float64, count=n)
    except ValueError:
        pass
    else:
        return (None if np.isnan(values).all() else "number"), values
    stripped = [c.strip() for c in cells]
    gone = np.fromiter(map(is_missing_token, stripped), dtype=bool, count=n)
    present = [t for t, g in zip(stripped, gone.tolist()) if not g]
    values = np.full(n, math.nan)
    if not present:
        return None, values
    try:
        values[~gone] = np.fromiter(map(float, present), dtype=np.float64, count=len(present))
        return "number", values
    except ValueError:
        pass
    lower = [t.lower() for t in present]
    if set(lower) <= _BOOLS:
        values[~gone] = np.fromiter((t == "true" for t in lower), dtype=np.float64, count=len(lower))
        return "bool", values
    return "text", text_array(stripped)


def read_csv(
    p: Path, delimiter: str, source: str, columns: Sequence[str] | None, id_column: str | None
) -> Table:
    """The table of the CSV file ``p`` (module docstring)."""
    check_readable(p, source)
    records = _records(p, delimiter, source)
    names: list[str] = next(records)  # type: ignore[assignment]
    idx = selection(source, names, columns, id_column)
    chunks: list[list[np.ndarray]] = [[] for _ in idx]
    kinds: list[str | None] = [None] * len(idx)
    again: set[int] = set()  # positions in idx to read again as text
    for rows in records:
        cols = list(zip(*rows))
        for k, j in enumerate(idx):
            cells = cols[j]
            if names[j] == id_column or kinds[k] == "text":
                chunks[k].append(text_array(cells, tokens=names[j] != id_column))
                continue
            if k in again:
                continue
            kind, values = _parse(cells)
            if kind is not None and kinds[k] not in (None, kind):
                again.add(k)
                chunks[k] = []
                continue
            if kind == "text" and chunks[k]:  # all missing so far
                chunks[k] = [np.full(sum(map(len, chunks[k])), None, dtype=object)]
            kinds[k] = kind or kinds[k]
            chunks[k].append(values)
    if again:
        _read_text(p, delimiter, source, [idx[k] for k in sorted(again)], sorted(again), chunks)
    out = []
    for k, j in enumerate(idx):
        name = names[j]
        values = np.concatenate(chunks[k])
        chunks[k] = []
        if name == id_column:
            check_ids(source, name, values)
            out.append(Column(name, "text", values))
        elif k in again or kinds[k] == "text":
            out.append(Column(name, "text", values))
        else:
            check_finite(source, name, values)
            out.append(Column(name, kinds[k] or "number", values))  # type: ignore[arg-type]
    return Table(out, source)


def _read_text(
    p: Path, delimiter: str, source: str, cols: list[int], slots: list[int], chunks: list[list[np.ndarray]]
) -> None:
    """Read the columns ``cols`` again, as text, into ``chunks[slots]``."""
    records = _records(p, delimiter, source)
    next(records)
    for rows in records:
        for j, k in zip(cols, slots):
            chunks[k].append(text_array([r[j] for r in rows]))  # type: ignore[index]
