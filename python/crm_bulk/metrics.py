"""The Prometheus registry of crm-bulk and the API's metrics; other parts register theirs on `REGISTRY`."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "crm_bulk_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "crm_bulk_http_request_duration_seconds",
    "Time from the request reaching the app to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "crm_bulk_rate_limited_total",
    "Requests refused with 429, by limit (`api`: per-account request rate, `login`: failed-login throttle, "
    "`signup`: sign-ups per client, `upload`: uploads in progress).",
    ["limit"],
    registry=REGISTRY,
)
RATE_LIMITER_ERRORS = Counter(
    "crm_bulk_rate_limiter_errors_total",
    "Limiter calls that failed because its backend (Redis) did not answer; the request was let through.",
    registry=REGISTRY,
)
LOGIN_FAILURES = Counter(
    "crm_bulk_login_failures_total", "Logins refused for wrong credentials.", registry=REGISTRY
)
# Shipped by whichever process runs the shipper: the workers with a ClickHouse server (summed by the pool's
# endpoint), the chDB store host otherwise. Applied chunks minus shipped ones is the log's backlog.
SHIPPED_CHUNKS = Counter(
    "crm_bulk_shipper_chunks_total",
    "Chunk outboxes the log shipper moved to ClickHouse.",
    registry=REGISTRY,
)
SHIP_FAILURES = Counter(
    "crm_bulk_shipper_failures_total",
    "Shipping passes that failed (ClickHouse or PostgreSQL down or slow) and were retried.",
    registry=REGISTRY,
)
IMPORT_ROWS = Counter(
    "crm_bulk_import_rows_total",
    "Rows received by streamed imports (CSV and NDJSON uploads).",
    registry=REGISTRY,
)


def render() -> tuple[bytes, str]:
    """The exposition text of every registered metric, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
