"""Bounds on what one tenant can take: sign-up throttled per client or turned off, a ceiling on the limits an
account's admin may set (the operator's command goes above it), and passwords that are hard to guess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.settings import Settings
from tests.integration.api_support import (
    PASSWORD,
    assert_problem,
    make_settings,
    make_tenant,
    running_client,
    unique_email,
)
from tests.integration.peer_support import peer, running_client_with_peers

pytestmark = pytest.mark.postgres

CEILING_RPM = 6000
CEILING_EPS = 200_000


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    """The default ceilings on account limits."""
    settings = make_settings(
        tmp_path_factory.mktemp("api-bounds"),
        max_account_requests_per_minute=CEILING_RPM,
        max_account_entities_per_second=CEILING_EPS,
    )
    for client, _app in running_client_with_peers(settings, database_url):
        yield client


@pytest.fixture(scope="module")
def throttled(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    """Sign-up open but throttled: 3 per client address, then one an hour."""
    settings = make_settings(
        tmp_path_factory.mktemp("api-signup"), registration_burst=3, registration_refill_seconds=3600.0
    )
    for client, _app in running_client_with_peers(settings, database_url):
        yield client


def _register(client: TestClient[Litestar], address: str, password: str = PASSWORD) -> Any:
    body = {"email": unique_email("signup"), "password": password, "account_name": "Signup"}
    return client.post("/auth/register", json=body, headers=peer(address))


def test_sign_up_is_throttled_per_client(throttled: TestClient[Litestar]) -> None:
    assert [_register(throttled, "203.0.113.50").status_code for _ in range(3)] == [201] * 3
    refused = _register(throttled, "203.0.113.50")
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 3000
    # Another address is not held back.
    assert _register(throttled, "203.0.113.51").status_code == 201


def test_sign_up_can_be_turned_off(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, open_registration=False)
    for client in running_client(settings, database_url):
        email = unique_email("closed")
        answer = client.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "account_name": "Closed"}
        )
        problem = assert_problem(answer, 403)
        assert "sign-up is closed" in problem["detail"]
        assert client.post("/auth/login", json={"email": email, "password": PASSWORD}).status_code == 401


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("true", True), ("", True)])
def test_open_registration_is_read_from_the_environment(raw: str, expected: bool) -> None:
    assert Settings.from_env({"CRM_BULK_OPEN_REGISTRATION": raw}).open_registration is expected


@pytest.mark.parametrize(
    ("field", "ceiling", "setting"),
    [
        ("api_requests_per_minute", CEILING_RPM, "CRM_BULK_MAX_ACCOUNT_REQUESTS_PER_MINUTE"),
        ("entities_per_second", CEILING_EPS, "CRM_BULK_MAX_ACCOUNT_ENTITIES_PER_SECOND"),
    ],
)
def test_an_account_admin_cannot_raise_a_limit_above_the_ceiling(
    client: TestClient[Litestar], field: str, ceiling: int, setting: str
) -> None:
    tenant = make_tenant(client, "Greedy")
    above = client.patch("/accounts/me/limits", json={field: ceiling + 1}, headers=tenant.admin)
    problem = assert_problem(above, 422)
    [error] = problem["errors"]
    assert (error["field"], error["code"]) == (field, "above_ceiling")
    assert str(ceiling) in error["message"] and setting in error["message"]
    assert client.get("/accounts/me", headers=tenant.admin).json()["limits"][field] < ceiling
    at = client.patch("/accounts/me/limits", json={field: ceiling}, headers=tenant.admin)
    assert at.status_code == 200 and at.json()["limits"][field] == ceiling


def _operator(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRM_BULK_")}
    env = clean | {"CRM_BULK_DATABASE_URL": database_url, "CRM_BULK_JWT_SECRET": "s" * 40}
    return subprocess.run(
        [sys.executable, "-m", "crm_bulk.cli", "accounts", "set-limits", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_operator_raises_an_account_above_the_ceiling(
    client: TestClient[Litestar], database_url: str
) -> None:
    tenant = make_tenant(client, "Trusted")
    done = _operator(
        database_url,
        str(tenant.account_id),
        "--requests-per-minute",
        "20000",
        "--entities-per-second",
        "500000",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"account {tenant.account_id}: 20000 requests per minute, 500000 entities per second"
    )
    limits = client.get("/accounts/me", headers=tenant.viewer).json()["limits"]
    assert limits == {"api_requests_per_minute": 20000, "entities_per_second": 500000}
    # Its admin may lower what the operator set, not raise it.
    lowered = client.patch(
        "/accounts/me/limits", json={"api_requests_per_minute": 10000}, headers=tenant.admin
    )
    assert lowered.status_code == 200
    raised = client.patch(
        "/accounts/me/limits", json={"api_requests_per_minute": 15000}, headers=tenant.admin
    )
    assert_problem(raised, 422)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999999999"], "give --requests-per-minute"),
        (["999999999", "--requests-per-minute", "5"], "account not found"),
    ],
)
def test_the_operator_command_fails_in_one_line(database_url: str, args: list[str], message: str) -> None:
    done = _operator(database_url, *args)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("crm-bulk: error: ") and message in line
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("password", "code"),
    [(" " * 8, "blank"), ("12345678", "weak_password"), ("password1", "weak_password")],
)
def test_weak_passwords_are_refused(client: TestClient[Litestar], password: str, code: str) -> None:
    problem = assert_problem(_register(client, "198.51.100.60", password), 422)
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [("password", code)]
    tenant = make_tenant(client, "Members")
    added = client.post(
        "/accounts/me/members",
        json={"email": unique_email("member"), "password": password, "role": "viewer"},
        headers=tenant.admin,
    )
    problem = assert_problem(added, 422)
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [("password", code)]


def test_a_password_built_from_the_email_is_refused(client: TestClient[Litestar]) -> None:
    email = unique_email("marguerite")
    body = {"email": email, "password": email.upper(), "account_name": "Marguerite"}
    problem = assert_problem(client.post("/auth/register", json=body, headers=peer("198.51.100.61")), 422)
    assert problem["errors"][0]["code"] == "weak_password"


def test_a_strong_password_is_accepted(client: TestClient[Litestar]) -> None:
    answer = _register(client, "198.51.100.62", "mulberry orbit candle 47")
    assert answer.status_code == 201
