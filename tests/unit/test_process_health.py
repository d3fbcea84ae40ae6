"""The probe endpoint of pool and scheduler: alive while the loop ticks, ready while the backends answer."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from crm_bulk.health import BackendStatus
from crm_bulk.process_health import (
    BackendReadiness,
    Heartbeat,
    HttpEndpoint,
    backend_probe,
    health_app,
    serve_http,
    serve_process_health,
)
from crm_bulk.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


class Backends:
    """A probe whose answers the test sets, counting its calls."""

    def __init__(self) -> None:
        self.ok = {"postgres": True, "queue": True, "ratelimit": True}
        self.calls = 0

    def __call__(self) -> dict[str, BackendStatus]:
        self.calls += 1
        return {name: BackendStatus(name, "x", ok=ok) for name, ok in self.ok.items()}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backends() -> Backends:
    return Backends()


@pytest.fixture
def endpoint(clock: FakeClock, backends: Backends) -> Iterator[tuple[HttpEndpoint, Heartbeat]]:
    heartbeat = Heartbeat(max_age_seconds=30, clock=clock)
    app = health_app(heartbeat, BackendReadiness(backends, every_seconds=1.0, clock=clock))
    served = serve_http(app, addr="127.0.0.1", port=0, name="test endpoint")
    try:
        yield served, heartbeat
    finally:
        served.stop()


def test_a_loop_is_alive_until_it_misses_its_max_age(clock: FakeClock) -> None:
    heartbeat = Heartbeat(max_age_seconds=30, clock=clock)
    assert heartbeat.alive() and heartbeat.age() is None
    heartbeat.beat()
    clock.now += 30
    assert heartbeat.alive() and heartbeat.age() == 30
    clock.now += 0.5
    assert not heartbeat.alive()
    heartbeat.beat()
    assert heartbeat.alive()


def test_healthz_answers_503_once_the_loop_stopped_ticking(
    endpoint: tuple[HttpEndpoint, Heartbeat], clock: FakeClock
) -> None:
    served, heartbeat = endpoint
    assert get(served.port, "/healthz") == (200, {"status": "ok", "last_tick_seconds_ago": None})
    heartbeat.beat()
    clock.now += 12.5
    assert get(served.port, "/healthz") == (200, {"status": "ok", "last_tick_seconds_ago": 12.5})
    clock.now += 20
    assert get(served.port, "/healthz") == (503, {"status": "stalled", "last_tick_seconds_ago": 32.5})


def test_readyz_answers_503_while_a_backend_is_down_and_probes_once_a_second(
    endpoint: tuple[HttpEndpoint, Heartbeat], clock: FakeClock, backends: Backends
) -> None:
    served, _ = endpoint
    everything = {"postgres": True, "queue": True, "ratelimit": True}
    assert get(served.port, "/readyz") == (200, {"status": "ready", "backends": everything})
    backends.ok["queue"] = False
    # Within the second the cached answer stands, whatever the request rate.
    assert get(served.port, "/readyz")[0] == 200
    assert backends.calls == 1
    clock.now += 1
    assert get(served.port, "/readyz") == (
        503,
        {"status": "unready", "backends": {**everything, "queue": False}},
    )
    assert backends.calls == 2


def test_other_paths_go_to_the_fallback_or_404(clock: FakeClock, backends: Backends) -> None:
    heartbeat = Heartbeat(max_age_seconds=30, clock=clock)
    readiness = BackendReadiness(backends, clock=clock)

    def metrics(environ: object, start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"crm_bulk_worker_chunks_total 0.0\n"]

    with_metrics = serve_http(
        health_app(heartbeat, readiness, fallback=metrics), addr="127.0.0.1", port=0, name="m"
    )
    bare = serve_http(health_app(heartbeat, readiness), addr="127.0.0.1", port=0, name="b")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{with_metrics.port}/metrics", timeout=5) as response:
            assert response.read() == b"crm_bulk_worker_chunks_total 0.0\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{bare.port}/metrics", timeout=5)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        with_metrics.stop()
        bare.stop()


def test_concurrent_readiness_calls_share_one_probe(clock: FakeClock) -> None:
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow_probe() -> dict[str, BackendStatus]:
        calls.append(1)
        started.set()
        release.wait(5)
        return {"postgres": BackendStatus("postgres", "x", ok=True)}

    readiness = BackendReadiness(slow_probe, clock=clock)
    first = threading.Thread(target=readiness.statuses)
    first.start()
    started.wait(5)
    second = threading.Thread(target=readiness.statuses)
    second.start()
    release.set()
    first.join(5)
    second.join(5)
    assert len(calls) == 1


def test_the_backend_probe_reports_an_unreachable_database() -> None:
    # Port 1 on loopback refuses at once: PostgreSQL counts as down, the in-process queue with it.
    settings = Settings(database_url="postgresql://crm:pw@127.0.0.1:1/crm", jwt_secret="s" * 32)
    statuses = backend_probe(settings)()
    assert {name: status.ok for name, status in statuses.items()} == {
        "postgres": False,
        "queue": False,
        "ratelimit": True,
    }


def test_a_taken_port_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(database_url="postgresql://crm:pw@127.0.0.1:1/crm", jwt_secret="s" * 32)
    heartbeat = Heartbeat(max_age_seconds=30)
    first = serve_process_health(settings, heartbeat, port=0, name="first")
    assert first is not None
    try:
        assert serve_process_health(settings, heartbeat, port=first.port, name="second") is None
    finally:
        first.stop()
    assert "second not served: cannot listen" in caplog.text
