"""`/healthz` and `/readyz`: backend detail only for the operator's token; backends probed once a second."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from crm_bulk import health
from crm_bulk.api import health as api_health
from crm_bulk.api.probe_cache import ProbeCache
from crm_bulk.env_values import redact
from tests.integration.api_support import bearer, make_settings, running_client

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

TOKEN = "operator-token-" + "x" * 24


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-health")


@pytest.fixture(scope="module")
def client(database_url: str, data_dir: Path) -> Iterator[TestClient[Litestar]]:
    yield from running_client(make_settings(data_dir, health_token=TOKEN), database_url)


@pytest.fixture(autouse=True)
def fresh_cache(client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch) -> ProbeCache[Any]:
    """An empty probe cache, so each test probes at least once."""
    cache: ProbeCache[Any] = ProbeCache()
    monkeypatch.setattr(client.app.state.resources, "health_probes", cache)
    return cache


def _secrets_of(database_url: str, data_dir: Path) -> list[str]:
    """What must not reach an anonymous caller: the database's address and name, the data path."""
    target = redact(database_url)
    host_port, _, name = target.split("://", 1)[1].partition("/")
    return [host_port, name.split("?")[0], str(data_dir.resolve()), "chdb://"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("headers", [{}, bearer("not-the-token"), {"Authorization": TOKEN}])
def test_anyone_else_sees_statuses_only(
    client: TestClient[Litestar],
    database_url: str,
    data_dir: Path,
    path: str,
    headers: dict[str, str],
) -> None:
    answer = client.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ok"
    assert body["backends"]["postgres"] == {
        "kind": "postgres",
        "ok": True,
        "latency_ms": body["backends"]["postgres"]["latency_ms"],
    }
    assert all("target" not in backend for backend in body["backends"].values())
    for secret in _secrets_of(database_url, data_dir):
        assert secret not in answer.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_the_operator_sees_where_each_backend_is(
    client: TestClient[Litestar], database_url: str, data_dir: Path, path: str
) -> None:
    answer = client.get(path, headers=bearer(TOKEN))
    assert answer.status_code == 200, answer.text
    backends = answer.json()["backends"]
    assert backends["postgres"]["target"] == redact(database_url)
    assert str(data_dir.resolve()) in backends["clickhouse"]["target"]


def test_a_backend_error_is_shown_to_the_operator_only(
    client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = 'connection to server at "10.1.2.3", port 5432 failed: Connection refused'
    monkeypatch.setattr(
        health,
        "probe_postgres",
        lambda url, **_: health.BackendStatus("postgres", redact(url), ok=False, error=refused),
    )
    public = client.get("/readyz")
    assert public.status_code == 503
    assert public.json()["backends"]["postgres"] == {"kind": "postgres", "ok": False, "error": "unavailable"}
    assert "10.1.2.3" not in public.text
    operator = client.get("/readyz", headers=bearer(TOKEN))
    assert operator.json()["backends"]["postgres"]["error"] == refused


def test_rapid_readiness_calls_probe_each_backend_once_a_second(
    client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"postgres": 0, "clickhouse": 0}
    probe_postgres, clickhouse_status = health.probe_postgres, api_health._clickhouse_status

    def counted_postgres(url: str, **kwargs: Any) -> health.BackendStatus:
        calls["postgres"] += 1
        time.sleep(0.05)  # a probe takes a while: callers arriving meanwhile must wait for it, not probe
        return probe_postgres(url, **kwargs)

    def counted_clickhouse(resources: Any) -> health.BackendStatus:
        calls["clickhouse"] += 1
        return clickhouse_status(resources)

    monkeypatch.setattr(health, "probe_postgres", counted_postgres)
    monkeypatch.setattr(api_health, "_clickhouse_status", counted_clickhouse)
    codes: list[int] = []

    def hammer() -> None:
        for _ in range(5):
            codes.append(client.get("/readyz").status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    elapsed = time.monotonic() - started
    assert codes == [200] * 30
    # One probe per started second of hammering: one when all 30 fit in a second, as they do but on a
    # very slow machine.
    assert calls["postgres"] == calls["clickhouse"]
    assert 1 <= calls["postgres"] <= 1 + int(elapsed)
    if elapsed < 1.0:
        assert calls["postgres"] == 1
    time.sleep(1.05)
    before = calls["postgres"]
    assert client.get("/readyz").status_code == 200
    assert calls["postgres"] == before + 1, "a stale result was served after its second"
