"""`crm-bulk import FILE`: stream a CSV, NDJSON or XLSX file to the API with an upload bar, then follow the
import job with a processing bar fed by its event stream.

The file is read in pieces as the request body goes out, never whole, so a file of any size costs the
client the same few megabytes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from crm_bulk.cli.base import main
from crm_bulk.cli.client.exits import ClientError
from crm_bulk.cli.client.render import print_json, upload_bar
from crm_bulk.cli.client.session import (
    api_option,
    client_errors,
    connect,
    json_option,
    no_wait_option,
    wait_for_job,
)
from crm_bulk.cli.client.targets import USAGE, json_argument

PIECE_BYTES = 1024 * 1024
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".tsv": "text/csv",
    ".txt": "text/csv",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".xlsx": XLSX,
}


def content_type_of(path: Path) -> str:
    """The upload's Content-Type, from the file's extension."""
    found = CONTENT_TYPES.get(path.suffix.lower())
    if found is None:
        known = ", ".join(sorted(CONTENT_TYPES))
        raise ClientError(f"{path.name}: unknown file type (expected one of {known})", USAGE)
    return found


def file_pieces(path: Path, advance: Callable[[int], None]) -> Iterator[bytes]:
    """The file in pieces of `PIECE_BYTES`, each counted on the bar once read."""
    with path.open("rb") as source:
        while piece := source.read(PIECE_BYTES):
            advance(len(piece))
            yield piece


def import_params(
    *,
    on_duplicate: str,
    mapping: str | None,
    unknown_columns: str | None,
    delimiter: str | None,
    encoding: str | None,
    sheet: str | None,
    dry_run: bool,
) -> dict[str, str]:
    """The query parameters of `POST /bulk-actions/import` for what was given."""
    params = {"on_duplicate": on_duplicate}
    if mapping is not None:
        found = json_argument(mapping, "--mapping")
        if not isinstance(found, dict):
            raise ClientError('--mapping: expected a JSON object like {"E-mail": "email"}', USAGE)
        params["mapping"] = json.dumps(found, separators=(",", ":"))
    for name, value in (
        ("unknown_columns", unknown_columns),
        ("delimiter", delimiter),
        ("encoding", encoding),
        ("sheet", sheet),
    ):
        if value is not None:
            params[name] = value
    if dry_run:
        params["dry_run"] = "true"
    return params


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mapping", metavar="JSON|@FILE", help='Column → field, e.g. \'{"E-mail": "email"}\'.')
@click.option(
    "--on-duplicate",
    type=click.Choice(["skip", "update"]),
    default="skip",
    show_default=True,
    help="What a row whose email exists does.",
)
@click.option(
    "--unknown-columns",
    type=click.Choice(["reject", "ignore", "custom_fields"]),
    default=None,
    help="What columns that name no field do (default: the server's).",
)
@click.option("--delimiter", default=None, help="CSV delimiter (default: detected).")
@click.option("--encoding", default=None, help="Text encoding (default: detected).")
@click.option("--sheet", default=None, help="XLSX sheet name (default: the first).")
@click.option("--dry-run", is_flag=True, help="Run in full, then roll back: see what it would do.")
@no_wait_option
@api_option
@json_option
@client_errors
def import_file(
    *,
    file: Path,
    mapping: str | None,
    on_duplicate: str,
    unknown_columns: str | None,
    delimiter: str | None,
    encoding: str | None,
    sheet: str | None,
    dry_run: bool,
    no_wait: bool,
    api: str | None,
    as_json: bool,
) -> None:
    """Import contacts from FILE (.csv, .ndjson/.jsonl or .xlsx); exit by the job's end state."""
    content_type = content_type_of(file)
    params = import_params(
        on_duplicate=on_duplicate,
        mapping=mapping,
        unknown_columns=unknown_columns,
        delimiter=delimiter,
        encoding=encoding,
        sheet=sheet,
        dry_run=dry_run,
    )
    size = file.stat().st_size
    with connect(api) as client:
        with upload_bar(size, enabled=not as_json) as advance:
            job = client.upload(
                "/bulk-actions/import",
                file_pieces(file, advance),
                size=size,
                content_type=content_type,
                params=params,
            )
        if no_wait:
            if as_json:
                print_json(job)
            else:
                click.echo(f"{job['status']}: job {job['id']} ({size} bytes uploaded)")
            return
        sys.exit(wait_for_job(client, job, as_json=as_json))
