"""The login throttle over HTTP, with the in-process limiter and with Redis: an attacker hammering someone's
email is slowed down per client and per (email, client) pair, and the owner still logs in from elsewhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.auth.throttle import PER_CLIENT, PER_EMAIL, PER_PAIR, LoginThrottle
from crm_bulk.ratelimit import InProcessLimiter, RateLimiter, RedisLimiter
from tests.integration.api_support import (
    PASSWORD,
    Tenant,
    assert_problem,
    make_settings,
    make_tenant,
    unique_email,
)
from tests.integration.peer_support import peer, running_client_with_peers

pytestmark = pytest.mark.postgres

ATTACKER = "203.0.113.7"
VICTIM = "198.51.100.20"
WRONG = "not the password at all"


@pytest.fixture(scope="module")
def served(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient[Litestar], Litestar]]:
    yield from running_client_with_peers(make_settings(tmp_path_factory.mktemp("api-login")), database_url)


@pytest.fixture(scope="module")
def client(served: tuple[TestClient[Litestar], Litestar]) -> TestClient[Litestar]:
    return served[0]


@pytest.fixture(scope="module")
def tenant(client: TestClient[Litestar]) -> Tenant:
    return make_tenant(client, "Throttled")


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def throttle(
    request: pytest.FixtureRequest,
    served: tuple[TestClient[Litestar], Litestar],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LoginThrottle]:
    """A throttle of its own with the default buckets (in Redis under a key prefix no other run shares)."""
    limiter: RateLimiter
    if request.param == "redis":
        prefix = f"crm-bulk-test:{uuid.uuid4().hex}:"
        limiter = RedisLimiter(request.getfixturevalue("redis_url"), key_prefix=prefix)
    else:
        limiter = InProcessLimiter()
    made = LoginThrottle(limiter)
    monkeypatch.setattr(served[1].state.resources, "login_throttle", made)
    yield made
    if isinstance(limiter, RedisLimiter):
        limiter.close()


def _login(client: TestClient[Litestar], email: str, password: str, address: str) -> int:
    return client.post(
        "/auth/login", json={"email": email, "password": password}, headers=peer(address)
    ).status_code


def test_a_hammered_victim_logs_in_at_once_from_another_client(
    client: TestClient[Litestar], tenant: Tenant, throttle: LoginThrottle
) -> None:
    victim = tenant.emails["viewer"]
    answers = [_login(client, victim, WRONG, ATTACKER) for _ in range(3 * PER_PAIR.burst)]
    # The pair's bucket stops the attacker after its burst, right password or not.
    assert answers == [401] * PER_PAIR.burst + [429] * (2 * PER_PAIR.burst)
    refused = client.post("/auth/login", json={"email": victim, "password": PASSWORD}, headers=peer(ATTACKER))
    assert_problem(refused, 429)
    assert refused.headers["RateLimit-Limit"] == str(PER_PAIR.burst)
    assert 1 <= int(refused.headers["Retry-After"]) <= PER_PAIR.refill_seconds
    # The victim, from anywhere else, gets in at once.
    assert _login(client, victim, PASSWORD, VICTIM) == 200


def test_the_client_bucket_stops_spraying_across_emails(
    client: TestClient[Litestar], tenant: Tenant, throttle: LoginThrottle
) -> None:
    answers = [_login(client, unique_email(), WRONG, ATTACKER) for _ in range(PER_CLIENT.burst)]
    assert answers == [401] * PER_CLIENT.burst
    # Exhausted: even a real user's right password is not checked from this client.
    assert _login(client, tenant.emails["editor"], PASSWORD, ATTACKER) == 429
    assert _login(client, tenant.emails["editor"], PASSWORD, VICTIM) == 200


def _exhaust_the_email(client: TestClient[Litestar], email: str) -> None:
    """Wrong guesses from many addresses, one each: no client or pair bucket runs out, the email's does."""
    for n in range(PER_EMAIL.burst):
        assert _login(client, email, WRONG, f"192.0.2.{n + 1}") == 401


def test_a_guarded_email_still_lets_the_right_password_in_from_a_clean_client(
    client: TestClient[Litestar], tenant: Tenant, throttle: LoginThrottle
) -> None:
    victim = tenant.emails["admin"]
    _exhaust_the_email(client, victim)
    assert _login(client, victim, PASSWORD, VICTIM) == 200
    # A clean client's wrong guess is checked but answered 429, and costs the client its whole burst.
    refused = client.post("/auth/login", json={"email": victim, "password": WRONG}, headers=peer(ATTACKER))
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) >= PER_CLIENT.window_seconds - 1
    # From then on that client is refused before any password is checked, for this email and any other.
    assert _login(client, victim, PASSWORD, ATTACKER) == 429
    assert _login(client, tenant.emails["editor"], PASSWORD, ATTACKER) == 429
    assert _login(client, victim, PASSWORD, VICTIM) == 200


def test_a_client_that_failed_elsewhere_is_refused_on_a_guarded_email(
    client: TestClient[Litestar], tenant: Tenant, throttle: LoginThrottle
) -> None:
    victim = tenant.emails["editor"]
    _exhaust_the_email(client, victim)
    assert _login(client, unique_email(), WRONG, ATTACKER) == 401
    assert _login(client, victim, PASSWORD, ATTACKER) == 429
    # Not guarded: the same client still logs in to another email.
    assert _login(client, tenant.emails["viewer"], PASSWORD, ATTACKER) == 200
    assert _login(client, victim, PASSWORD, VICTIM) == 200
