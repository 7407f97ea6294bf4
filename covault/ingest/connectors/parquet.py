"""Parquet files (``pyarrow``): the selected columns only, one after the other, read in record
batches into arrays allocated once (no copy of the whole table beyond the selected columns; the
file is read through a small buffer, not a whole column chunk at a time)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from covault.ingest.connectors.arrow import kind_of, read_arrays
from covault.ingest.connectors.common import check_names, optional_import, selection
from covault.ingest.connectors.csv import check_readable
from covault.ingest.errors import DataError
from covault.ingest.table import Table

SUFFIXES = frozenset({".parquet", ".pq"})
BATCH_ROWS = 65536
READ_BUFFER = 1 << 16


def _open(p: Path, source: str):  # -> (pyarrow, pyarrow.parquet.ParquetFile)
    check_readable(p, source)
    pa = optional_import("pyarrow", source, "parquet")
    pq = optional_import("pyarrow.parquet", source, "parquet")
    try:
        return pa, pq.ParquetFile(p, buffer_size=READ_BUFFER, pre_buffer=False)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{source} is not a readable Parquet file: {exc}") from None


def parquet_columns(p: Path, source: str) -> list[str]:
    """The column names in the file's schema (its footer only is read)."""
    _, f = _open(p, source)
    return [str(n) for n in f.schema_arrow.names]


def read_parquet(
    p: Path,
    source: str,
    columns: Sequence[str] | None,
    id_column: str | None,
    *,
    batch_rows: int = BATCH_ROWS,
) -> Table:
    """The table of the Parquet file ``p``; ``batch_rows`` rows are decoded at a time."""
    pa, f = _open(p, source)
    schema = f.schema_arrow
    names = [str(n) for n in schema.names]
    check_names(source, names)
    n_rows = f.metadata.num_rows
    if not names or n_rows == 0:
        raise DataError(f"{source} is empty (no columns or no rows)")
    idx = selection(source, names, columns, id_column)
    chosen = [names[j] for j in idx]
    kinds = [kind_of(pa, source, names[j], schema.field(j).type, is_id=names[j] == id_column) for j in idx]

    def arrays_of(name: str) -> Iterator[Any]:
        for batch in f.iter_batches(batch_size=batch_rows, columns=[name], use_threads=False):
            yield batch.column(0)

    try:
        return read_arrays(pa, source, chosen, kinds, n_rows, arrays_of, id_column)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{source} is not a readable Parquet file: {exc}") from None
