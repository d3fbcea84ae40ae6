"""Helpers for event stream and command-line client tests: the API under uvicorn on a loopback port, accounts
made in the database, jobs moved along by hand (as workers would bump their counters)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import uvicorn
from litestar import Litestar

from crm_bulk.actions.specs import BulkActionRequest, Target
from crm_bulk.api import create_app
from crm_bulk.auth.accounts import add_member, register
from crm_bulk.jobs.repository import create_job
from tests.integration.api_support import PASSWORD, make_settings, unique_email
from tests.integration.server_support import free_port, serving


@dataclass(frozen=True)
class LiveApi:
    """The API served on a loopback port, and its app (to look at the process's progress hub)."""

    base: str
    app: Litestar
    database_url: str


@dataclass(frozen=True)
class Member:
    """A logged-in user of an account."""

    account_id: int
    email: str
    headers: dict[str, str]


@contextmanager
def live_api(database_url: str, data_dir: Path, **overrides: Any) -> Iterator[LiveApi]:
    """The API under uvicorn in a thread until the block ends."""
    settings = make_settings(data_dir, log_level="WARNING", **overrides).resolved(database_url=database_url)
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    with serving(config):
        yield LiveApi(f"http://127.0.0.1:{port}", app, database_url)


def _login(api: LiveApi, email: str) -> dict[str, str]:
    answer = httpx.post(f"{api.base}/auth/login", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def make_account(api: LiveApi) -> dict[str, Member]:
    """A new account (made in the database: sign-up throttling is not under test) with an admin, an editor
    and a viewer, each logged in through the API."""
    emails = {role: unique_email(role) for role in ("admin", "editor", "viewer")}
    with psycopg.connect(api.database_url) as conn:
        made = register(
            conn, email=emails["admin"], password=PASSWORD, account_name=f"Events {uuid.uuid4().hex[:6]}"
        )
        for role in ("editor", "viewer"):
            add_member(conn, made.account_id, email=emails[role], password=PASSWORD, role=role)
    return {role: Member(made.account_id, email, _login(api, email)) for role, email in emails.items()}


def queued_job(database_url: str, account_id: int, *, total: int) -> UUID:
    """A queued delete job over `total` ids, never planned (the tests move its counters themselves)."""
    request = BulkActionRequest(action="delete", target=Target(ids=list(range(1, total + 1))))
    with psycopg.connect(database_url) as conn:
        job = create_job(conn, account_id=account_id, created_by=None, request=request)
        conn.execute("UPDATE bulk_actions SET total = %s WHERE id = %s", [total, job.id])
    return job.id


def set_progress(database_url: str, job_id: UUID, *, status: str, succeeded: int, failed: int = 0) -> None:
    """Move a job as the workers and the finaliser would: counters, status, start and end times."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE bulk_actions SET status = %(status)s, succeeded = %(succeeded)s, failed = %(failed)s, "
            "started_at = coalesce(started_at, now() - interval '1 second'), "
            "finished_at = CASE WHEN %(status)s IN ('queued', 'running') THEN NULL ELSE now() END "
            "WHERE id = %(job_id)s",
            {"status": status, "succeeded": succeeded, "failed": failed, "job_id": job_id},
        )
