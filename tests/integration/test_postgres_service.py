"""The real PostgreSQL answers and the migrations apply cleanly and idempotently."""

from __future__ import annotations

import psycopg

from crm_bulk.store.migrate import discover, migrate


def test_postgres_answers_a_query(db: psycopg.Connection[tuple[object, ...]]) -> None:
    row = db.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    assert int(str(row[0])) >= 140000


def test_migrations_are_recorded_and_idempotent(
    db: psycopg.Connection[tuple[object, ...]], database_url: str
) -> None:
    versions = [m.version for m in discover()]
    recorded = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
    assert recorded == versions
    assert migrate(database_url) == []
