"""Throw-away PostgreSQL databases for tests: created, migrated, dropped, on the shared test server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from crm_bulk.postgres import Conn
from crm_bulk.store.migrate import migrate


@contextmanager
def own_database(pg_server_url: str, *, prefix: str = "crm_bulk_test") -> Iterator[str]:
    """A migrated database of the caller's own, so parallel runs and shippers never see others' rows."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # name is generated above, never user input
    url = pg_server_url.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def quiet_connection(url: str) -> Iterator[Conn]:
    """An autocommit connection to `url` with the open jobs of earlier tests set aside (failed), so a
    scheduler or worker under test sees only the test's own jobs."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "UPDATE bulk_actions SET status = 'failed' WHERE status IN ('scheduled', 'queued', 'running')"
        )
        yield connection
