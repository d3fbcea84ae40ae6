"""Who is calling: bearer-token authentication, the principal dependency, and role guards."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

from crm_bulk.api.resources import Resources
from crm_bulk.auth import accounts
from crm_bulk.auth.accounts import Principal
from crm_bulk.auth.roles import Role, role_allows
from crm_bulk.auth.tokens import Claims

# Routes anyone may call: operations, the API docs, the dashboard's static files (it signs in like any
# client), and the two routes that hand out tokens.
PUBLIC_PATHS = ["^/healthz$", "^/readyz$", "^/metrics$", "^/schema", "^/ui(/|$)", "^/auth/"]


def _principal_of(resources: Resources, claims: Claims) -> Principal:
    return resources.in_transaction(
        accounts.load_principal, user_id=claims.user_id, account_id=claims.account_id
    )


class BearerTokenMiddleware(AbstractAuthenticationMiddleware):
    """Checks `Authorization: Bearer <jwt>` and loads the caller's current role and limits."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """The principal for a valid token; 401 otherwise."""
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException(
                "send `Authorization: Bearer <access token>` (POST /auth/login)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        resources: Resources = connection.app.state.resources
        claims = resources.tokens.verify(token.strip())
        principal = await anyio.to_thread.run_sync(_principal_of, resources, claims)
        return AuthenticationResult(user=principal, auth=claims)


def authentication_middleware() -> DefineMiddleware:
    """The middleware as the app installs it."""
    return DefineMiddleware(BearerTokenMiddleware, exclude=PUBLIC_PATHS)


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The dependency handlers declare as `principal: Principal`."""
    principal = request.scope.get("user")
    if not isinstance(principal, Principal):
        raise NotAuthorizedException(headers={"WWW-Authenticate": "Bearer"})
    return principal


def requires(role: Role) -> Any:
    """A guard admitting callers whose role is at least `role`."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.scope.get("user")
        if not isinstance(principal, Principal):
            raise NotAuthorizedException(headers={"WWW-Authenticate": "Bearer"})
        if not role_allows(principal.role, role):
            raise PermissionDeniedException(f"requires the {role} role; the caller is {principal.role}")

    guard.__name__ = f"requires_{role}"
    return guard


viewer = requires("viewer")
editor = requires("editor")
admin = requires("admin")
