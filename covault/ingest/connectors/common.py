"""What every connector shares: missing-cell tokens, column selection, the kinds of Python
values, optional imports and the checks whose messages name the source, column and row."""

from __future__ import annotations

import datetime as dt
import difflib
import importlib
import math
import uuid
from collections.abc import Sequence
from decimal import Decimal
from types import ModuleType

import numpy as np

from covault.ingest.errors import DataError
from covault.ingest.table import Column

#: Cells that mean "missing" (compared case-insensitively after stripping).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
_LONGEST_TOKEN = max(len(t) for t in MISSING_TOKENS)


def is_missing_token(text: str) -> bool:
    """Whether the stripped cell ``text`` is a missing-cell token."""
    return len(text) <= _LONGEST_TOKEN and text.lower() in MISSING_TOKENS


def optional_import(module: str, source: str, extra: str) -> ModuleType:
    """Import ``module`` or raise a DataError saying ``pip install 'covault[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            f"reading {source} needs {module.split('.')[0]}: pip install 'covault[{extra}]'"
        ) from None


def check_names(source: str, names: Sequence[str]) -> None:
    """DataError for an empty or repeated column name."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{source}: column {i + 1} has an empty name in the header")
        if name in seen:
            raise DataError(f"{source}: column {name!r} appears twice in the header")
        seen.add(name)


def selection(
    source: str, names: Sequence[str], columns: Sequence[str] | None, id_column: str | None
) -> list[int]:
    """Indices into ``names`` of the columns to read, in table order: ``columns`` (all when None),
    then ``id_column`` when it is not among them. A missing name is a DataError naming the source,
    the column and its near misses."""
    wanted = list(names) if columns is None else list(columns)
    if id_column is not None and id_column not in wanted:
        wanted.append(id_column)
    if len(set(wanted)) != len(wanted):
        twice = next(c for c in wanted if wanted.count(c) > 1)
        raise DataError(f"{source}: column {twice!r} is asked for twice")
    index = {n: i for i, n in enumerate(names)}
    for c in wanted:
        if c not in index:
            what = "id column" if c == id_column else "column"
            near = difflib.get_close_matches(c, list(names), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
            raise DataError(f"{source} has no {what} {c!r} (columns: {', '.join(names)}){hint}")
    return [index[c] for c in wanted]


def check_finite(source: str, name: str, values: np.ndarray, first_row: int = 0) -> None:
    """DataError naming the first row of ``values`` (data row ``first_row + 1`` onwards) that is
    infinite."""
    bad = np.flatnonzero(np.isinf(values))
    if bad.size:
        raise DataError(f"{source}: column {name!r}, row {first_row + bad[0] + 1}: infinite value")


def check_ids(source: str, name: str, ids: np.ndarray) -> None:
    """DataError naming the first row whose id is missing."""
    for i, v in enumerate(ids):
        if v is None:
            raise DataError(f"{source}: id column {name!r}, row {i + 1}: empty id")


def text_array(cells: Sequence[str], *, tokens: bool = True) -> np.ndarray:
    """Object array of the stripped ``cells``; missing tokens (only ``""`` when not ``tokens``)
    become None."""
    out = np.empty(len(cells), dtype=object)
    if tokens:
        out[:] = [None if is_missing_token(t := c.strip()) else t for c in cells]
    else:
        out[:] = [c.strip() or None for c in cells]
    return out


# Python values (SQL rows, object columns of data frames) --------------------------------------

_TEXT_TYPES = (str, uuid.UUID, dt.date, dt.time, dt.datetime)


def _kind_of(v: object) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool | np.bool_):
        return "bool"
    if isinstance(v, int | float | Decimal | np.integer | np.floating):
        return "number"
    if isinstance(v, _TEXT_TYPES):
        return "text"
    return type(v).__name__


def _text_of(v: object) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, Decimal | int | np.integer):
        return str(v)
    return (str(v).strip() or None) if not isinstance(v, float) else repr(v)


def python_column(source: str, name: str, values: Sequence[object], *, first_row: int = 0) -> Column:
    """The column of the Python ``values`` (None or NaN: missing): numbers (bools count as 0/1
    among numbers) -> ``number``, only bools -> ``bool``, otherwise ``text`` (dates and times in
    ISO form). A type none of these (bytes, lists) is a DataError naming the column and row."""
    kinds = set()
    for i, v in enumerate(values):
        k = _kind_of(v)
        if k is not None and k not in ("number", "bool", "text"):
            raise DataError(
                f"{source}: column {name!r}, row {first_row + i + 1}: values of type {k} are not "
                "supported (numbers, booleans, text, dates)"
            )
        kinds.add(k)
    kinds.discard(None)
    if kinds <= {"number", "bool"}:
        arr = np.fromiter(
            (math.nan if _kind_of(v) is None else float(v) for v in values),  # type: ignore[arg-type]
            dtype=np.float64,
            count=len(values),
        )
        check_finite(source, name, arr, first_row)
        return Column(name, "bool" if kinds == {"bool"} else "number", arr)
    out = np.empty(len(values), dtype=object)
    out[:] = [_text_of(v) for v in values]
    return Column(name, "text", out)


def python_ids(source: str, name: str, values: Sequence[object], *, first_row: int = 0) -> np.ndarray:
    """The ids ``values`` as text (integers as their digits); DataError for a missing id or one
    that is neither text nor an integer."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, float | Decimal | np.floating):
            v = None if math.isnan(v) else int(v) if float(v).is_integer() else v
        if isinstance(v, bool | np.bool_) or not isinstance(
            v, str | int | np.integer | uuid.UUID | type(None)
        ):
            raise DataError(
                f"{source}: id column {name!r}, row {first_row + i + 1}: ids must be strings or integers"
            )
        out[i] = None if v is None else (str(v).strip() or None)
        if out[i] is None:
            raise DataError(f"{source}: id column {name!r}, row {first_row + i + 1}: empty id")
    return out


def number_text(values: np.ndarray, kind: str) -> np.ndarray:
    """Object array of ``values`` of a number or bool column as text (integral numbers as their
    digits, bools as ``true``/``false``, NaN as None): a column that turns out to hold text."""
    out = np.empty(len(values), dtype=object)
    if kind == "bool":
        out[:] = [None if math.isnan(v) else ("true" if v else "false") for v in values.tolist()]
    else:
        out[:] = [
            None if math.isnan(v) else str(int(v)) if v.is_integer() else repr(v) for v in values.tolist()
        ]
    return out


def merge_chunks(name: str, chunks: Sequence[Column]) -> Column:
    """One column of the chunks of one column read in batches: the same kind throughout, or
    numbers and bools (numbers), or text with any (numbers and bools as :func:`number_text`)."""
    # a chunk of numbers that are all missing says nothing about the column's kind
    kinds = {c.kind for c in chunks if c.kind == "text" or not np.isnan(c.values).all()} or {"number"}
    if not chunks:
        return Column(name, "number", np.empty(0, dtype=np.float64))
    if len(kinds) == 1 or "text" not in kinds:
        kind = kinds.pop() if len(kinds) == 1 else "number"
        return Column(name, kind, np.concatenate([c.values for c in chunks]))
    parts = [c.values if c.kind == "text" else number_text(c.values, c.kind) for c in chunks]
    return Column(name, "text", np.concatenate(parts))
