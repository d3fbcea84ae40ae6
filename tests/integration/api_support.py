"""Helpers for the HTTP tests: an app per test module on the session database, and tenants with one user per
role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.api import create_app
from crm_bulk.auth.limits import MAX_ENTITIES_PER_SECOND, MAX_REQUESTS_PER_MINUTE
from crm_bulk.settings import Settings

PASSWORD = "correct horse battery staple"
PROBLEM_JSON = "application/problem+json"


# Tests register their tenants from the one test client and may lift limits freely; the tests of the sign-up
# throttle and of the limits' ceiling set these themselves.
UNBOUNDED_TENANTS: dict[str, Any] = {
    "registration_burst": 1_000_000,
    "max_account_requests_per_minute": MAX_REQUESTS_PER_MINUTE,
    "max_account_entities_per_second": MAX_ENTITIES_PER_SECOND,
}


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Embedded-style settings with every file under `data_dir` (its own chDB store and JWT secret)."""
    return replace(Settings(data_dir=data_dir), **(UNBOUNDED_TENANTS | overrides))


def running_client(settings: Settings, database_url: str) -> Iterator[TestClient[Litestar]]:
    """A client whose app has gone through its lifespan (pool open, ClickHouse migrated)."""
    app = create_app(settings.resolved(database_url=database_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def unique_email(tag: str = "user") -> str:
    """An address no other test uses."""
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient[Litestar], email: str, password: str = PASSWORD) -> dict[str, str]:
    """Log in and return the Authorization header."""
    answer = client.post("/auth/login", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return bearer(answer.json()["access_token"])


@dataclass(frozen=True)
class Tenant:
    """An account with an admin, an editor and a viewer, each logged in."""

    account_id: int
    admin_id: int
    emails: dict[str, str]
    user_ids: dict[str, int]
    headers: dict[str, dict[str, str]]

    @property
    def admin(self) -> dict[str, str]:
        """The admin's Authorization header."""
        return self.headers["admin"]

    @property
    def editor(self) -> dict[str, str]:
        """The editor's Authorization header."""
        return self.headers["editor"]

    @property
    def viewer(self) -> dict[str, str]:
        """The viewer's Authorization header."""
        return self.headers["viewer"]


def make_tenant(client: TestClient[Litestar], name: str = "Acme") -> Tenant:
    """Register an account and add an editor and a viewer."""
    admin_email = unique_email("admin")
    created = client.post(
        "/auth/register", json={"email": admin_email, "password": PASSWORD, "account_name": name}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    headers = {"admin": login(client, admin_email)}
    emails = {"admin": admin_email}
    user_ids = {"admin": body["user_id"]}
    for role in ("editor", "viewer"):
        email = unique_email(role)
        added = client.post(
            "/accounts/me/members",
            json={"email": email, "password": PASSWORD, "role": role},
            headers=headers["admin"],
        )
        assert added.status_code == 201, added.text
        emails[role] = email
        user_ids[role] = added.json()["user_id"]
        headers[role] = login(client, email)
    return Tenant(
        account_id=body["account_id"],
        admin_id=body["user_id"],
        emails=emails,
        user_ids=user_ids,
        headers=headers,
    )


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    assert "Traceback" not in response.text
    return body


def newest_account_id(database_url: str) -> int:
    """The highest account id so far (0 for none): accounts above it are created later."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM accounts").fetchone()
    return int(row[0]) if row else 0


def end_open_jobs(database_url: str, after_account_id: int) -> None:
    """Cancel the unfinished jobs of accounts created after `after_account_id`, so that schedulers run by
    later test modules on the same database do not pick them up."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE bulk_actions SET status = 'cancelled', finished_at = now() "
            "WHERE account_id > %s AND status IN ('scheduled', 'queued', 'running')",
            [after_account_id],
        )
