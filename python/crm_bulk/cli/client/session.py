"""What the client commands share: their common options, one-line failures, and waiting for a job."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click

from crm_bulk.cli.client import config
from crm_bulk.cli.client.exits import EXIT_INTERRUPTED, ClientError, exit_code_for
from crm_bulk.cli.client.http import ApiClient
from crm_bulk.cli.client.render import ProcessingBar, print_json, summary_line
from crm_bulk.cli.client.watch import follow_job

P = ParamSpec("P")
R = TypeVar("R")

api_option = click.option(
    "--api",
    "api",
    metavar="URL",
    default=None,
    help=f"The API's base URL (default: ${config.API_URL_VARIABLE}, else the one you logged in to).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Machine output only, as JSON on stdout; no progress bars."
)
no_wait_option = click.option(
    "--no-wait", is_flag=True, help="Print the created job and exit, instead of following it to its end."
)


def client_errors(func: Callable[P, R]) -> Callable[P, R]:
    """One line on stderr and the exit code for every failure the user can run into; never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ClientError as exc:
            click.echo(f"crm-bulk: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("crm-bulk: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def connect(api: str | None) -> ApiClient:
    """A client of the chosen API with the caller's token (failing in one line when there is none)."""
    stored = config.load_credentials()
    url = config.api_url(api, stored)
    return ApiClient(url, config.access_token(url))


def wait_for_job(client: ApiClient, job: dict[str, Any], *, as_json: bool) -> int:
    """Follow `job` to its end with a processing bar; print it (JSON or a summary line); its exit code."""
    with ProcessingBar(enabled=not as_json) as bar:
        bar.show(job)
        final = follow_job(client, str(job["id"]), bar.show)
    finish(final, as_json=as_json)
    return exit_code_for(str(final["status"]))


def finish(job: dict[str, Any], *, as_json: bool) -> None:
    """The job's final word: JSON on stdout, or its summary line."""
    if as_json:
        print_json(job)
    else:
        click.echo(summary_line(job))
