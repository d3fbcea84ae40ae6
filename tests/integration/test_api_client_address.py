"""A forged `X-Forwarded-For` from a peer that is not a trusted proxy does not change the client address the
login throttle counts against; behind a trusted proxy, the address the proxy saw does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.auth.throttle import Bucket, LoginThrottle
from crm_bulk.ratelimit import InProcessLimiter
from tests.integration.api_support import assert_problem, make_settings, running_client, unique_email
from tests.integration.peer_support import peer, running_client_with_peers

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


@pytest.fixture(scope="module")
def proxied(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient[Any], Litestar]]:
    settings = make_settings(tmp_path_factory.mktemp("api-proxied"), trusted_proxies="10.0.0.0/8")
    yield from running_client_with_peers(settings, database_url)


def _small_client_bucket(app: Litestar, monkeypatch: pytest.MonkeyPatch) -> None:
    throttle = LoginThrottle(
        InProcessLimiter(),
        per_email=Bucket(burst=100, refill_seconds=60),
        per_client=Bucket(burst=CLIENT_BURST, refill_seconds=60),
    )
    monkeypatch.setattr(app.state.resources, "login_throttle", throttle)


def _failed_logins(client: TestClient[Any], headers: dict[str, str], count: int) -> list[int]:
    return [
        client.post(
            "/auth/login", json={"email": unique_email(), "password": "guess"}, headers=headers
        ).status_code
        for _ in range(count)
    ]


def test_behind_a_trusted_proxy_the_forwarded_client_counts(
    proxied: tuple[TestClient[Any], Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, app = proxied
    _small_client_bucket(app, monkeypatch)
    via_proxy = peer("10.0.0.5")
    # One client behind the proxy uses up its bucket; another one behind the same proxy is not refused.
    first = via_proxy | {"X-Forwarded-For": "6.6.6.6, 198.51.100.1"}
    assert _failed_logins(client, first, CLIENT_BURST + 1) == [401] * CLIENT_BURST + [429]
    second = via_proxy | {"X-Forwarded-For": "198.51.100.2"}
    assert _failed_logins(client, second, 1) == [401]
    # The forged left part is not the client: changing it does not escape the first client's refusal.
    forged = via_proxy | {"X-Forwarded-For": "7.7.7.7, 198.51.100.1"}
    assert _failed_logins(client, forged, 1) == [429]


def test_an_untrusted_peer_forwarding_for_others_is_one_client(
    proxied: tuple[TestClient[Any], Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, app = proxied
    _small_client_bucket(app, monkeypatch)
    statuses = [
        _failed_logins(client, peer("203.0.113.5") | {"X-Forwarded-For": f"198.51.100.{n}"}, 1)[0]
        for n in range(CLIENT_BURST + 1)
    ]
    assert statuses == [401] * CLIENT_BURST + [429]
