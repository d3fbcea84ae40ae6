"""A forged `X-Forwarded-For` from a peer that is not a trusted proxy does not change the client address the
login throttle counts against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.auth.throttle import Bucket, LoginThrottle
from crm_bulk.ratelimit import InProcessLimiter
from tests.integration.api_support import assert_problem, make_settings, running_client, unique_email

pytestmark = pytest.mark.postgres

CLIENT_BURST = 3


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    # Proxies are trusted, but not the test client's peer: its header must still be ignored.
    settings = make_settings(tmp_path_factory.mktemp("api-client-address"), trusted_proxies="10.0.0.0/8")
    yield from running_client(settings, database_url)


@pytest.fixture
def throttle(client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch) -> LoginThrottle:
    """A throttle of its own whose per-client bucket is small; per-email ones never refuse here."""
    fresh = LoginThrottle(
        InProcessLimiter(),
        per_email=Bucket(burst=100, refill_seconds=60),
        per_client=Bucket(burst=CLIENT_BURST, refill_seconds=60),
    )
    monkeypatch.setattr(client.app.state.resources, "login_throttle", fresh)
    return fresh


@pytest.mark.parametrize("header", ["X-Forwarded-For", "x-forwarded-for"])
def test_a_forged_forwarded_for_is_the_same_client(
    client: TestClient[Litestar], throttle: LoginThrottle, header: str
) -> None:
    for attempt in range(CLIENT_BURST):
        answer = client.post(
            "/auth/login",
            json={"email": unique_email(), "password": "guess"},
            headers={header: f"198.51.100.{attempt}, 10.0.0.{attempt}"},
        )
        assert answer.status_code == 401, answer.text
    # A new forged address per request used to be a new client; it is the same peer, so refused now.
    refused = client.post(
        "/auth/login",
        json={"email": unique_email(), "password": "guess"},
        headers={header: "203.0.113.77"},
    )
    assert_problem(refused, 429)
