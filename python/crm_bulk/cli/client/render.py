"""What the client shows a person: progress bars and messages on stderr, tables and results on stdout.

With `--json` nothing but the machine output reaches stdout, and no bars are drawn.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

# Piped or captured, tables are not squeezed into 80 columns (rich's default without a terminal): rows stay
# whole for grep and for the eye.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)

Job = dict[str, Any]
JOB_COLUMNS = ("id", "action", "status", "progress", "total", "succeeded", "failed", "skipped", "created_at")


def print_json(value: Any) -> None:
    """Machine output: one JSON document on stdout."""
    print(json.dumps(value, separators=(",", ":"), sort_keys=True))


def eta_text(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `12s`, or `-` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def done_of(job: Job) -> int:
    """Entities the job has finished with, whatever their outcome."""
    return int(job["succeeded"] + job["failed"] + job["skipped"] + job["cancelled"])


def summary_line(job: Job) -> str:
    """`completed_with_errors: 999 succeeded, 1 failed, 0 skipped, 0 cancelled of 1000 (job …)`."""
    return (
        f"{job['status']}: {job['succeeded']} succeeded, {job['failed']} failed, {job['skipped']} skipped, "
        f"{job['cancelled']} cancelled of {job['total']} (job {job['id']})"
    )


@contextmanager
def upload_bar(size: int, *, enabled: bool) -> Iterator[Any]:
    """A bar of bytes sent, with MB/s; yields `advance(n)`."""
    progress = Progress(
        TextColumn("upload    "),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
    )
    with progress:
        task = progress.add_task("upload", total=size)
        yield lambda n: progress.advance(task, n)


class ProcessingBar:
    """Entities done of the job's total, its rate and ETA as the server reports them."""

    def __init__(self, *, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("processing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("entities"),
            TextColumn("{task.fields[rate]}/s"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[status]}"),
            console=err,
            disable=not enabled,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> ProcessingBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def show(self, job: Job) -> None:
        """Move the bar to the job's state."""
        fields = {
            "rate": f"{job['entities_per_second']:,.0f}",
            "eta": eta_text(job["eta_seconds"]),
            "status": job["status"],
        }
        total = max(int(job["total"]), 1) if job["total"] or done_of(job) else None
        if self.task is None:
            self.task = self.progress.add_task("processing", total=total, **fields)
        self.progress.update(self.task, total=total, completed=done_of(job), **fields)


def jobs_table(jobs: list[Job]) -> Table:
    """Jobs as rows, newest first as the API lists them."""
    table = Table(box=None, header_style="bold")
    for column in JOB_COLUMNS:
        table.add_column(
            column.upper(),
            justify="right" if column in ("total", "succeeded", "failed", "skipped", "progress") else "left",
            no_wrap=True,
            min_width=36 if column == "id" else None,  # ids are copied whole into the next command
        )
    for job in jobs:
        cells = [f"{job['progress']:.0%}" if c == "progress" else _cell(c, job.get(c)) for c in JOB_COLUMNS]
        table.add_row(*cells)
    return table


def _cell(key: str, value: Any) -> str:
    if key == "progress":
        return f"{value:.1%}"
    if key == "entities_per_second":
        return f"{value:,.1f}"
    if key == "eta_seconds":
        return eta_text(value)
    if key == "created_at" and isinstance(value, str):
        return value[:19].replace("T", " ")
    return "" if value is None else str(value)


def job_details(job: Job) -> Table:
    """One job as `field  value` lines."""
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in job.items():
        table.add_row(key, _cell(key, value))
    return table
