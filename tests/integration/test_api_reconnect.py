"""The API's pool recovers from a lost PostgreSQL as fast as the database does: a broken pooled connection is
found on checkout (no request gets it), and a restarted server is used again within moments."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk.local_postgres import LocalPostgres
from crm_bulk.settings import API_POOL_SIZE
from crm_bulk.store.migrate import migrate
from tests.integration.api_support import make_settings, make_tenant, running_client
from tests.integration.server_support import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

# What "as quick as the workers" means here: the first request after the server accepts again succeeds
# within this long, however far the pool's reconnect backoff had grown.
RECOVERY_SECONDS = 2.0
# Long enough for the pool's reconnect attempts to be backing off (1, 2, 4, 8 s ...) when the server is back.
OUTAGE_SECONDS = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this module's own (the shared one is never restarted); world-traversable
    folder: under root the server runs as a system user that pytest's temp folders would lock out."""
    parent = Path(tempfile.mkdtemp(prefix="crm-bulk-pg-"))
    parent.chmod(0o755)
    own = LocalPostgres(parent / "data", free_port())
    own.start()
    migrate(own.dsn)
    try:
        yield own
    finally:
        own.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("api-reconnect")), server.dsn)


def _wait_ok(
    client: TestClient[Litestar], headers: dict[str, str], timeout: float
) -> tuple[float, list[int]]:
    """Seconds until `/accounts/me` answers 200, and the statuses seen until then."""
    started = time.monotonic()
    seen: list[int] = []
    while time.monotonic() - started < timeout:
        status = client.get("/accounts/me", headers=headers).status_code
        seen.append(status)
        if status == 200:
            return time.monotonic() - started, seen
        time.sleep(0.05)
    raise AssertionError(f"no 200 within {timeout} s: {seen[-10:]}")


def test_connections_killed_under_the_pool_fail_no_request(
    client: TestClient[Litestar], server: LocalPostgres
) -> None:
    admin = make_tenant(client).admin
    # Several connections in the pool, each then terminated by the server.
    for _ in range(5):
        assert client.get("/accounts/me", headers=admin).status_code == 200
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'crm-bulk-api'"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    statuses = [client.get("/accounts/me", headers=admin).status_code for _ in range(10)]
    assert statuses == [200] * 10


def test_the_api_answers_again_soon_after_a_postgres_restart(
    client: TestClient[Litestar], server: LocalPostgres
) -> None:
    admin = make_tenant(client).admin
    assert client.get("/accounts/me", headers=admin).status_code == 200
    # A full pool, as under load: every slot then has a connection for the restart to break.
    resources = client.app.state.resources
    with ExitStack() as held:
        for _ in range(API_POOL_SIZE):
            held.enter_context(resources.connection())
    server.stop()
    outage_until = time.monotonic() + OUTAGE_SECONDS
    # Traffic during the outage finds every broken connection: 503s, and each slot starts reconnecting.
    with ThreadPoolExecutor(API_POOL_SIZE + 2) as requests:
        during = list(
            requests.map(
                lambda _: client.get("/accounts/me", headers=admin).status_code, range(API_POOL_SIZE + 2)
            )
        )
    assert set(during) == {503}, during
    time.sleep(max(0.0, outage_until - time.monotonic()))
    server.start()
    took, seen = _wait_ok(client, admin, timeout=30)
    print(f"API answered 200 {took:.2f} s after PostgreSQL accepted connections again ({len(seen)} tries)")
    assert took < RECOVERY_SECONDS, seen
