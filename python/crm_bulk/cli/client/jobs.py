"""`crm-bulk jobs`, `job ID [--watch]`, `errors ID [--csv]`, `cancel ID`: the account's bulk actions."""

from __future__ import annotations

import sys

import click

from crm_bulk.cli.base import main
from crm_bulk.cli.client.render import job_details, jobs_table, out, print_json
from crm_bulk.cli.client.session import api_option, client_errors, connect, finish, json_option, wait_for_job

STATUSES = ("scheduled", "queued", "running", "completed", "completed_with_errors", "failed", "cancelled")


@main.command("jobs")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only jobs in this status.")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="How many.")
@api_option
@json_option
@client_errors
def list_jobs(status: str | None, limit: int, api: str | None, as_json: bool) -> None:
    """The account's bulk actions, newest first."""
    params: dict[str, str | int] = {"limit": limit}
    if status:
        params["status"] = status
    with connect(api) as client:
        page = client.json("GET", "/bulk-actions", params=params)
    if as_json:
        print_json(page["items"])
    elif page["items"]:
        out.print(jobs_table(page["items"]))
    else:
        click.echo("No bulk actions.", err=True)


@main.command("job")
@click.argument("job_id")
@click.option(
    "--watch", is_flag=True, help="Follow the job with a progress bar until it ends; exit by its end state."
)
@api_option
@json_option
@client_errors
def show_job(job_id: str, watch: bool, api: str | None, as_json: bool) -> None:
    """One bulk action: counts, progress, rate and ETA."""
    with connect(api) as client:
        job = client.json("GET", f"/bulk-actions/{job_id}")
        if watch:
            sys.exit(wait_for_job(client, job, as_json=as_json))
    if as_json:
        print_json(job)
    else:
        out.print(job_details(job))


@main.command("errors")
@click.argument("job_id")
@click.option("--csv", "as_csv", is_flag=True, help="Every failed and skipped entity as CSV on stdout.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Items shown.")
@api_option
@json_option
@client_errors
def show_errors(job_id: str, as_csv: bool, limit: int, api: str | None, as_json: bool) -> None:
    """A job's failed and skipped entities: counts per code and the first items, or all as CSV."""
    with connect(api) as client:
        if as_csv:
            with client.streaming(f"/bulk-actions/{job_id}/errors", accept="text/csv") as response:
                for piece in response.iter_bytes():
                    sys.stdout.buffer.write(piece)
            sys.stdout.buffer.flush()
            return
        report = client.json("GET", f"/bulk-actions/{job_id}/errors", params={"limit": limit})
    if as_json:
        print_json(report)
        return
    summary = report.get("summary") or {}
    if not summary:
        click.echo("No failed or skipped entities.")
        return
    for code, count in sorted(summary.items(), key=lambda kv: -int(kv[1])):
        click.echo(f"{count:>10}  {code}")
    for item in report.get("items") or []:
        click.echo(
            f"{item.get('entity_id') or '-'}\t{item.get('email') or ''}\t{item.get('outcome')}\t"
            f"{item.get('code')}\t{item.get('message') or ''}"
        )


@main.command("cancel")
@click.argument("job_id")
@api_option
@json_option
@client_errors
def cancel(job_id: str, api: str | None, as_json: bool) -> None:
    """Cancel a bulk action: what is not yet applied is not applied."""
    with connect(api) as client:
        job = client.json("POST", f"/bulk-actions/{job_id}/cancel")
    finish(job, as_json=as_json)
