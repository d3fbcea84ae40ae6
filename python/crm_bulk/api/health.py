"""`/healthz` (the process is up; each backend reported) and `/readyz` (every backend reachable)."""

from __future__ import annotations

import time

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from crm_bulk import health
from crm_bulk.api.resources import Resources
from crm_bulk.errors import CrmBulkError


class HealthBody(msgspec.Struct, frozen=True):
    """Overall status and one entry per backend."""

    status: str
    backends: dict[str, health.BackendStatus]


def _clickhouse_status(resources: Resources) -> health.BackendStatus:
    target = health.redact(resources.settings.clickhouse_dsn)
    kind = "chdb" if resources.settings.clickhouse_embedded else "clickhouse"
    started = time.perf_counter()
    try:
        resources.store.check()
    except CrmBulkError as exc:
        return health.BackendStatus(kind, target, ok=False, error=str(exc).splitlines()[0][:300])
    return health.BackendStatus(
        kind, target, ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2)
    )


def collect(resources: Resources) -> HealthBody:
    """Probe every backend of this deployment."""
    database = health.probe_postgres(resources.database_url)
    backends = {
        "postgres": database,
        "queue": health.queue_status(resources.settings, database),
        "clickhouse": _clickhouse_status(resources),
        "ratelimit": health.ratelimit_status(resources.settings),
    }
    status = "ok" if all(b.ok for b in backends.values()) else "degraded"
    return HealthBody(status=status, backends=backends)


@get(
    "/healthz",
    sync_to_thread=True,
    tags=["operations"],
    security=[{}],
    summary="Process liveness, with each backend reported",
)
def healthz(state: State) -> HealthBody:
    """Always 200 while the process serves; the body says how each backend answers."""
    return collect(state.resources)


@get(
    "/readyz",
    sync_to_thread=True,
    tags=["operations"],
    security=[{}],
    summary="Readiness: 503 unless every backend answers",
    responses={
        503: ResponseSpec(
            HealthBody, description="A backend does not answer; the body says which.", generate_examples=False
        )
    },
)
def readyz(state: State) -> Response[HealthBody]:
    """200 when every backend answers, else 503 with the same body."""
    body = collect(state.resources)
    return Response(body, status_code=200 if body.status == "ok" else 503)
