"""Arrow arrays into columns (Parquet files and pyarrow tables): integers, floats and decimals
-> ``number``, booleans -> ``bool``, strings, dictionaries of strings, dates and times -> ``text``
(ISO form); other types are a DataError naming the column. Each column is read on its
own, batch by batch, into an array allocated once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from covault.ingest.connectors.common import check_finite, check_ids
from covault.ingest.errors import DataError
from covault.ingest.table import Column, Kind, Table


def kind_of(pa: Any, source: str, name: str, t: Any, *, is_id: bool) -> Kind:
    """The column kind of the Arrow type ``t``; DataError for a type covault does not read."""
    types = pa.types
    if types.is_dictionary(t):
        t = t.value_type
    text = types.is_string(t) or types.is_large_string(t) or getattr(types, "is_string_view", bool)(t)
    if is_id:
        if types.is_integer(t) or text:
            return "text"
        raise DataError(f"{source}: id column {name!r} must hold strings or integers (type {t})")
    if types.is_integer(t) or types.is_floating(t) or types.is_decimal(t):
        return "number"
    if types.is_boolean(t):
        return "bool"
    if text or types.is_temporal(t):
        return "text"
    raise DataError(f"{source}: column {name!r} has type {t}, which covault does not read")


def _text(pa: Any, arr: Any) -> list[str | None]:
    """The cells of ``arr`` as stripped text, None where null or empty."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_temporal(t):
        return [None if v is None else v.isoformat() for v in arr.to_pylist()]
    return [None if v is None else (str(v).strip() or None) for v in arr.to_pylist()]


def read_arrays(
    pa: Any,
    source: str,
    names: Sequence[str],
    kinds: Sequence[Kind],
    n_rows: int,
    arrays_of: Callable[[str], Iterable[Any]],
    id_column: str | None,
) -> Table:
    """The table of the columns ``names`` of ``kinds``, one column after the other, each from the
    Arrow arrays (batches) ``arrays_of(name)`` into an array allocated once."""
    out = []
    for name, kind in zip(names, kinds):
        values = np.empty(n_rows, dtype=object if kind == "text" else np.float64)
        row = 0
        for arr in arrays_of(name):
            n = len(arr)
            if row + n > n_rows:
                raise DataError(f"{source} holds more rows than its metadata says ({n_rows})")
            if kind != "text":
                part = arr.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
                check_finite(source, name, part, row)
                values[row : row + n] = part
            else:
                values[row : row + n] = _text(pa, arr)
            row += n
        if row != n_rows:
            raise DataError(f"{source}: column {name!r} holds {row} rows, the metadata says {n_rows}")
        if name == id_column:
            check_ids(source, name, values)
        out.append(Column(name, kind, values))
    return Table(out, source)
