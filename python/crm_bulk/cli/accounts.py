"""Operator commands on accounts: what an account's own admin may not do."""

from __future__ import annotations

import click

from crm_bulk.auth.limits import MAX_ENTITIES_PER_SECOND, MAX_REQUESTS_PER_MINUTE
from crm_bulk.cli.base import friendly_errors, load_settings, main, require_database
from crm_bulk.errors import CrmBulkError


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
