"""Worker metrics for Prometheus, and the `/metrics` app the pool's HTTP endpoint serves them from.

Worker processes write their values to files in `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's
multiprocess mode, set up by the pool before it spawns them); the supervisor serves the sum over all
processes, live and dead. A worker run in a single process serves `WORKER_REGISTRY` directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app, multiprocess
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_REGISTRY = CollectorRegistry(auto_describe=True)

ENTITIES = Counter(
    "crm_bulk_worker_entities_total",
    "Entities of applied chunks, by final outcome (succeeded, failed, skipped).",
    ["outcome"],
    registry=WORKER_REGISTRY,
)
CHUNKS = Counter(
    "crm_bulk_worker_chunks_total",
    "Chunk deliveries handled, by result: applied, already_done (redelivered), failed, abandoned (shutdown).",
    ["result"],
    registry=WORKER_REGISTRY,
)
CHUNK_SECONDS = Histogram(
    "crm_bulk_worker_chunk_duration_seconds",
    "Time to apply one chunk (the Postgres transaction), successful attempts only.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=WORKER_REGISTRY,
)
RETRIES = Counter(
    "crm_bulk_worker_retries_total",
    "Chunk attempts that failed transiently and were tried again.",
    registry=WORKER_REGISTRY,
)
DEAD_LETTERS = Counter(
    "crm_bulk_worker_dead_letters_total",
    "Chunks marked failed and sent to the dead-letter topic.",
    registry=WORKER_REGISTRY,
)
PACING_WAIT = Histogram(
    "crm_bulk_worker_pacing_wait_seconds",
    "Time a chunk waited for its account's entity budget before applying.",
    buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=WORKER_REGISTRY,
)
QUEUE_LAG = Gauge(
    "crm_bulk_worker_queue_lag_messages",
    "Chunk messages waiting: Kafka, per process its partitions' lag (sum them); Postgres, the whole table.",
    registry=WORKER_REGISTRY,
    multiprocess_mode="liveall",
)


def restarts_counter() -> Counter:
    """The supervisor's count of restarted workers; created by the supervisor only, so worker processes never
    write a second copy of it into the multiprocess files."""
    return Counter(
        "crm_bulk_worker_restarts_total",
        "Worker processes the supervisor restarted after they died.",
        registry=None,
    )


def metrics_app(*, multiprocess_dir: str | None = None, extra: Sequence[Collector] = ()) -> WSGIApplication:
    """The WSGI app of `/metrics`: the multiprocess sum when `multiprocess_dir` is given, else this process's
    worker metrics; plus `extra` collectors of the serving process. Served by the pool's endpoint
    (`crm_bulk.process_health`) beside `/healthz` and `/readyz`."""
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    else:
        registry = WORKER_REGISTRY
    for collector in extra:
        registry.register(collector)
    return make_wsgi_app(registry)


def forget_process(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the sums)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
