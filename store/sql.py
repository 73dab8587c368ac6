"""Raw SQL on a peewee database, typed.

peewee's stubs leave `Database.execute_sql` untyped, which mypy strict refuses to call; this is
the one place that calls it. Raw SQL is for what the query builder does not express: PRAGMAs and
the frozen DDL of migrations.
"""

import sqlite3
from typing import cast

from peewee import SqliteDatabase


def execute_sql(db: SqliteDatabase, sql: str) -> sqlite3.Cursor:
    """Run one statement on this thread's connection (opening it if needed)."""
    return cast(sqlite3.Cursor, db.execute_sql(sql))  # type: ignore[no-untyped-call]


def scalar(db: SqliteDatabase, sql: str) -> object:
    """The first column of the first row `sql` returns (None for no row)."""
    row = execute_sql(db, sql).fetchone()
    return None if row is None else row[0]
