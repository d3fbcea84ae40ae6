"""Several `crm-bulk migrate` at once (hook Jobs retried, pods of two releases) on one empty database: the
advisory lock lets one apply each migration and the others find it applied."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from crm_bulk.store.migrate import discover, migrate

RUNNERS = 4


@pytest.fixture
def empty_database(pg_server_url: str) -> Iterator[str]:
    name = f"crm_bulk_migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # name is generated above, never user input
    try:
        yield pg_server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_concurrent_migrations_apply_each_version_once(empty_database: str) -> None:
    start = threading.Barrier(RUNNERS)
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait(10)
        try:
            applied.append(migrate(empty_database))
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(RUNNERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    versions = [m.version for m in discover()]
    # One runner applied everything; the others, serialised behind its lock, found nothing left.
    assert sorted(applied, key=len) == [[]] * (RUNNERS - 1) + [versions]
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY 1")
        assert rows.fetchall() == [(v, 1) for v in versions]
