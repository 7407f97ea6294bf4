"""Data frames passed from Python: a pandas ``DataFrame`` or a pyarrow ``Table``.

They are recognised by the module of their type, so neither library is imported to check. A
pyarrow table is read batch by batch like a Parquet file; a pandas column by its dtype: numbers
(nullable ones too) -> ``number``, booleans -> ``bool``, dates -> ISO text, objects by their values
(:func:`covault.ingest.connectors.common.python_column`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from covault.ingest.connectors.arrow import kind_of, read_arrays
from covault.ingest.connectors.common import (
    check_finite,
    check_names,
    optional_import,
    python_column,
    python_ids,
    selection,
)
from covault.ingest.errors import DataError
from covault.ingest.table import Column, Table


def frame_kind(obj: object) -> str | None:
    """``"pandas"`` or ``"arrow"`` for a pandas DataFrame or pyarrow Table, else None."""
    t = type(obj)
    module = t.__module__.split(".")[0]
    if module == "pandas" and t.__name__ == "DataFrame":
        return "pandas"
    if module == "pyarrow" and t.__name__ == "Table":
        return "arrow"
    return None


def describe_frame(obj: object) -> str:
    """``pandas DataFrame`` or ``pyarrow Table``, for messages."""
    return "pandas DataFrame" if frame_kind(obj) == "pandas" else "pyarrow Table"


def frame_columns(obj: Any) -> list[str]:
    """The column names of the frame."""
    names = obj.column_names if frame_kind(obj) == "arrow" else list(obj.columns)
    return [str(n) for n in names]


def read_frame(obj: Any, columns: Sequence[str] | None, id_column: str | None) -> Table:
    """The table of the frame ``obj`` (module docstring)."""
    source = describe_frame(obj)
    names = frame_columns(obj)
    check_names(source, names)
    if not names or len(obj) == 0:
        raise DataError(f"{source} is empty (no columns or no rows)")
    idx = selection(source, names, columns, id_column)
    if frame_kind(obj) == "arrow":
        pa = optional_import("pyarrow", source, "parquet")
        chosen = [names[j] for j in idx]
        kinds = [
            kind_of(pa, source, n, obj.schema.field(j).type, is_id=n == id_column)
            for n, j in zip(chosen, idx)
        ]
        return read_arrays(pa, source, chosen, kinds, obj.num_rows, lambda n: obj.column(n).chunks, id_column)
    pd = optional_import("pandas", source, "pandas")
    return Table([_pandas_column(pd, source, names[j], obj.iloc[:, j], id_column) for j in idx], source)


def _pandas_column(pd: Any, source: str, name: str, s: Any, id_column: str | None) -> Column:
    api = pd.api.types
    if name == id_column:
        return Column(name, "text", python_ids(source, name, s.astype(object).tolist()))
    if api.is_bool_dtype(s.dtype):
        return Column(name, "bool", s.to_numpy(dtype=np.float64, na_value=np.nan))
    if api.is_numeric_dtype(s.dtype):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        check_finite(source, name, values)
        return Column(name, "number", values)
    if api.is_datetime64_any_dtype(s.dtype):
        values = np.empty(len(s), dtype=object)
        values[:] = [None if pd.isna(v) else v.isoformat() for v in s.tolist()]
        return Column(name, "text", values)
    cells = [None if v is pd.NA or v is pd.NaT else v for v in s.astype(object).tolist()]
    return python_column(source, name, cells)
