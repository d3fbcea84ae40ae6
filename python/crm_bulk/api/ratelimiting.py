"""Per-account request rate limits (429 with `Retry-After` and `RateLimit-*` headers).

The limit is the account's `api_requests_per_minute`, read with the principal on every request: a GCRA bucket
that refills at that rate per minute and holds a minute's worth as burst. Every answer of an authenticated
route carries the `RateLimit-*` headers (IETF draft `ratelimit-headers`).
"""

from __future__ import annotations

import logging
import math

import anyio.to_thread
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from crm_bulk import metrics
from crm_bulk.api.resources import Resources
from crm_bulk.auth.accounts import Principal
from crm_bulk.errors import BackendUnavailableError
from crm_bulk.ratelimit import Decision, InProcessLimiter, RateLimiter

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def rate_limit_headers(decision: Decision, *, window_seconds: int = WINDOW_SECONDS) -> dict[str, str]:
    """`RateLimit-*` headers for a decision, plus `Retry-After` when it is a refusal."""
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_after)),
        "RateLimit-Policy": f"{decision.limit};w={window_seconds}",
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
    return headers


async def acquire(
    limiter: RateLimiter, key: str, *, cost: int, rate_per_second: float, burst: int
) -> Decision | None:
    """Ask the limiter without blocking the event loop; None (and a warning) when its backend is down.

    A limiter outage lets requests through rather than taking the API down with it; it is logged and counted
    in `crm_bulk_rate_limiter_errors_total`.
    """
    try:
        if isinstance(limiter, InProcessLimiter):
            return limiter.acquire(key, cost=cost, rate_per_second=rate_per_second, burst=burst)
        return await anyio.to_thread.run_sync(
            lambda: limiter.acquire(key, cost=cost, rate_per_second=rate_per_second, burst=burst)
        )
    except BackendUnavailableError as exc:
        metrics.RATE_LIMITER_ERRORS.inc()
        log.warning("rate limiter unavailable, request let through: %s", exc)
        return None


class AccountRateLimitMiddleware(ASGIMiddleware):
    """Charges one request to the caller's account bucket; runs after authentication."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Refuse with 429 when the account's bucket is empty; otherwise annotate the response."""
        principal = scope.get("user")
        if not isinstance(principal, Principal):
            await next_app(scope, receive, send)
            return
        resources: Resources = scope["litestar_app"].state.resources
        per_minute = principal.api_requests_per_minute
        decision = await acquire(
            resources.limiter,
            f"api:{principal.account_id}",
            cost=1,
            rate_per_second=per_minute / WINDOW_SECONDS,
            burst=per_minute,
        )
        if decision is None:
            await next_app(scope, receive, send)
            return
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(limit="api").inc()
            raise TooManyRequestsException(
                f"the account's limit of {per_minute} requests per minute is reached", headers=headers
            )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableScopeHeaders.from_message(message)
                for name, value in headers.items():
                    response_headers[name] = value
            await send(message)

        await next_app(scope, receive, send_with_headers)
