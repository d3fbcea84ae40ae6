"""Probes for each backend, shared by `/healthz`, `/readyz` and the CLI's startup checks."""

from __future__ import annotations

import time

import msgspec
import psycopg

from crm_bulk.env_values import redact
from crm_bulk.settings import Settings


class BackendStatus(msgspec.Struct, frozen=True):
    """One backend as a client sees it: which kind, where (no secrets), and whether it answered."""

    kind: str
    target: str
    ok: bool
    latency_ms: float | None = None
    error: str | None = None


def probe_postgres(url: str, *, timeout: float = 2.0) -> BackendStatus:
    """Connect and run `SELECT 1`."""
    started = time.perf_counter()
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return BackendStatus("postgres", redact(url), ok=False, error=_first_line(exc))
    return BackendStatus("postgres", redact(url), ok=True, latency_ms=_ms(started))


def probe_kafka(bootstrap: str, *, timeout: float = 2.0) -> BackendStatus:
    """Ask the cluster for its metadata."""
    from confluent_kafka.admin import AdminClient

    started = time.perf_counter()
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000)})
        admin.list_topics(timeout=timeout)
    except Exception as exc:  # confluent-kafka raises KafkaException with varying payloads
        return BackendStatus("kafka", bootstrap, ok=False, error=_first_line(exc))
    return BackendStatus("kafka", bootstrap, ok=True, latency_ms=_ms(started))


def probe_redis(url: str, *, timeout: float = 2.0) -> BackendStatus:
    """PING."""
    import redis

    started = time.perf_counter()
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return BackendStatus("redis", redact(url), ok=False, error=_first_line(exc))
    return BackendStatus("redis", redact(url), ok=True, latency_ms=_ms(started))


def queue_status(settings: Settings, database_status: BackendStatus) -> BackendStatus:
    """The queue: the Postgres table rides on the database; Kafka is probed."""
    if settings.queue_kind == "kafka":
        return probe_kafka(settings.kafka_bootstrap)
    return BackendStatus(
        "postgres-table", database_status.target, ok=database_status.ok, error=database_status.error
    )


def ratelimit_status(settings: Settings) -> BackendStatus:
    """Redis when configured, else the in-process limiter (always up)."""
    if settings.redis_url is None:
        return BackendStatus("in-process", "local", ok=True)
    return probe_redis(settings.redis_url)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
