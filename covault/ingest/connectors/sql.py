"""SQL databases through SQLAlchemy 2 (core): ``{url, table}`` or ``{url, query}``.

``url`` is a SQLAlchemy URL (``sqlite:///bank.db``, ``postgresql+psycopg://user@host/db``); a
relative SQLite path is relative to ``base``. ``password_env`` names the environment variable
that holds the password (it is never written in a file). ``table`` (optionally with ``schema``)
is quoted as an identifier; ``query`` must be one ``SELECT`` (or ``WITH ... SELECT``) and runs in a
transaction that is rolled back (read-only on PostgreSQL). Rows are streamed in batches
(server-side cursors where the driver has them); each batch becomes typed arrays at once, so at
most one batch is held as Python objects. Messages show the URL with its password masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covault.ingest.connectors.common import (
    merge_chunks,
    optional_import,
    python_column,
    python_ids,
    selection,
)
from covault.ingest.errors import DataError
from covault.ingest.table import Column, Table

KEYS = frozenset({"url", "table", "schema", "query", "password_env"})
BATCH_ROWS = 10000
_SELECT = re.compile(r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(select|with)\b", re.IGNORECASE | re.DOTALL)


def _check_spec(spec: dict) -> None:
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise DataError(f"SQL source: unknown key {unknown[0]!r} (keys: {', '.join(sorted(KEYS))})")
    if not isinstance(spec.get("url"), str) or not spec["url"]:
        raise DataError("SQL source: 'url' (a SQLAlchemy URL such as sqlite:///bank.db) is required")
    if ("table" in spec) == ("query" in spec):
        raise DataError("SQL source: give exactly one of 'table' and 'query'")
    for key in ("table", "query", "schema", "password_env"):
        if key in spec and (not isinstance(spec[key], str) or not spec[key].strip()):
            raise DataError(f"SQL source: {key!r} must be a non-empty string")


def _url(sa: Any, spec: dict, base: Path | None) -> Any:
    """The SQLAlchemy URL of ``spec``: a relative SQLite path made relative to ``base``; the
    password taken from ``password_env`` when given."""
    try:
        url = sa.engine.make_url(spec["url"])
    except sa.exc.ArgumentError:
        raise DataError("SQL source: 'url' is not a valid SQLAlchemy URL") from None
    db = url.database
    if url.get_backend_name() == "sqlite" and db and db != ":memory:" and not db.startswith("file:"):
        path = Path(db)
        if not path.is_absolute() and base is not None:
            url = url.set(database=str(Path(base) / path))
    var = spec.get("password_env")
    if var is not None:
        password = os.environ.get(var)
        if password is None:
            raise DataError(
                f"{_describe(url, spec)}: the environment variable {var!r} (password_env) is not set"
            )
        url = url.set(password=password)
    return url


def _describe(url: Any, spec: dict) -> str:
    shown = url.render_as_string(hide_password=True)
    if "table" in spec:
        table = f"{spec['schema']}.{spec['table']}" if "schema" in spec else spec["table"]
        return f"table {table!r} at {shown}"
    return f"query at {shown}"


def describe_sql(spec: dict, base: Path | None) -> str:
    """``table 'tx' at postgresql+psycopg://u:***@host/db`` (or ``query at ...``)."""
    _check_spec(spec)
    sa = optional_import("sqlalchemy", "a SQL source", "sql")
    return _describe(_url(sa, spec, base), spec)


def _reason(exc: BaseException, url: Any) -> str:
    """The database's own words for ``exc`` (first line), the password cut out."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if url.password:
        line = line.replace(str(url.password), "***")
    return line


class _Connection:
    """An open, read-only connection to the source (a context manager)."""

    def __init__(self, spec: dict, base: Path | None):
        _check_spec(spec)
        self.sa = sa = optional_import("sqlalchemy", "a SQL source", "sql")
        self.spec = spec
        self.url = _url(sa, spec, base)
        self.source = _describe(self.url, spec)
        db = self.url.database
        if self.url.get_backend_name() == "sqlite" and db and db != ":memory:" and not db.startswith("file:"):
            if not Path(db).is_file():
                raise DataError(f"{self.source}: database file {db} not found")
        try:
            self.engine = sa.create_engine(self.url)
        except ImportError as exc:
            extra = "postgres" if self.url.get_backend_name() == "postgresql" else "sql"
            raise DataError(
                f"reading {self.source} needs the database driver {exc.name or self.url.drivername}: "
                f"pip install 'covault[{extra}]'"
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            raise DataError(f"{self.source}: {_reason(exc, self.url)}") from None

    def __enter__(self) -> _Connection:
        options: dict[str, Any] = {"stream_results": True, "yield_per": BATCH_ROWS}
        if self.url.get_backend_name() == "postgresql":
            options["postgresql_readonly"] = True
        try:
            self.conn = self.engine.connect().execution_options(**options)
        except self.sa.exc.SQLAlchemyError as exc:
            self.engine.dispose()
            raise DataError(f"{self.source}: cannot connect: {_reason(exc, self.url)}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()  # rolls back
        self.engine.dispose()

    def statement(self, columns: Sequence[str] | None) -> Any:
        """The SELECT of the source, of ``columns`` only (for a table) when given."""
        sa, spec = self.sa, self.spec
        if "query" in spec:
            if not _SELECT.match(spec["query"]) or ";" in spec["query"].strip().rstrip(";"):
                raise DataError(f"{self.source}: the query must be one SELECT statement")
            return sa.text(spec["query"])
        table = sa.table(spec["table"], schema=spec.get("schema"))
        cols = [sa.column(c) for c in columns] if columns is not None else [sa.text("*")]
        return sa.select(*cols).select_from(table)

    def table_names(self) -> list[str]:
        """The names of the table's columns (DataError naming the tables there when it is absent)."""
        inspector = self.sa.inspect(self.conn)
        schema, name = self.spec.get("schema"), self.spec["table"]
        if not inspector.has_table(name, schema=schema):
            tables = inspector.get_table_names(schema=schema)
            raise DataError(f"{self.source}: no such table (tables: {', '.join(tables) or 'none'})")
        return [str(c["name"]) for c in inspector.get_columns(name, schema=schema)]

    def execute(self, columns: Sequence[str] | None) -> Any:
        """The streaming result of :meth:`statement`."""
        return self.conn.execute(self.statement(columns))

    def error(self, exc: BaseException) -> DataError:
        """The DataError of a failed statement."""
        return DataError(f"{self.source}: {_reason(exc, self.url)}")


def sql_columns(spec: dict, base: Path | None) -> list[str]:
    """The column names of the table or query (the query is started, no row fetched)."""
    with _Connection(spec, base) as c:
        try:
            if "table" in spec:
                return c.table_names()
            result = c.execute(None)
            names = [str(k) for k in result.keys()]
            result.close()
            return names
        except c.sa.exc.SQLAlchemyError as exc:
            raise c.error(exc) from None


def read_sql(spec: dict, base: Path | None, columns: Sequence[str] | None, id_column: str | None) -> Table:
    """The table of the SQL source ``spec`` (module docstring)."""
    with _Connection(spec, base) as c:
        try:
            return _read(c, columns, id_column)
        except c.sa.exc.SQLAlchemyError as exc:
            raise c.error(exc) from None


def _read(c: _Connection, columns: Sequence[str] | None, id_column: str | None) -> Table:
    source = c.source
    if "table" in c.spec:
        names = c.table_names()
        idx = selection(source, names, columns, id_column)
        chosen = [names[j] for j in idx]
        result = c.execute(chosen)
        idx = list(range(len(chosen)))
    else:
        result = c.execute(None)
        names = [str(k) for k in result.keys()]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise DataError(f"{source}: the query returns column {twice!r} twice")
        idx = selection(source, names, columns, id_column)
        chosen = [names[j] for j in idx]
    chunks: list[list[Column]] = [[] for _ in idx]
    row = 0
    for batch in result.partitions(BATCH_ROWS):
        cols = list(zip(*batch))
        for k, j in enumerate(idx):
            name = chosen[k]
            if name == id_column:
                chunks[k].append(Column(name, "text", python_ids(source, name, cols[j], first_row=row)))
            else:
                chunks[k].append(python_column(source, name, cols[j], first_row=row))
        row += len(batch)
    result.close()
    if row == 0:
        raise DataError(f"{source} is empty (no rows)")
    return Table([merge_chunks(name, ch) for name, ch in zip(chosen, chunks)], source)
