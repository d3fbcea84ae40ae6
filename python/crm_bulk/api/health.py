"""`/healthz` (the process is up; each backend reported) and `/readyz` (every backend reachable).

`postgres_pool` is this process's own connection pool: a database that answers does not make the API ready
when every pooled connection is taken and requests queue for one (they would answer 503 after the pool's
wait). It is ready again as soon as a connection comes free.

The backends are probed at most once a second (`Resources.health_probes`), whatever the request rate; the
pool, this process's own state, is read on every request. Where each backend is (host, port, database, data
path) and what its driver said are shown only to an operator, who sends `CRM_BULK_HEALTH_TOKEN` as a bearer
token; everyone else gets each backend's kind, status and latency.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from crm_bulk import health
from crm_bulk.api.problems import problem_responses
from crm_bulk.api.resources import Resources
from crm_bulk.env_values import redact
from crm_bulk.errors import CrmBulkError

# How long /readyz waits for a pooled connection when none is idle before it calls the pool exhausted: well
# under a readiness probe's timeout, long enough to ride out a burst of short requests.
POOL_WAIT_SECONDS = 0.5


# Backends whose errors are this process's own words (counts, no address or server message): public.
OWN_ERRORS = frozenset({"postgres_pool"})
UNAVAILABLE = "unavailable"


class BackendReport(msgspec.Struct, frozen=True, omit_defaults=True):
    """One backend as the caller may see it: `target` only for an operator, and `error` too unless it is
    this process's own."""

    kind: str
    ok: bool
    latency_ms: float | None = None
    error: str | None = None
    target: str | None = None


class HealthBody(msgspec.Struct, frozen=True):
    """Overall status and one entry per backend."""

    status: str
    backends: dict[str, BackendReport]


def _clickhouse_status(resources: Resources) -> health.BackendStatus:
    target = redact(resources.settings.clickhouse_dsn)
    kind = "chdb" if resources.settings.clickhouse_embedded else "clickhouse"
    started = time.perf_counter()
    try:
        resources.store.check()
    except CrmBulkError as exc:
        return health.BackendStatus(kind, target, ok=False, error=str(exc).splitlines()[0][:300])
    return health.BackendStatus(
        kind, target, ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2)
    )


def _pool_status(resources: Resources) -> health.BackendStatus:
    started = time.perf_counter()
    ok = resources.pool_has_room(wait=POOL_WAIT_SECONDS)
    stats = resources.pool_stats()
    if ok:
        return health.BackendStatus(
            "pool", "api", ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2)
        )
    error = (
        f"no pooled connection free within {POOL_WAIT_SECONDS} s: {stats.get('pool_size', 0)} open, "
        f"{stats.get('pool_available', 0)} idle, {stats.get('requests_waiting', 0)} requests waiting"
    )
    return health.BackendStatus("pool", "api", ok=False, error=error)


def _probe_backends(resources: Resources) -> dict[str, health.BackendStatus]:
    """Probe every backend of this deployment."""
    database = health.probe_postgres(resources.database_url)
    return {
        "postgres": database,
        "queue": health.queue_status(resources.settings, database),
        "clickhouse": _clickhouse_status(resources),
        "ratelimit": health.ratelimit_status(resources.settings),
    }


def _report(name: str, status: health.BackendStatus, *, detail: bool) -> BackendReport:
    if detail:
        return BackendReport(status.kind, status.ok, status.latency_ms, status.error, status.target)
    error = status.error if name in OWN_ERRORS or status.error is None else UNAVAILABLE
    return BackendReport(status.kind, status.ok, status.latency_ms, error)


def collect(resources: Resources, *, detail: bool = True) -> HealthBody:
    """Every backend of this deployment (probed at most once a second), with targets and driver errors when
    `detail`."""
    probed = resources.health_probes.get(lambda: _probe_backends(resources))
    statuses = {"postgres": probed["postgres"], "postgres_pool": _pool_status(resources)}
    statuses.update((name, status) for name, status in probed.items() if name != "postgres")
    backends = {name: _report(name, status, detail=detail) for name, status in statuses.items()}
    status = "ok" if all(b.ok for b in backends.values()) else "degraded"
    return HealthBody(status=status, backends=backends)


def is_operator(request: Request[Any, Any, Any], resources: Resources) -> bool:
    """True when the request carries the operator's health token as `Authorization: Bearer <token>`."""
    token = resources.settings.health_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    # Constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(given.strip().encode(), token.encode())


@get(
    "/healthz",
    sync_to_thread=True,
    tags=["operations"],
    security=[{}],
    summary="Process liveness, with each backend reported",
    responses=problem_responses(422),  # an undeclared query parameter, as on every route
)
def healthz(state: State, request: Request[Any, Any, Any]) -> HealthBody:
    """Always 200 while the process serves; the body says how each backend answers."""
    return collect(state.resources, detail=is_operator(request, state.resources))


@get(
    "/readyz",
    sync_to_thread=True,
    tags=["operations"],
    security=[{}],
    summary="Readiness: 503 unless every backend answers",
    responses={
        503: ResponseSpec(
            HealthBody, description="A backend does not answer; the body says which.", generate_examples=False
        ),
        **problem_responses(422),
    },
)
def readyz(state: State, request: Request[Any, Any, Any]) -> Response[HealthBody]:
    """200 when every backend answers, else 503 with the same body."""
    body = collect(state.resources, detail=is_operator(request, state.resources))
    return Response(body, status_code=200 if body.status == "ok" else 503)
