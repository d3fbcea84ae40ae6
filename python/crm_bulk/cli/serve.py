"""Commands that run the platform: `migrate`, `api`, `worker`, `scheduler`, `webhooks` and the all-in-one
`up`."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

import click

from crm_bulk.cli.base import friendly_errors, load_settings, main, require_database
from crm_bulk.errors import BackendUnavailableError
from crm_bulk.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from litestar import Litestar


@main.command()
@friendly_errors
def migrate() -> None:
    """Apply pending PostgreSQL migrations (starting the embedded server for the duration if needed)."""
    from crm_bulk.deployment import running_database
    from crm_bulk.store.migrate import migrate as apply_migrations

    with running_database(load_settings(), start=True) as settings:
        require_database(settings.postgres_dsn)
        applied = apply_migrations(settings.postgres_dsn)
    click.echo(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))


SHUTDOWN_GRACE_SECONDS = 10


def uvicorn_config(app: Litestar, settings: Settings) -> uvicorn.Config:
    """How uvicorn serves `app`. Its proxy-header handling is on only behind trusted proxies, and trusts only
    those: by default it would believe `X-Forwarded-For` from any loopback peer."""
    import uvicorn

    networks = [str(network) for network in settings.trusted_proxy_networks()]
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        proxy_headers=bool(networks),
        forwarded_allow_ips=networks,
        # Event streams (`/bulk-actions/{id}/events`) never end on their own: a stop waits this long for
        # them, then closes them (their clients reconnect to another process with Last-Event-ID).
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


def serve_api(settings: Settings) -> None:
    """Serve the API of resolved `settings` until SIGINT/SIGTERM."""
    import uvicorn

    from crm_bulk.api import create_app

    server = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    server.run()
    if not server.started:
        raise BackendUnavailableError(
            "api", "CRM_BULK_API_PORT", f"could not listen on {settings.api_host}:{settings.api_port}"
        )


@main.command()
@friendly_errors
def api() -> None:
    """Serve the REST API."""
    from crm_bulk.deployment import running_database

    with running_database(load_settings(), start=False) as settings:
        require_database(settings.postgres_dsn)
        serve_api(settings)


@main.command()
@click.option(
    "--processes", type=click.IntRange(min=1), default=None, help="Worker processes (default: setting)."
)
@click.option("--burst", is_flag=True, help="Exit once the queue is empty (tests, one-off backfills).")
@friendly_errors
def worker(processes: int | None, burst: bool) -> None:
    """Run the worker pool: N processes consuming chunks and applying them."""
    from crm_bulk.deployment import running_database
    from crm_bulk.worker.pool import run_worker_pool

    with running_database(load_settings(), start=False) as settings:
        require_database(settings.postgres_dsn)
        run_worker_pool(settings, processes or settings.worker_processes, burst=burst)


@main.command()
@friendly_errors
def scheduler() -> None:
    """Dispatch due scheduled jobs, plan queued ones, release chunks fairly, finalise finished jobs."""
    from crm_bulk.deployment import running_database
    from crm_bulk.dispatch.scheduler import run_scheduler

    with running_database(load_settings(), start=False) as settings:
        require_database(settings.postgres_dsn)
        stop = threading.Event()
        restore = _stop_on_signals(stop)
        try:
            run_scheduler(settings, stop)
        finally:
            _restore_signals(restore)


@main.command()
@friendly_errors
def webhooks() -> None:
    """Deliver completion webhooks: signed, retried on the schedule, several deliverers side by side."""
    from crm_bulk.deployment import running_database
    from crm_bulk.webhooks.deliverer import run_deliverer

    with running_database(load_settings(), start=False) as settings:
        require_database(settings.postgres_dsn)
        stop = threading.Event()
        restore = _stop_on_signals(stop)
        try:
            run_deliverer(settings, stop)
        finally:
            _restore_signals(restore)


@main.command()
@click.option(
    "--processes", type=click.IntRange(min=1), default=None, help="Worker processes (default: setting)."
)
@friendly_errors
def up(processes: int | None) -> None:
    """Embedded all-in-one: start or attach PostgreSQL, migrate, run workers, scheduler and the webhook
    deliverer, serve the API.

    Ctrl-C stops the API, drains the workers, stops the scheduler and the PostgreSQL this command started.
    """
    from crm_bulk.deployment import running_database
    from crm_bulk.dispatch.scheduler import run_scheduler
    from crm_bulk.store.migrate import migrate as apply_migrations
    from crm_bulk.webhooks.deliverer import run_deliverer
    from crm_bulk.worker.pool import run_worker_pool

    with running_database(load_settings(), start=True) as settings:
        require_database(settings.postgres_dsn)
        apply_migrations(settings.postgres_dsn)
        stop = threading.Event()
        background = [
            threading.Thread(
                target=run_worker_pool,
                args=(settings, processes or settings.worker_processes),
                kwargs={"stop_event": stop},
                name="crm-bulk-workers",
            ),
            threading.Thread(
                target=run_scheduler,
                args=(settings, stop),
                name="crm-bulk-scheduler",
            ),
            threading.Thread(target=run_deliverer, args=(settings, stop), name="crm-bulk-webhooks"),
        ]
        for thread in background:
            thread.start()
        try:
            serve_api(settings)
        finally:
            stop.set()
            for thread in background:
                thread.join(timeout=150)


def _stop_on_signals(stop: threading.Event) -> dict[int, object]:
    """SIGINT/SIGTERM set `stop` instead of raising, so loops finish their step and clean up."""
    previous: dict[int, object] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    return previous


def _restore_signals(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]
