"""`crm-bulk login` and `logout`: the token the other client commands send."""

from __future__ import annotations

import time

import click

from crm_bulk.cli.base import main
from crm_bulk.cli.client import config
from crm_bulk.cli.client.exits import EXIT_NOT_LOGGED_IN, ClientError
from crm_bulk.cli.client.http import ApiClient, check, problem_message
from crm_bulk.cli.client.render import print_json
from crm_bulk.cli.client.session import api_option, client_errors, json_option


@main.command()
@click.option("--email", prompt=True, help="Your account's email (prompted for when left out).")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    envvar="CRM_BULK_PASSWORD",
    help="Your password (prompted for, hidden, when left out; or $CRM_BULK_PASSWORD).",
)
@api_option
@json_option
@client_errors
def login(email: str, password: str, api: str | None, as_json: bool) -> None:
    """Log in to the API and keep the token (mode 0600) for the other commands."""
    url = config.api_url(api, config.load_credentials())
    with ApiClient(url) as client:
        response = client.request(
            "POST", "/auth/login", json={"email": email, "password": password}, check=False
        )
    if response.status_code == 401:
        raise ClientError(f"login refused: {problem_message(response)}", EXIT_NOT_LOGGED_IN)
    answer = check(response).json()
    expires_in = int(answer["expires_in"])
    path = config.save_credentials(
        config.Credentials(
            api_url=url, email=email, access_token=answer["access_token"], expires_at=time.time() + expires_in
        )
    )
    if as_json:
        print_json({"api_url": url, "email": email, "expires_in": expires_in, "credentials": str(path)})
    else:
        click.echo(f"Logged in to {url} as {email}; the token expires in {expires_in // 60} min ({path}).")


@main.command()
@client_errors
def logout() -> None:
    """Forget the stored token."""
    if config.forget_credentials():
        click.echo(f"Logged out ({config.credentials_path()} removed).")
    else:
        click.echo("Not logged in.")
