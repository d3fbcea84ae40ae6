"""Response hygiene and metrics: security headers on every answer, request counts and latency, `/metrics`."""

from __future__ import annotations

import time

from litestar import Response, get
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from crm_bulk import metrics
from crm_bulk.api.problems import problem_responses

_STARTED = "crm_bulk.started"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
}
# JSON answers load nothing; only the docs pages need scripts, styles and fonts (from the docs UI's CDN).
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://unpkg.com; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://unpkg.com "
    "https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


class RequestTimingMiddleware(ASGIMiddleware):
    """Notes when a request reached the app, for the latency histogram."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Stamp the scope and pass on."""
        scope["state"][_STARTED] = time.perf_counter()
        await next_app(scope, receive, send)


async def finish_response(message: Message, scope: Scope) -> None:
    """`before_send` hook: add security headers, then count the response and its latency when it ends."""
    if scope["type"] != ScopeType.HTTP:
        return
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        for name, value in SECURITY_HEADERS.items():
            headers[name] = value
        path = scope["path"]
        headers["Content-Security-Policy"] = DOCS_CSP if path.startswith("/schema") else API_CSP
        if "cache-control" not in headers:
            headers["Cache-Control"] = "no-store"
        scope["state"]["crm_bulk.status"] = message["status"]
        return
    if message["type"] == "http.response.body" and not message.get("more_body", False):
        state = scope["state"]
        route = scope.get("path_template") or "unmatched"
        method = scope.get("method", "")
        metrics.HTTP_REQUESTS.labels(
            method=method, route=route, status=str(state.get("crm_bulk.status", 0))
        ).inc()
        started = state.get(_STARTED)
        if started is not None:
            metrics.HTTP_DURATION.labels(method=method, route=route).observe(time.perf_counter() - started)


@get(
    "/metrics",
    tags=["operations"],
    security=[{}],
    summary="Prometheus metrics (text exposition format)",
    media_type="text/plain",
    responses=problem_responses(422),  # an undeclared query parameter, as on every route
)
async def metrics_endpoint() -> Response[bytes]:
    """The exposition text of every crm-bulk metric in this process."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
