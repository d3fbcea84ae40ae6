"""`crm-bulk update`, `delete`, `tag add|remove`: bulk actions over a filter, a file of ids, or everything."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from crm_bulk.cli.base import main
from crm_bulk.cli.client.render import print_json
from crm_bulk.cli.client.session import (
    api_option,
    client_errors,
    connect,
    json_option,
    no_wait_option,
    wait_for_job,
)
from crm_bulk.cli.client.targets import changes_of, tags_of, target_of

F = TypeVar("F", bound=Callable[..., Any])


def target_options(func: F) -> F:
    """`--filter`, `--ids-from`, `--all`, and the options every bulk action takes."""
    for option in reversed(
        [
            click.option(
                "--filter", "filter_json", metavar="JSON|@FILE", help='e.g. \'{"company": {"eq": "Acme"}}\''
            ),
            click.option("--ids-from", metavar="FILE", help="Contact ids, one per line."),
            click.option("--all", "everything", is_flag=True, help="Every contact of the account."),
            click.option(
                "--dry-run", is_flag=True, help="Run in full, then roll back: see what it would do."
            ),
            no_wait_option,
            api_option,
            json_option,
        ]
    ):
        func = option(func)
    return func


def run_action(body: dict[str, Any], *, dry_run: bool, no_wait: bool, api: str | None, as_json: bool) -> None:
    """Create the bulk action and, unless `no_wait`, follow it to its end; exit by its end state."""
    if dry_run:
        body["dry_run"] = True
    with connect(api) as client:
        job = client.json("POST", "/bulk-actions", json=body)
        if no_wait:
            if as_json:
                print_json(job)
            else:
                click.echo(f"{job['status']}: job {job['id']} ({job['action']})")
            return
        sys.exit(wait_for_job(client, job, as_json=as_json))


@main.command()
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="A field to set (repeat).")
@click.option("--unset", multiple=True, metavar="FIELD", help="A field to clear (repeat).")
@target_options
@client_errors
def update(
    *,
    assignments: tuple[str, ...],
    unset: tuple[str, ...],
    filter_json: str | None,
    ids_from: str | None,
    everything: bool,
    dry_run: bool,
    no_wait: bool,
    api: str | None,
    as_json: bool,
) -> None:
    """Change fields of many contacts: `--set company="Acme Inc" --filter '{"company": {"eq": "Acme"}}'`."""
    body = {
        "action": "update",
        "target": target_of(filter_json, ids_from, everything),
        "changes": changes_of(assignments, unset),
    }
    run_action(body, dry_run=dry_run, no_wait=no_wait, api=api, as_json=as_json)


@main.command()
@target_options
@client_errors
def delete(
    *,
    filter_json: str | None,
    ids_from: str | None,
    everything: bool,
    dry_run: bool,
    no_wait: bool,
    api: str | None,
    as_json: bool,
) -> None:
    """Delete many contacts."""
    body = {"action": "delete", "target": target_of(filter_json, ids_from, everything)}
    run_action(body, dry_run=dry_run, no_wait=no_wait, api=api, as_json=as_json)


@main.group()
def tag() -> None:
    """Add or remove tags on many contacts."""


def _tag_command(name: str, action: str, verb: str) -> None:
    @tag.command(name, help=f"{verb} TAGS (comma-separated or several arguments) on many contacts.")
    @click.argument("tags", nargs=-1, required=True)
    @target_options
    @client_errors
    def command(
        *,
        tags: tuple[str, ...],
        filter_json: str | None,
        ids_from: str | None,
        everything: bool,
        dry_run: bool,
        no_wait: bool,
        api: str | None,
        as_json: bool,
    ) -> None:
        body = {
            "action": action,
            "target": target_of(filter_json, ids_from, everything),
            "tags": tags_of(tags),
        }
        run_action(body, dry_run=dry_run, no_wait=no_wait, api=api, as_json=as_json)


_tag_command("add", "add_tags", "Add")
_tag_command("remove", "remove_tags", "Remove")
