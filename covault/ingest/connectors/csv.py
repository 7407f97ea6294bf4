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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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


def _clean(rows: list[list[str]], width: int, done: int, source: str) -> list[list[str]]:
    """``rows`` without blank lines; DataError for a row of another width than the header's."""
    if all(len(r) == width and r[0] and not r[0].isspace() for r in rows):
        return rows
    kept = []
    for r in rows:
        if _blank(r):
            continue
        if len(r) != width:
            raise DataError(
                f"{source}: row {done + len(kept) + 1} has {len(r)} fields, the header has {width}"
            )
        kept.append(r)
    return kept


def _records(p: Path, delimiter: str, source: str) -> Iterator[Any]:
    """The header's stripped names, then chunks of data lines: a list of raw lines while the
    file has no quote character (a line is then a row), else a list of parsed rows."""
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next((r for r in reader if not _blank(r)), None)
            if header is None:
                raise DataError(f"{source} is empty (expected a header line and data rows)")
            names = [c.strip() for c in header]
            check_names(source, names)
            yield names
            quoted = False
            while True:
                if not quoted:
                    lines = list(itertools.islice(fh, CHUNK_ROWS))
                    if not lines:
                        break
                    if not any('"' in line for line in lines):
                        yield lines
                        continue
                    quoted = True  # records may span lines from here on
                    reader = csv.reader(itertools.chain(lines, fh), delimiter=delimiter)
                rows = list(itertools.islice(reader, CHUNK_ROWS))
                if not rows:
                    break
                yield rows
    except UnicodeDecodeError as exc:
        raise DataError(f"{source} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise DataError(f"{source} cannot be read: {_reason(exc)}") from None
    except csv.Error as exc:
        raise DataError(f"{source} is not a readable CSV file: {exc}") from None


def _chunks(
    p: Path, delimiter: str, source: str, wanted: Callable[[], tuple[list[int], bool]]
) -> Iterator[Any]:
    """The header, then per chunk ``(rows, n, numbers, cols)``: ``n`` data rows (blank lines
    skipped, widths checked) and, where a chunk of plain lines parses as numbers in the columns
    ``cols`` (``wanted()[0]``), those columns as a float64 matrix ``numbers`` (else None); ``rows``,
    the rows as lists of cells, is None when numbers were parsed and ``wanted()[1]`` (only the
    numeric columns are needed) holds."""
    records = _records(p, delimiter, source)
    names = next(records)
    yield names
    width, done = len(names), 0
    for chunk in records:
        numbers, rows = None, None
        cols, only_numeric = wanted()
        if isinstance(chunk[0], str):  # plain lines, no quotes
            plain = all(line.count(delimiter) == width - 1 for line in chunk)
            if plain and width == 1:
                plain = not any(line.isspace() or not line for line in chunk)
            if plain and cols:
                try:
                    numbers = np.loadtxt(
                        chunk, delimiter=delimiter, comments=None, usecols=cols, dtype=np.float64, ndmin=2
                    )
                except ValueError:
                    numbers = None
                if numbers is not None and len(numbers) != len(chunk):
                    numbers = None
            if numbers is None or not only_numeric:
                if plain:
                    rows = _clean(
                        [line.rstrip("\r\n").split(delimiter) for line in chunk], width, done, source
                    )
                else:
                    rows = _clean(list(csv.reader(chunk, delimiter=delimiter)), width, done, source)
        else:
            rows = _clean(chunk, width, done, source)
        n = len(numbers) if numbers is not None else len(rows)  # type: ignore[arg-type]
        done += n
        if n:
            yield rows, n, numbers, cols
    if not done:
        raise DataError(f"{source} has a header but no data rows")


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


class _Grow:
    """A column's values, appended chunk by chunk to one array that grows by half when full (no
    list of chunks to concatenate at the end: the peak stays near the column's size)."""

    def __init__(self, first: np.ndarray | None = None):
        self._buf: np.ndarray | None = None
        self.n = 0
        if first is not None:
            self.append(first)

    def __len__(self) -> int:
        return self.n

    def append(self, values: np.ndarray) -> None:
        m = len(values)
        if self._buf is None:
            self._buf = np.empty(max(m, 1 << 16), dtype=values.dtype)
        elif self.n + m > len(self._buf):
            grown = np.empty(max(self.n + m, len(self._buf) * 3 // 2), dtype=self._buf.dtype)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n : self.n + m] = values
        self.n += m

    def array(self) -> np.ndarray:
        """The values (the buffer is given up)."""
        buf, self._buf = self._buf, None
        if buf is None:
            return np.empty(0, dtype=np.float64)
        return buf if len(buf) == self.n else buf[: self.n].copy()


def read_csv(
    p: Path, delimiter: str, source: str, columns: Sequence[str] | None, id_column: str | None
) -> Table:
    """The table of the CSV file ``p`` (module docstring)."""
    check_readable(p, source)
    chunks: list[_Grow] = []
    kinds: list[str | None] = []
    again: set[int] = set()  # positions in idx to read again as text
    slow: set[int] = set()  # positions with cells numpy does not parse (missing tokens)
    idx: list[int] = []
    names: list[str] = []

    def wanted() -> tuple[list[int], bool]:
        cols = [j for k, j in enumerate(idx) if k not in again | slow and kinds[k] in (None, "number")]
        cols = [j for j in cols if names[j] != id_column]
        return cols, len(cols) == len(idx) - len(again | slow)

    records = _chunks(p, delimiter, source, wanted)
    names = next(records)
    idx = selection(source, names, columns, id_column)
    chunks = [_Grow() for _ in idx]
    kinds = [None] * len(idx)
    for rows, _, numbers, cols in records:
        at = {j: i for i, j in enumerate(cols)} if numbers is not None else {}
        tcols = list(zip(*rows)) if rows is not None else []
        for k, j in enumerate(idx):
            if k in again:
                continue
            if j in at:
                values = numbers[:, at[j]]  # type: ignore[index]
                kind = None if np.isnan(values).all() else "number"
            elif names[j] == id_column or kinds[k] == "text":
                chunks[k].append(text_array(tcols[j], tokens=names[j] != id_column))
                continue
            else:
                kind, values = _parse(tcols[j])
                if kind == "number" and np.isnan(values).any():
                    slow.add(k)
            if kind is not None and kinds[k] not in (None, kind):
                again.add(k)
                chunks[k] = _Grow()
                continue
            if kind == "text" and chunks[k]:  # all missing so far
                chunks[k] = _Grow(np.full(len(chunks[k]), None, dtype=object))
            kinds[k] = kind or kinds[k]
            chunks[k].append(values)
    if again:
        _read_text(p, delimiter, source, [idx[k] for k in sorted(again)], sorted(again), chunks)
    out = []
    for k, j in enumerate(idx):
        name = names[j]
        values = chunks[k].array()
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
    p: Path, delimiter: str, source: str, cols: list[int], slots: list[int], chunks: list[_Grow]
) -> None:
    """Read the columns ``cols`` again, as text, into ``chunks[slots]``."""
    records = _chunks(p, delimiter, source, lambda: ([], False))
    next(records)
    for rows, _, _, _ in records:
        for j, k in zip(cols, slots):
            chunks[k].append(text_array([r[j] for r in rows]))  # type: ignore[index]
