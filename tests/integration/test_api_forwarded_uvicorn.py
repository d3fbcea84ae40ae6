"""The API as `crm-bulk api` serves it (uvicorn, `cli.uvicorn_config`), called from loopback: a forged
`X-Forwarded-For` per request does not make each one a new client of the login throttle. uvicorn's default
trusts the header from 127.0.0.1, so without trusted proxies configured it must not handle it at all."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from crm_bulk.api import create_app
from crm_bulk.auth.throttle import Bucket, LoginThrottle
from crm_bulk.cli import uvicorn_config
from crm_bulk.ratelimit import InProcessLimiter
from tests.integration.api_support import make_settings, unique_email
from tests.integration.server_support import free_port, serving

pytestmark = pytest.mark.postgres

CLIENT_BURST = 3


@pytest.fixture(scope="module")
def base_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API under uvicorn in a thread, configured as the CLI configures it; a small per-client bucket."""
    port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("api-uvicorn"), api_port=port, log_level="WARNING"
    ).resolved(database_url=database_url)
    app = create_app(settings)
    app.state.resources.login_throttle = LoginThrottle(
        InProcessLimiter(),
        per_email=Bucket(burst=100, refill_seconds=60),
        per_client=Bucket(burst=CLIENT_BURST, refill_seconds=60),
    )
    with serving(uvicorn_config(app, settings)):
        yield f"http://127.0.0.1:{port}"


def test_a_new_forged_address_per_request_is_still_one_client(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        statuses = [
            client.post(
                "/auth/login",
                json={"email": unique_email(), "password": "guess"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            ).status_code
            for n in range(CLIENT_BURST + 1)
        ]
    assert statuses == [401] * CLIENT_BURST + [429]
