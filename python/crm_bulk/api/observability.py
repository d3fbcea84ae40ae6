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
# JSON answers load nothing. The dashboard (/ui) and the docs page (/schema) load scripts, styles and images
# from this origin only (both ship in the package), and never an inline script.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# Swagger UI sets style attributes from its scripts and draws its icons as data: images.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def content_security_policy(path: str) -> str:
    """The policy of the answer to `path`: the docs page's, the dashboard's, or the API's."""
    if path.startswith("/schema"):
        return DOCS_CSP
    if path == "/ui" or path.startswith("/ui/"):
        return UI_CSP
    return API_CSP


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
        headers["Content-Security-Policy"] = content_security_policy(path)
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
