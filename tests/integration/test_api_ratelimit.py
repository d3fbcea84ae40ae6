"""Per-account API rate limits over HTTP, with the in-process limiter and with Redis."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.ratelimit import InProcessLimiter, RateLimiter, RedisLimiter
from tests.integration.api_support import Tenant, assert_problem, make_settings, make_tenant, running_client

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-ratelimit")), database_url)


@pytest.fixture(params=["in-process", "redis"])
def fresh_limiter(
    request: pytest.FixtureRequest, client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], None]]:
    """Installs an empty limiter in the app when called (after the test's setup requests); the Redis one
    under a     key prefix no other run shares."""
    made: list[RateLimiter] = []

    def install() -> None:
        limiter: RateLimiter
        if request.param == "redis":
            prefix = f"crm-bulk-test:{uuid.uuid4().hex}:"
            limiter = RedisLimiter(request.getfixturevalue("redis_url"), key_prefix=prefix)
        else:
            limiter = InProcessLimiter()
        made.append(limiter)
        monkeypatch.setattr(client.app.state.resources, "limiter", limiter)

    yield install
    for limiter in made:
        if isinstance(limiter, RedisLimiter):
            limiter.close()


def _limited_tenant(client: TestClient[Litestar], per_minute: int) -> Tenant:
    tenant = make_tenant(client, "Limited")
    changed = client.patch(
        "/accounts/me/limits", json={"api_requests_per_minute": per_minute}, headers=tenant.admin
    )
    assert changed.status_code == 200
    return tenant


def _rate_limited_count(client: TestClient[Litestar]) -> float:
    text = client.get("/metrics").text
    found = re.search(r'^crm_bulk_rate_limited_total\{limit="api"\} (\S+)$', text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_accounts_limit_is_enforced_with_headers(
    client: TestClient[Litestar], fresh_limiter: Callable[[], None]
) -> None:
    tenant = _limited_tenant(client, 5)
    fresh_limiter()
    before = _rate_limited_count(client)
    remaining = []
    for _ in range(5):
        answer = client.get("/accounts/me", headers=tenant.viewer)
        assert answer.status_code == 200
        assert answer.headers["RateLimit-Limit"] == "5"
        assert answer.headers["RateLimit-Policy"] == "5;w=60"
        remaining.append(int(answer.headers["RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    refused = client.get("/contacts", headers=tenant.editor)
    assert_problem(refused, 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 12
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert 48 <= int(refused.headers["RateLimit-Reset"]) <= 60
    assert _rate_limited_count(client) == before + 1


def test_accounts_have_separate_buckets(
    client: TestClient[Litestar], fresh_limiter: Callable[[], None]
) -> None:
    first, second = _limited_tenant(client, 2), _limited_tenant(client, 2)
    fresh_limiter()
    for _ in range(2):
        assert client.get("/accounts/me", headers=first.admin).status_code == 200
    assert_problem(client.get("/accounts/me", headers=first.viewer), 429)
    assert client.get("/accounts/me", headers=second.admin).status_code == 200


def test_public_routes_are_not_charged(
    client: TestClient[Litestar], fresh_limiter: Callable[[], None]
) -> None:
    tenant = _limited_tenant(client, 1)
    fresh_limiter()
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
        assert "RateLimit-Limit" not in client.get("/healthz").headers
    assert client.get("/accounts/me", headers=tenant.admin).status_code == 200
    assert_problem(client.get("/accounts/me", headers=tenant.admin), 429)


def test_a_limiter_outage_lets_requests_through_and_is_counted(
    client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = _limited_tenant(client, 1)
    monkeypatch.setattr(
        client.app.state.resources, "limiter", RedisLimiter("redis://127.0.0.1:1/0", socket_timeout=0.5)
    )
    errors = re.compile(r"^crm_bulk_rate_limiter_errors_total (\S+)$", re.MULTILINE)
    before_match = errors.search(client.get("/metrics").text)
    before = float(before_match.group(1)) if before_match else 0.0
    for _ in range(3):
        answer = client.get("/accounts/me", headers=tenant.admin)
        assert answer.status_code == 200
        assert "RateLimit-Limit" not in answer.headers
    after_match = errors.search(client.get("/metrics").text)
    assert after_match is not None and float(after_match.group(1)) == before + 3
