"""Apply `sql/postgres/NNN_name.sql` migrations in order, each once, each in its own transaction.

An advisory lock serialises concurrent `migrate` calls (several pods may start at once).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from crm_bulk.errors import ConfigError
from crm_bulk.settings import env_name
from crm_bulk.sqlfiles import sql_root

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6372_6D62  # "crmb"
# The chunk statements read each row's before-image in the statement that writes it (`RETURNING old.*`,
# new in PostgreSQL 18): an older server would fail every chunk, so it is refused before anything is created.
MIN_SERVER_VERSION = 180000


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    path: Path


def discover(folder: Path | None = None) -> list[Migration]:
    """Migrations in version order; a duplicate version is an error."""
    folder = folder or sql_root() / "postgres"
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise ValueError(f"migration file name must look like 001_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migration files share a version: {versions}")
    return found


def check_server_version(version: int) -> None:
    """`ConfigError` naming the database setting when the server is older than PostgreSQL 18."""
    if version < MIN_SERVER_VERSION:
        major, minor = divmod(version, 10000)
        raise ConfigError(
            env_name("database_url"),
            f"PostgreSQL {major}.{minor} is too old: crm-bulk needs PostgreSQL 18 or newer",
        )


def migrate(database_url: str, *, folder: Path | None = None) -> list[int]:
    """Apply pending migrations on their own connection; return the versions applied now."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return _migrate(conn, folder)


def _migrate(conn: psycopg.Connection[tuple[object, ...]], folder: Path | None) -> list[int]:
    check_server_version(conn.info.server_version)
    applied_now: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
        for migration in discover(folder):
            if migration.version in done:
                continue
            with conn.transaction():
                # Migration files are trusted, shipped with the package; psycopg wants a literal type.
                conn.execute(migration.path.read_text().encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            log.info("applied migration %03d_%s", migration.version, migration.name)
            applied_now.append(migration.version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
