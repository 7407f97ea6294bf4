"""A data owner's table in memory: named, typed columns with missing cells.

Three kinds of column: ``number`` (float64, NaN where a cell is missing), ``bool`` (float64 0/1,
NaN where missing) and ``text`` (an object array of stripped strings, None where missing).
Connectors (:mod:`covault.ingest.connectors`) build tables; the policy and the transforms read
and replace columns. Errors name the table's source and the column, never a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from covault.ingest.errors import DataError

Kind = Literal["number", "bool", "text"]
KINDS: tuple[str, ...] = ("number", "bool", "text")


@dataclass(frozen=True, eq=False)
class Column:
    """One column: ``name``, ``kind`` and ``values`` (module docstring for the encodings)."""

    name: str
    kind: Kind
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"column {self.name!r}: unknown kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.values.ndim != 1:
            raise DataError(f"column {self.name!r}: values must be one-dimensional, got {self.values.shape}")
        want = object if self.kind == "text" else np.float64
        if self.values.dtype != want:
            raise DataError(
                f"column {self.name!r}: a {self.kind} column holds {np.dtype(want)}, got {self.values.dtype}"
            )

    @property
    def missing(self) -> np.ndarray:
        """Boolean mask of the missing cells."""
        if self.kind == "text":
            return np.fromiter((v is None for v in self.values), dtype=bool, count=len(self.values))
        return np.isnan(self.values)

    def __len__(self) -> int:
        return len(self.values)


class Table:
    """Columns of equal length with unique names, in source order; ``source`` says where they came
    from (``data file bank_a.csv``), for messages."""

    def __init__(self, columns: Sequence[Column], source: str):
        self.source = source
        self._cols: dict[str, Column] = {}
        for c in columns:
            if c.name in self._cols:
                raise DataError(f"{source}: column {c.name!r} appears twice")
            self._cols[c.name] = c
        lengths = {len(c) for c in columns}
        if len(lengths) > 1:
            raise DataError(f"{source}: columns of different lengths {sorted(lengths)}")
        self.n_rows = lengths.pop() if lengths else 0

    @property
    def names(self) -> list[str]:
        return list(self._cols)

    @property
    def columns(self) -> list[Column]:
        return list(self._cols.values())

    def __getitem__(self, name: str) -> Column:
        try:
            return self._cols[name]
        except KeyError:
            raise DataError(
                f"{self.source} has no column {name!r} (columns: {', '.join(self._cols)})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def __len__(self) -> int:
        return self.n_rows

    def select(self, names: Sequence[str]) -> Table:
        """The columns ``names``, in that order."""
        return Table([self[n] for n in names], self.source)

    def drop(self, names: Iterable[str]) -> Table:
        """Every column but ``names``."""
        gone = set(names)
        return Table([c for c in self._cols.values() if c.name not in gone], self.source)

    def replace(self, column: Column) -> Table:
        """This table with ``column`` in place of the column of the same name."""
        old = self[column.name]
        if len(column) != len(old):
            raise DataError(
                f"{self.source}: column {column.name!r} replaced by {len(column)} rows, has {len(old)}"
            )
        return Table([column if c.name == column.name else c for c in self._cols.values()], self.source)

    def take(self, rows: np.ndarray) -> Table:
        """The rows at the integer indices ``rows``, in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        return Table([Column(c.name, c.kind, c.values[idx]) for c in self._cols.values()], self.source)

    def numeric(self, names: Sequence[str]) -> np.ndarray:
        """float64 ``(rows, len(names))`` of number and bool columns (NaN where missing)."""
        out = np.empty((self.n_rows, len(names)), dtype=np.float64)
        for j, n in enumerate(names):
            c = self[n]
            if c.kind == "text":
                raise DataError(f"{self.source}: column {n!r} holds text, not numbers")
            out[:, j] = c.values
        return out
