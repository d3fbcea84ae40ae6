"""The `crm-bulk` command line: `up`, `api`, `worker`, `scheduler`, `migrate`, `accounts`, `bench`.

Every failure a user can cause (bad settings, unreachable backends) ends with one line naming the problem
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from crm_bulk.auth.limits import MAX_ENTITIES_PER_SECOND, MAX_REQUESTS_PER_MINUTE
from crm_bulk.errors import BackendUnavailableError, ConfigError, CrmBulkError
from crm_bulk.settings import DEFAULT_CHUNK_SIZE, Settings

if TYPE_CHECKING:
    import uvicorn
    from litestar import Litestar

P = ParamSpec("P")
R = TypeVar("R")

EXIT_CONFIG = 2
EXIT_BACKEND = 3
EXIT_FAILURE = 1


def _fail(message: str, code: int) -> None:
    click.echo(f"crm-bulk: error: {message}", err=True)
    sys.exit(code)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the platform's own errors into one line and an exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc), EXIT_CONFIG)
        except BackendUnavailableError as exc:
            _fail(str(exc), EXIT_BACKEND)
        except CrmBulkError as exc:
            _fail(str(exc), EXIT_FAILURE)
        except KeyboardInterrupt:
            sys.exit(130)
        raise AssertionError("unreachable")

    return wrapper


def load_settings() -> Settings:
    """Settings from the environment, with logging configured from them."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return settings


def require_database(url: str) -> None:
    """Fail fast, in one line, when PostgreSQL does not answer."""
    from crm_bulk.health import probe_postgres

    status = probe_postgres(url, timeout=5)
    if not status.ok:
        raise BackendUnavailableError("postgres", "CRM_BULK_DATABASE_URL", status.error or "no answer")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """crm-bulk: bulk actions over CRM contacts."""


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
@click.option(
    "--processes", type=click.IntRange(min=1), default=None, help="Worker processes (default: setting)."
)
@friendly_errors
def up(processes: int | None) -> None:
    """Embedded all-in-one: start or attach PostgreSQL, migrate, run workers and scheduler, serve the API.

    Ctrl-C stops the API, drains the workers, stops the scheduler and the PostgreSQL this command started.
    """
    from crm_bulk.deployment import running_database
    from crm_bulk.dispatch.scheduler import run_scheduler
    from crm_bulk.store.migrate import migrate as apply_migrations
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
        ]
        for thread in background:
            thread.start()
        try:
            serve_api(settings)
        finally:
            stop.set()
            for thread in background:
                thread.join(timeout=150)


@main.group()
def accounts() -> None:
    """Operator commands on accounts."""


@accounts.command("set-limits")
@click.argument("account_id", type=click.IntRange(min=1))
@click.option(
    "--requests-per-minute",
    type=click.IntRange(min=1, max=MAX_REQUESTS_PER_MINUTE),
    default=None,
    help="API requests per minute (default: unchanged).",
)
@click.option(
    "--entities-per-second",
    type=click.IntRange(min=1, max=MAX_ENTITIES_PER_SECOND),
    default=None,
    help="Entities per second its bulk actions apply (default: unchanged).",
)
@friendly_errors
def set_limits(account_id: int, requests_per_minute: int | None, entities_per_second: int | None) -> None:
    """Set an account's limits, above the ceiling account admins are held to if need be."""
    import psycopg

    from crm_bulk.auth.accounts import update_limits
    from crm_bulk.deployment import running_database

    if requests_per_minute is None and entities_per_second is None:
        raise CrmBulkError("give --requests-per-minute, --entities-per-second or both")
    with running_database(load_settings(), start=False) as settings:
        require_database(settings.postgres_dsn)
        with psycopg.connect(settings.postgres_dsn) as conn:
            account = update_limits(
                conn,
                account_id,
                api_requests_per_minute=requests_per_minute,
                entities_per_second=entities_per_second,
            )
    click.echo(
        f"account {account.id}: {account.api_requests_per_minute} requests per minute, "
        f"{account.entities_per_second} entities per second"
    )


def _stop_on_signals(stop: threading.Event) -> dict[int, object]:
    """SIGINT/SIGTERM set `stop` instead of raising, so loops finish their step and clean up."""
    previous: dict[int, object] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    return previous


def _restore_signals(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {text!r}")
    return values


@main.command()
@click.option("--quick", is_flag=True, help="100,000 entities instead of 1,000,000.")
@click.option(
    "--entities",
    type=click.IntRange(min=1000),
    default=None,
    help="Entities to generate (overrides --quick).",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the results as JSON."
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Throughput chart (PNG); default: beside --out, else ./crm-bulk-bench.png.",
)
@click.option("--deployment", type=click.Choice(["embedded", "kafka"]), default="embedded", show_default=True)
@click.option(
    "--kafka",
    default="127.0.0.1:59092",
    show_default=True,
    help="Broker of the kafka deployment (host:port).",
)
@click.option(
    "--processes", type=click.IntRange(min=1), default=2, show_default=True, help="Worker processes."
)
@click.option("--chunk-size", type=click.IntRange(min=1), default=DEFAULT_CHUNK_SIZE, show_default=True)
@click.option(
    "--partitions", type=click.IntRange(min=1), default=6, show_default=True, help="Kafka topic partitions."
)
@click.option("--sweep", is_flag=True, help="Also try chunk sizes x processes and print the best.")
@click.option("--sweep-chunk-sizes", default="1000,5000,20000", show_default=True)
@click.option("--sweep-processes", default="1,2,4", show_default=True)
@click.option("--sweep-entities", type=click.IntRange(min=1000), default=200_000, show_default=True)
@click.option(
    "--database-url",
    default=None,
    help="A PostgreSQL server to use instead of starting one: the bench creates and drops a database there.",
)
@click.option("--load-users", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--load-seconds", type=click.FloatRange(min=1), default=20.0, show_default=True)
@click.option(
    "--seed-pages", type=click.IntRange(min=1), default=4, show_default=True, help="Seed-algorithm sample."
)
@click.option(
    "--profile",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="py-spy the workers and API per scenario (and auto_explain slow statements) into this folder.",
)
@click.option(
    "--logs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Copy the services' and PostgreSQL's logs into this folder at the end.",
)
@friendly_errors
# Over fifty lines only because click hands every option over as its own parameter.
def bench(
    *,
    quick: bool,
    entities: int | None,
    out: Path | None,
    chart: Path | None,
    deployment: str,
    kafka: str,
    processes: int,
    chunk_size: int,
    partitions: int,
    sweep: bool,
    sweep_chunk_sizes: str,
    sweep_processes: str,
    sweep_entities: int,
    database_url: str | None,
    load_users: int,
    load_seconds: float,
    seed_pages: int,
    profile: Path | None,
    logs: Path | None,
) -> None:
    """Throughput benchmark on an isolated stack of its own: five bulk actions end to end through the API,
    beside the raw-SQL ceiling and the seed algorithm, plus an API load run."""
    from crm_bulk.bench import require_bench_extra

    # Before the suite's modules are imported: without the extra, one line naming it, not a traceback.
    require_bench_extra()
    from crm_bulk.bench import report
    from crm_bulk.bench.runner import BenchOptions, run_bench
    from crm_bulk.bench.stack import StackOptions

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    count = entities or (100_000 if quick else 1_000_000)
    options = BenchOptions(
        entities=count,
        stack=StackOptions(
            processes=processes,
            chunk_size=chunk_size,
            partitions=partitions,
            deployment="kafka" if deployment == "kafka" else "embedded",
            kafka_bootstrap=kafka,
            database_url=database_url,
            logs_dir=logs,
        ),
        seed_pages=seed_pages,
        load_users=load_users,
        load_seconds=load_seconds,
        sweep=sweep,
        sweep_chunk_sizes=_int_list(sweep_chunk_sizes),
        sweep_processes=_int_list(sweep_processes),
        sweep_entities=min(sweep_entities, count),
        profile=profile,
        command=" ".join(["crm-bulk", *sys.argv[1:]]),
    )
    chart_path = chart or (out.with_suffix(".png") if out else Path("crm-bulk-bench.png"))
    for path in (out, chart_path):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    results = run_bench(options, progress=lambda line: click.echo(line, err=True))
    report.throughput_chart(results["scenarios"], chart_path, title=f"crm-bulk bench: {count:,} entities")
    results["chart"] = str(chart_path)
    if out is not None:
        report.write_json(results, out)
    click.echo(report.markdown(results))
    click.echo(f"\nchart: {chart_path}" + (f"; results: {out}" if out else ""))


if __name__ == "__main__":
    main()
