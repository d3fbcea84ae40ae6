"""The `/healthz` and `/readyz` of the scheduler, the worker pool and the webhook deliverer against the real
PostgreSQL and Redis: alive while their loops tick, ready only while their backends answer, and a backend
outage makes them unready, not dead (orchestrators restart dead processes and only wait for unready ones)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from crm_bulk.dispatch import run_scheduler
from crm_bulk.settings import Settings
from crm_bulk.webhooks.deliverer import run_deliverer
from crm_bulk.worker import run_worker_pool
from tests.integration.pipeline_support import own_database, pipeline_settings
from tests.integration.server_support import free_port


@pytest.fixture(scope="module")
def probe_db(pg_server_url: str) -> Iterator[str]:
    with own_database(pg_server_url) as url:
        yield url


def get(port: int, path: str) -> tuple[int, Any]:
    """Status and JSON body; (0, None) while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


def wait_for(
    port: int, path: str, accept: Callable[[int, Any], bool], timeout: float = 30
) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    answer = get(port, path)
    while not accept(*answer) and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = get(port, path)
    return answer


@contextmanager
def running(target: Callable[..., object], *args: object, **kwargs: object) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(*args, stop), kwargs=kwargs, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def _pool(settings: Settings, stop: threading.Event) -> None:
    run_worker_pool(settings, 1, stop_event=stop, drain_timeout=20)


def ticked(status: int, body: Any) -> bool:
    return status == 200 and body["last_tick_seconds_ago"] is not None


def test_the_scheduler_is_alive_and_ready_with_its_backends(probe_db: str, redis_url: str) -> None:
    port = free_port()
    settings = pipeline_settings(probe_db, queue_url=None, redis_url=redis_url, scheduler_health_port=port)
    with running(run_scheduler, settings):
        status, body = wait_for(port, "/healthz", ticked)
        assert status == 200 and body["status"] == "ok" and body["last_tick_seconds_ago"] < 5
        assert get(port, "/readyz") == (
            200,
            {"status": "ready", "backends": {"postgres": True, "queue": True, "ratelimit": True}},
        )
    # Stopped with its loop: the port is free again.
    assert get(port, "/healthz") == (0, None)


def test_the_scheduler_without_redis_is_unready_but_alive(probe_db: str) -> None:
    port = free_port()
    # Nothing listens there: every release pass fails on the limiter and is retried.
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = pipeline_settings(probe_db, queue_url=None, redis_url=dead_redis, scheduler_health_port=port)
    with running(run_scheduler, settings):
        status, body = wait_for(port, "/readyz", lambda status, _: status != 0)
        assert (status, body["status"], body["backends"]["ratelimit"]) == (503, "unready", False)
        assert body["backends"]["postgres"] is True
        assert wait_for(port, "/healthz", ticked)[0] == 200


def test_the_worker_pool_serves_probes_beside_its_metrics(probe_db: str, redis_url: str) -> None:
    port = free_port()
    settings = pipeline_settings(probe_db, queue_url=None, redis_url=redis_url, worker_metrics_port=port)
    with running(_pool, settings):
        status, body = wait_for(port, "/healthz", ticked)
        assert status == 200 and body["status"] == "ok"
        assert get(port, "/readyz") == (
            200,
            {"status": "ready", "backends": {"postgres": True, "queue": True, "ratelimit": True}},
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert "crm_bulk_worker_restarts_total 0.0" in response.read().decode()


def test_the_worker_pool_with_its_database_gone_is_unready(probe_db: str) -> None:
    port = free_port()
    # The queue is the database's table: with PostgreSQL unreachable both are down.
    settings = pipeline_settings(
        f"postgresql://crm:pw@127.0.0.1:{free_port()}/crm", queue_url=None, worker_metrics_port=port
    )
    with running(_pool, settings):
        status, body = wait_for(port, "/readyz", lambda status, _: status != 0)
        assert status == 503
        assert body["backends"] == {"postgres": False, "queue": False, "ratelimit": True}
        assert get(port, "/healthz")[0] == 200


def test_the_webhook_deliverer_is_alive_and_ready_with_postgres(probe_db: str) -> None:
    port = free_port()
    settings = pipeline_settings(probe_db, queue_url=None, webhooks_health_port=port)
    with running(run_deliverer, settings):
        status, body = wait_for(port, "/healthz", ticked)
        assert status == 200 and body["last_tick_seconds_ago"] < 5
        # PostgreSQL is all it needs: no queue or limiter in its readiness.
        assert get(port, "/readyz") == (200, {"status": "ready", "backends": {"postgres": True}})


def test_the_webhook_deliverer_without_its_database_is_unready_but_alive() -> None:
    port = free_port()
    gone = f"postgresql://crm:pw@127.0.0.1:{free_port()}/crm"
    settings = pipeline_settings(gone, queue_url=None, webhooks_health_port=port)
    with running(run_deliverer, settings):
        status, body = wait_for(port, "/readyz", lambda status, _: status != 0)
        assert (status, body) == (503, {"status": "unready", "backends": {"postgres": False}})
        # Its passes fail and are retried: each retry is a tick.
        time.sleep(2.5)
        status, body = get(port, "/healthz")
        assert status == 200 and body["last_tick_seconds_ago"] is not None
