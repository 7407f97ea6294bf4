"""Connectors of covault.ingest: every source against plaintext expectations, every error."""

from __future__ import annotations

import datetime as dt
import math
import os
import sqlite3
import sys
import uuid
from decimal import Decimal

import numpy as np
import pytest

from covault.ingest import connectors
from covault.ingest.connectors import describe, read_table, source_columns
from covault.ingest.errors import DataError

NAN = math.nan


def _eq(col, expected):
    """The column's values equal ``expected`` (NaN/None where missing)."""
    if col.kind == "text":
        assert col.values.tolist() == expected
    else:
        np.testing.assert_array_equal(col.values, np.array(expected, dtype=np.float64))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# CSV -------------------------------------------------------------------------------------------


def test_csv_kinds_missing_tokens_and_stripped_text(tmp_path):
    _write(
        tmp_path / "t.csv",
        "id, amount ,flag,country,empty\n"
        "007,1.5,true, DE ,\n"
        "008,NA,False,,NULL\n"
        "\n"
        "009, -2e3 ,TRUE,n/a,none\n"
        "010,NaN,false,FR ,\n",
    )
    t = read_table(tmp_path / "t.csv")
    assert t.names == ["id", "amount", "flag", "country", "empty"]
    assert t.source == f"data file {tmp_path / 't.csv'}"
    assert [t[n].kind for n in t.names] == ["number", "number", "bool", "text", "number"]
    _eq(t["id"], [7, 8, 9, 10])
    _eq(t["amount"], [1.5, NAN, -2000, NAN])
    _eq(t["flag"], [1, 0, 1, 0])
    _eq(t["country"], ["DE", None, None, "FR"])
    _eq(t["empty"], [NAN] * 4)
    assert t["amount"].missing.tolist() == [False, True, False, True]


def test_csv_id_column_is_text_and_columns_in_asked_order(tmp_path):
    _write(tmp_path / "t.tsv", "x\tid\ty\n1\t007\t2\n3\t1e3\t4\n")
    t = read_table("t.tsv", base=tmp_path, columns=["y", "x"], id_column="id")
    assert t.names == ["y", "x", "id"]
    _eq(t["id"], ["007", "1e3"])
    _eq(t["y"], [2, 4])
    t = read_table(tmp_path / "t.tsv", columns=["id", "x"], id_column="id")
    assert t.names == ["id", "x"]


def test_csv_chunks_of_numbers_then_text_read_again_as_text(tmp_path, monkeypatch):
    monkeypatch.setattr(connectors.csv, "CHUNK_ROWS", 2)
    rows = ["1.50,,true,1", "2,,false,NA", "3,,NA,x", "zip,5,true,2", "007,,false,3"]
    _write(tmp_path / "t.csv", "a,b,c,d\n" + "\n".join(rows) + "\n")
    t = read_table(tmp_path / "t.csv")
    assert [t[n].kind for n in t.names] == ["text", "number", "bool", "text"]
    _eq(t["a"], ["1.50", "2", "3", "zip", "007"])
    _eq(t["b"], [NAN, NAN, NAN, 5, NAN])
    _eq(t["c"], [1, 0, NAN, 1, 0])
    _eq(t["d"], ["1", None, "x", "2", "3"])
    monkeypatch.setattr(connectors.csv, "CHUNK_ROWS", 8192)
    t2 = read_table(tmp_path / "t.csv")
    for n in t.names:
        assert t2[n].kind == t[n].kind
        assert t2[n].values.tolist() == t[n].values.tolist() or n in ("b", "c")


def test_csv_numbers_and_bools_mixed_are_text(tmp_path):
    _write(tmp_path / "t.csv", "a\n1\ntrue\n")
    _eq(read_table(tmp_path / "t.csv")["a"], ["1", "true"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"t\.csv is empty \(expected a header line and data rows\)"),
        ("a,b\n\n", r"t\.csv has a header but no data rows"),
        ("a,b\n1,2\n3\n", r"t\.csv: row 2 has 1 fields, the header has 2"),
        ("a,a\n1,2\n", r"t\.csv: column 'a' appears twice in the header"),
        ("a,,b\n1,2,3\n", r"t\.csv: column 2 has an empty name in the header"),
        ("a,b\n1,2\n-inf,3\n", r"t\.csv: column 'a', row 2: infinite value"),
        ("id,b\n1,2\n ,3\n", r"t\.csv: id column 'id', row 2: empty id"),
    ],
)
def test_csv_errors(tmp_path, text, message):
    _write(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match=message):
        read_table(tmp_path / "t.csv", id_column="id" if text.startswith("id") else None)


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"^data file .*nope\.csv not found$"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(DataError, match=r"^data file .*d\.csv is a directory, not a file$"):
        read_table(tmp_path / "d.csv")
    with pytest.raises(DataError, match=r"unsupported type '\.xlsx'; use \.csv, \.tsv or \.parquet"):
        read_table(tmp_path / "a.xlsx")
    (tmp_path / "b.csv").write_bytes(b"a\n\xe9\n")
    with pytest.raises(DataError, match=r"b\.csv is not UTF-8 text"):
        read_table(tmp_path / "b.csv")
    with pytest.raises(DataError, match=r"unsupported data source of type int"):
        read_table(3)


def test_missing_column_names_source_and_near_misses(tmp_path):
    _write(tmp_path / "t.csv", "amount,age\n1,2\n")
    with pytest.raises(
        DataError,
        match=r"^data file .*t\.csv has no column 'amout' \(columns: amount, age\); did you mean 'amount'\?$",
    ):
        read_table(tmp_path / "t.csv", columns=["amout"])
    with pytest.raises(DataError, match=r"t\.csv has no id column 'key'"):
        read_table(tmp_path / "t.csv", id_column="key")
    assert source_columns("t.csv", base=tmp_path) == ["amount", "age"]
    assert describe("t.csv", base=tmp_path) == f"data file {tmp_path / 't.csv'}"


# Parquet ---------------------------------------------------------------------------------------


def _parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "id": pa.array([10, 11, 12, 13, 14], pa.int64()),
            "x": pa.array([1.5, None, 3.0, float("nan"), -1.0]),
            "n": pa.array([1, 2, None, 4, 5], pa.int32()),
            "s": pa.array([" a ", None, "", "b", "c"]),
            "b": pa.array([True, False, None, True, False]),
            "d": pa.array([dt.date(2024, 1, 2), None, None, None, dt.date(2024, 12, 31)]),
            "c": pa.array(["u", "v", "u", None, "v"]).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=3)
    return tmp_path / "t.parquet"


@pytest.mark.parametrize("batch_rows", [2, 65536])
def test_parquet_in_batches(tmp_path, monkeypatch, batch_rows):
    p = _parquet(tmp_path)
    monkeypatch.setattr(connectors.parquet, "BATCH_ROWS", batch_rows)
    t = read_table(p, id_column="id")
    assert t.names == ["id", "x", "n", "s", "b", "d", "c"]
    assert [t[n].kind for n in t.names] == ["text", "number", "number", "text", "bool", "text", "text"]
    _eq(t["id"], ["10", "11", "12", "13", "14"])
    _eq(t["x"], [1.5, NAN, 3, NAN, -1])
    _eq(t["n"], [1, 2, NAN, 4, 5])
    _eq(t["s"], ["a", None, None, "b", "c"])
    _eq(t["b"], [1, 0, NAN, 1, 0])
    _eq(t["d"], ["2024-01-02", None, None, None, "2024-12-31"])
    _eq(t["c"], ["u", "v", "u", None, "v"])
    t = read_table("t.parquet", base=tmp_path, columns=["s", "x"])
    assert t.names == ["s", "x"]
    assert source_columns(p) == ["id", "x", "n", "s", "b", "d", "c"]


def test_parquet_read_batches_small(tmp_path):
    p = _parquet(tmp_path)
    t = connectors.parquet.read_parquet(p, "data file t", ["n"], None, batch_rows=1)
    _eq(t["n"], [1, 2, NAN, 4, 5])


def test_parquet_errors(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"x": [1.0, float("inf")]}), tmp_path / "i.parquet")
    with pytest.raises(DataError, match=r"i\.parquet: column 'x', row 2: infinite value"):
        read_table(tmp_path / "i.parquet")
    pq.write_table(pa.table({"x": pa.array([], pa.float64())}), tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"e\.parquet is empty \(no columns or no rows\)"):
        read_table(tmp_path / "e.parquet")
    pq.write_table(pa.table({"l": [[1], [2]]}), tmp_path / "l.parquet")
    with pytest.raises(DataError, match=r"l\.parquet: column 'l' has type list<element: int64>"):
        read_table(tmp_path / "l.parquet")
    pq.write_table(pa.table({"k": [1.5, 2.5]}), tmp_path / "k.parquet")
    with pytest.raises(DataError, match=r"id column 'k' must hold strings or integers \(type double\)"):
        read_table(tmp_path / "k.parquet", id_column="k")
    pq.write_table(pa.table({"k": [1, None]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n\.parquet: id column 'k', row 2: empty id"):
        read_table(tmp_path / "n.parquet", id_column="k")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"bad\.parquet is not a readable Parquet file"):
        read_table(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"i\.parquet has no column 'y'"):
        read_table(tmp_path / "i.parquet", columns=["y"])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(
        DataError, match=r"^reading data file .*i\.parquet needs pyarrow: pip install 'covault\[parquet\]'$"
    ):
        read_table(tmp_path / "i.parquet")


# SQL -------------------------------------------------------------------------------------------


@pytest.fixture
def bank_db(tmp_path):
    pytest.importorskip("sqlalchemy")
    path = tmp_path / "bank.db"
    with sqlite3.connect(path) as db:
        db.execute(
            'CREATE TABLE "tx" (id INTEGER, amount REAL, "my col" TEXT, flag BOOLEAN, n INTEGER, day TEXT)'
        )
        db.executemany(
            "INSERT INTO tx VALUES (?, ?, ?, ?, ?, ?)",
            [
                (1, 10.5, " a ", 1, 3, "2024-01-02"),
                (2, None, None, 0, None, None),
                (3, -2.0, "", None, 5, "2024-03-04"),
            ],
        )
    db.close()
    return path


def test_sqlite_table_and_query(bank_db, tmp_path, monkeypatch):
    monkeypatch.setattr(connectors.sql, "BATCH_ROWS", 2)
    src = {"url": "sqlite:///bank.db", "table": "tx"}
    t = read_table(src, base=tmp_path, id_column="id")
    assert t.source == f"table 'tx' at sqlite:///{tmp_path / 'bank.db'}"
    assert t.names == ["id", "amount", "my col", "flag", "n", "day"]
    _eq(t["id"], ["1", "2", "3"])
    _eq(t["amount"], [10.5, NAN, -2])
    _eq(t["my col"], ["a", None, None])
    _eq(t["flag"], [1, 0, NAN])  # SQLite hands booleans over as integers: numbers
    assert t["flag"].kind == "number"
    _eq(t["n"], [3, NAN, 5])
    _eq(t["day"], ["2024-01-02", None, "2024-03-04"])
    t = read_table(src, base=tmp_path, columns=["my col", "amount"])
    assert t.names == ["my col", "amount"]
    assert source_columns(src, base=tmp_path) == ["id", "amount", "my col", "flag", "n", "day"]
    q = {
        "url": f"sqlite:///{bank_db}",
        "query": "SELECT amount * 2 AS a2, id = 2 AS two, id FROM tx ORDER BY id",
    }
    t = read_table(q, columns=["id", "a2"])
    assert t.source == f"query at sqlite:///{bank_db}"
    _eq(t["a2"], [21, NAN, -4])
    _eq(t["id"], [1, 2, 3])
    assert source_columns(q) == ["a2", "two", "id"]


def test_sql_values_map_to_kinds():
    from covault.ingest.connectors.common import merge_chunks, python_column

    col = python_column("s", "c", [1, 2.5, Decimal("3.25"), None, float("nan")])
    assert col.kind == "number"
    _eq(col, [1, 2.5, 3.25, NAN, NAN])
    assert python_column("s", "c", [True, None, False]).kind == "bool"
    _eq(
        python_column("s", "c", [dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4), None]),
        ["2024-01-02", "2024-01-02T03:04:00", None],
    )
    u = uuid.uuid4()
    _eq(python_column("s", "c", [u, " x "]), [str(u), "x"])
    with pytest.raises(DataError, match=r"^s: column 'c', row 2: values of type bytes are not supported"):
        python_column("s", "c", [1, b"x"])
    with pytest.raises(DataError, match=r"^s: column 'c', row 12: infinite value"):
        python_column("s", "c", [1.0, float("-inf")], first_row=10)
    merged = merge_chunks(
        "c",
        [
            python_column("s", "c", [1, 2.5]),
            python_column("s", "c", [True]),
            python_column("s", "c", [None]),
            python_column("s", "c", ["x"]),
        ],
    )
    _eq(merged, ["1", "2.5", "true", None, "x"])


def test_sql_errors(bank_db, tmp_path, monkeypatch):
    base = {"url": f"sqlite:///{bank_db}"}
    with pytest.raises(
        DataError, match=r"^table 'nope' at sqlite:///.*bank\.db: no such table \(tables: tx\)$"
    ):
        read_table({**base, "table": "nope"})
    with pytest.raises(DataError, match=r"^query at sqlite:///.*bank\.db: no such table: nope$"):
        read_table({**base, "query": "SELECT * FROM nope"})
    with pytest.raises(DataError, match=r"^query at .*: near \"SELEC\": syntax error$|must be one SELECT"):
        read_table({**base, "query": "SELEC 1"})
    with pytest.raises(DataError, match=r"the query must be one SELECT statement"):
        read_table({**base, "query": "DELETE FROM tx"})
    with pytest.raises(DataError, match=r"the query must be one SELECT statement"):
        read_table({**base, "query": "SELECT 1; DROP TABLE tx"})
    with pytest.raises(DataError, match=r"query at .*: the query returns column 'id' twice"):
        read_table({**base, "query": "SELECT id, id FROM tx"})
    with pytest.raises(DataError, match=r"^query at .*bank\.db is empty \(no rows\)$"):
        read_table({**base, "query": "SELECT * FROM tx WHERE id > 10"})
    with pytest.raises(
        DataError, match=r"table 'tx' at .*bank\.db has no column 'amont'.*did you mean 'amount'"
    ):
        read_table({**base, "table": "tx"}, columns=["amont"])
    with pytest.raises(
        DataError, match=r"^table 'tx' at sqlite:///.*other\.db: database file .*other\.db not found$"
    ):
        read_table({"url": "sqlite:///other.db", "table": "tx"}, base=tmp_path)
    with pytest.raises(DataError, match=r"give exactly one of 'table' and 'query'"):
        read_table({**base})
    with pytest.raises(DataError, match=r"unknown key 'tabel'"):
        read_table({**base, "tabel": "tx"})
    with pytest.raises(DataError, match=r"'url' is not a valid SQLAlchemy URL"):
        read_table({"url": "::", "table": "tx"})
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(
        DataError, match=r"^reading a SQL source needs sqlalchemy: pip install 'covault\[sql\]'$"
    ):
        read_table({**base, "table": "tx"})


def test_sql_password_never_in_a_message(monkeypatch):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    secret = "s3cr3t-Pa55"
    url = f"postgresql+psycopg://bank:{secret}@127.0.0.1:9/db?connect_timeout=2"
    src = {"url": url, "table": "tx"}
    assert describe(src) == "table 'tx' at postgresql+psycopg://bank:***@127.0.0.1:9/db?connect_timeout=2"
    with pytest.raises(DataError) as err:
        read_table(src)
    assert secret not in str(err.value)
    assert str(err.value).startswith("table 'tx' at postgresql+psycopg://bank:***@127.0.0.1:9/db")
    assert "cannot connect" in str(err.value)
    assert err.value.__cause__ is None
    monkeypatch.setenv("COVAULT_TEST_PW", secret)
    src = {
        "url": "postgresql+psycopg://bank@127.0.0.1:9/db?connect_timeout=2",
        "query": "SELECT 1",
        "password_env": "COVAULT_TEST_PW",
    }
    assert secret not in describe(src)
    with pytest.raises(DataError) as err:
        read_table(src)
    assert secret not in str(err.value)
    monkeypatch.delenv("COVAULT_TEST_PW")
    with pytest.raises(
        DataError, match=r"the environment variable 'COVAULT_TEST_PW' \(password_env\) is not set"
    ):
        read_table(src)


def test_sql_missing_driver_message(monkeypatch):
    pytest.importorskip("sqlalchemy")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(
        DataError, match=r"needs the database driver psycopg: pip install 'covault\[postgres\]'"
    ):
        read_table({"url": "postgresql+psycopg://u@127.0.0.1:9/db", "table": "t"})


# PostgreSQL (a real server: .ci/postgres.sh starts one in CI) ---------------------------------


@pytest.fixture
def pg_url():
    url = os.environ.get("COVAULT_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("COVAULT_TEST_POSTGRES_URL is not set in CI (.ci/postgres.sh starts the server)")
        pytest.skip("COVAULT_TEST_POSTGRES_URL is not set (source .ci/postgres.sh to start a server)")
    pytest.importorskip("psycopg")
    return url


@pytest.mark.processes
def test_postgres_table_query_and_password_env(pg_url, monkeypatch):
    sa = pytest.importorskip("sqlalchemy")
    name = f"tx_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SEQUENCE IF NOT EXISTS covault_seq"))
        conn.execute(
            sa.text(
                f'CREATE TABLE "{name}" (id BIGINT, amount NUMERIC(10,2), "Flag" BOOLEAN, country TEXT, day DATE, x DOUBLE PRECISION)'
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO \"{name}\" SELECT g, g * 1.25, g % 2 = 0, CASE WHEN g % 3 = 0 THEN NULL ELSE ' c' || g END, "
                f"DATE '2024-01-01' + g, CASE WHEN g = 5 THEN 'NaN'::float8 ELSE g / 4.0 END FROM generate_series(1, 25000) g"
            )
        )
    try:
        monkeypatch.setattr(connectors.sql, "BATCH_ROWS", 4096)
        url = sa.engine.make_url(pg_url)
        t = read_table({"url": pg_url, "table": name}, id_column="id")
        assert t.n_rows == 25000
        assert [t[n].kind for n in t.names] == ["text", "number", "bool", "text", "text", "number"]
        assert t["id"].values[:3].tolist() == ["1", "2", "3"]
        _eq(t.take(np.arange(6))["amount"], [1.25, 2.5, 3.75, 5, 6.25, 7.5])
        _eq(t.take(np.arange(4))["Flag"], [0, 1, 0, 1])
        _eq(t.take(np.arange(4))["country"], ["c1", "c2", None, "c4"])
        assert t["day"].values[0] == "2024-01-02"
        assert math.isnan(t["x"].values[4])
        assert t.source == f"table '{name}' at {url.render_as_string(hide_password=True)}"
        assert source_columns({"url": pg_url, "table": name}) == [
            "id",
            "amount",
            "Flag",
            "country",
            "day",
            "x",
        ]
        if url.password:
            monkeypatch.setenv("COVAULT_TEST_PG_PASSWORD", url.password)
            bare = url.set(password=None).render_as_string(hide_password=False)
            src = {
                "url": bare,
                "query": f'SELECT "Flag", amount FROM "{name}" ORDER BY id',
                "password_env": "COVAULT_TEST_PG_PASSWORD",
            }
            t = read_table(src, columns=["amount"])
            assert t.names == ["amount"] and t.n_rows == 25000
            monkeypatch.setenv("COVAULT_TEST_PG_PASSWORD", "wrong-" + url.password)
            with pytest.raises(DataError, match=r"cannot connect") as err:
                read_table(src)
            assert url.password not in str(err.value)
        with pytest.raises(DataError, match=r"no such table"):
            read_table({"url": pg_url, "table": name + "_nope"})
        with pytest.raises(DataError, match=rf"^query at .*: .*{name}_nope"):
            read_table({"url": pg_url, "query": f'SELECT * FROM "{name}_nope"'})
        with pytest.raises(DataError, match=r"data-modifying statements|read-only transaction"):
            read_table(
                {"url": pg_url, "query": f'WITH d AS (DELETE FROM "{name}" RETURNING id) SELECT * FROM d'}
            )
        with pytest.raises(DataError, match=r"read-only transaction"):
            read_table({"url": pg_url, "query": "SELECT nextval('covault_seq')"})
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE "{name}"'))
        engine.dispose()


# Frames ----------------------------------------------------------------------------------------


def test_pandas_frame():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "id": [7, 8, 9],
            "x": [1.5, None, 2.0],
            "n": pd.array([1, None, 3], dtype="Int64"),
            "b": [True, False, True],
            "nb": pd.array([True, None, False], dtype="boolean"),
            "s": [" a", None, "c "],
            "when": pd.to_datetime(["2024-01-02", None, "2024-03-04"]),
            "cat": pd.Categorical(["u", "v", None]),
        }
    )
    t = read_table(df, id_column="id", columns=["s", "x", "n", "b", "nb", "when", "cat"])
    assert t.source == "pandas DataFrame" == describe(df)
    assert t.names == ["s", "x", "n", "b", "nb", "when", "cat", "id"]
    assert [t[n].kind for n in t.names] == [
        "text",
        "number",
        "number",
        "bool",
        "bool",
        "text",
        "text",
        "text",
    ]
    _eq(t["id"], ["7", "8", "9"])
    _eq(t["x"], [1.5, NAN, 2])
    _eq(t["n"], [1, NAN, 3])
    _eq(t["nb"], [1, NAN, 0])
    _eq(t["s"], ["a", None, "c"])
    _eq(t["when"], ["2024-01-02T00:00:00", None, "2024-03-04T00:00:00"])
    _eq(t["cat"], ["u", "v", None])
    assert source_columns(df) == ["id", "x", "n", "b", "nb", "s", "when", "cat"]
    with pytest.raises(DataError, match=r"pandas DataFrame: column 'x', row 2: infinite value"):
        read_table(pd.DataFrame({"x": [1.0, np.inf]}))
    with pytest.raises(DataError, match=r"pandas DataFrame is empty"):
        read_table(pd.DataFrame({"x": []}))
    with pytest.raises(DataError, match=r"pandas DataFrame has no column 'y'"):
        read_table(df, columns=["y"])


def test_arrow_table():
    pa = pytest.importorskip("pyarrow")
    at = pa.table({"k": ["a", "b"], "v": [1, None], "f": [True, None]})
    t = read_table(at, id_column="k")
    assert t.source == "pyarrow Table"
    assert [t[n].kind for n in t.names] == ["text", "number", "bool"]
    _eq(t["v"], [1, NAN])
    _eq(t["f"], [1, NAN])
    assert source_columns(at) == ["k", "v", "f"]


def test_frames_detected_without_importing_pandas():
    import subprocess

    code = (
        "import sys, covault.ingest.connectors as c\n"
        "try:\n    c.read_table(object())\nexcept c.DataError as e:\n    print(e)\n"
        "print('pandas' in sys.modules, 'sqlalchemy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "False False"


def test_csv_plain_and_quoted_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(connectors.csv, "CHUNK_ROWS", 2)
    text = (
        "\ufeffx,name,y\r\n1, a ,2\r\n3,b,4\r\n  \r\n5,c,6\r\n,,\r\n"
        '7,"multi\r\nline, quoted",8\r\n9,"d",NA\r\n10,e,11\r\n'
    )
    (tmp_path / "t.csv").write_bytes(text.encode("utf-8"))
    t = read_table(tmp_path / "t.csv")
    assert t.names == ["x", "name", "y"]
    _eq(t["x"], [1, 3, 5, 7, 9, 10])
    _eq(t["name"], ["a", "b", "c", "multi\r\nline, quoted", "d", "e"])
    _eq(t["y"], [2, 4, 6, 8, NAN, 11])
    t = read_table(tmp_path / "t.csv", columns=["y"])
    _eq(t["y"], [2, 4, 6, 8, NAN, 11])
    _write(tmp_path / "one.csv", "v\n1\n\n2\n   \n3\n")
    _eq(read_table(tmp_path / "one.csv")["v"], [1, 2, 3])
    _write(tmp_path / "w.csv", "a,b\n1,2\n3,4\n5,6,7\n")
    with pytest.raises(DataError, match=r"w\.csv: row 3 has 3 fields, the header has 2"):
        read_table(tmp_path / "w.csv")
    _write(tmp_path / "b.csv", "a,b\n1,true\n2,false\n3,TRUE\n4,\n5,x\n")
    t = read_table(tmp_path / "b.csv")
    assert [t["a"].kind, t["b"].kind] == ["number", "text"]
    _eq(t["b"], ["true", "false", "TRUE", None, "x"])
