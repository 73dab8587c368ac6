"""Migration 8: Friends: invites, connection requests and accepted connections (store.peering).

Frozen SQL, like every step in store/migrations.py (which lists this one): never edit it once
released; append a new migration instead.
"""

from peewee import SqliteDatabase

from store.sql import execute_sql

STATEMENTS: tuple[str, ...] = ()


def migrate(db: SqliteDatabase) -> None:
    for statement in STATEMENTS:
        execute_sql(db, statement)
