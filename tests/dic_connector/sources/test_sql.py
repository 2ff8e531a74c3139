"""SQL source against the real PostgreSQL test cluster (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import datetime as dt
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from dic_connector.errors import SourceError
from dic_connector.sources.base import Progress
from dic_connector.sources.sql import SqlConfig, SqlSource, check_query

N_ROWS = 60_000
QUERY = """
    SELECT person_id, year_of_birth, gender, weight_kg, first_visit
    FROM person WHERE year_of_birth >= :min_year ORDER BY person_id
"""


def sa_url(dsn: str) -> str:
    return "postgresql+asyncpg://" + dsn.split("://", 1)[1]


async def make_person_table(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""
            CREATE TABLE person (person_id bigint PRIMARY KEY, year_of_birth int,
                                 gender text, weight_kg numeric(5,1), first_visit date);
            INSERT INTO person
            SELECT i, 1930 + i % 80, CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END,
                   40 + (i % 700) / 10.0, DATE '2010-01-01' + (i % 4000)
            FROM generate_series(1, $1::int) AS i""".replace("$1::int", str(n)))
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_streams_rows_from_postgres_in_batches(fresh_postgres_db: str) -> None:
    await make_person_table(fresh_postgres_db, N_ROWS)
    seen: list[Progress] = []
    config = SqlConfig(sa_url(fresh_postgres_db), QUERY, {"min_year": 1990}, batch_size=1000)
    ids: list[int] = []
    async with SqlSource(config, on_progress=seen.append) as source:
        tracemalloc.start()
        async for row in source.stream():
            if not ids:
                assert set(row) == {"person_id", "year_of_birth", "gender", "weight_kg",
                                    "first_visit"}
                assert isinstance(row["weight_kg"], Decimal)
                assert isinstance(row["first_visit"], dt.date)
            ids.append(row["person_id"])
        peak_bytes = tracemalloc.get_traced_memory()[1] - sys.getsizeof(ids) - 28 * len(ids)
        tracemalloc.stop()
    # bounded by a batch: the whole result is never held at once
    assert peak_bytes < 4 * 1024 * 1024, peak_bytes
    expected = [i for i in range(1, N_ROWS + 1) if 1930 + i % 80 >= 1990]
    assert ids == expected
    assert source.progress.items == len(expected) == source.progress.count("row")
    assert source.progress.units == len(seen) == -(-len(expected) // 1000)
    assert source.columns[0] == "person_id"


@pytest.mark.postgres
async def test_postgres_errors_name_the_database_not_the_data(fresh_postgres_db: str) -> None:
    url = sa_url(fresh_postgres_db)
    with pytest.raises(SourceError, match=r"UndefinedTableError \(SQLSTATE 42P01\): relation"):
        async with SqlSource(SqlConfig(url, "SELECT * FROM missing")) as source:
            [r async for r in source.stream()]
    await make_person_table(fresh_postgres_db, 10)
    with pytest.raises(SourceError) as info:
        async with SqlSource(SqlConfig(url, "SELECT gender::int FROM person")) as source:
            [r async for r in source.stream()]
    assert "SQLSTATE 22P02" in str(info.value) and "withheld" in str(info.value)
    assert "\"F\"" not in str(info.value) and "'F'" not in str(info.value)
    with pytest.raises(SourceError, match=r"ReadOnlySQLTransactionError \(SQLSTATE 25006\): cannot execute"):
        async with SqlSource(SqlConfig(
                url, "WITH d AS (DELETE FROM person RETURNING 1) SELECT * FROM d")) as source:
            [r async for r in source.stream()]


async def test_sqlite_source(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "cdm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE obs (id INTEGER, code TEXT, value REAL)")
        conn.executemany("INSERT INTO obs VALUES (?, ?, ?)",
                         [(i, "8302-2" if i % 3 else "29463-7", i * 1.5) for i in range(2500)])
    config = SqlConfig(f"sqlite+aiosqlite:///{db}",
                       "SELECT id, value FROM obs WHERE code = :code", {"code": "29463-7"},
                       batch_size=100)
    async with SqlSource(config) as source:
        rows = [r async for r in source.stream()]
    assert [r["id"] for r in rows] == list(range(0, 2500, 3))
    assert source.progress.units == 9


def test_only_single_read_statements_are_accepted() -> None:
    check_query("WITH a AS (SELECT 1) SELECT * FROM a WHERE x = ';'")
    check_query("SELECT 1;")
    for bad in ("DELETE FROM person", "SELECT 1; DROP TABLE person", "  update x set y=1"):
        with pytest.raises(SourceError, match="single"):
            check_query(bad)
