"""`/auth`: register an account with its admin, and log in for an access token."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.exceptions import TooManyRequestsException
from litestar.params import JSONBody

from crm_bulk import metrics
from crm_bulk.api.dependencies import Connection
from crm_bulk.api.client_address import client_address
from crm_bulk.api.problems import problem_responses
from crm_bulk.api.ratelimiting import rate_limit_headers
from crm_bulk.api.resources import Resources
from crm_bulk.auth import accounts
from crm_bulk.auth.roles import Role
from crm_bulk.auth.throttle import PER_EMAIL
from crm_bulk.errors import AuthenticationError, BackendUnavailableError, ValidationError

log = logging.getLogger(__name__)

Email = Annotated[
    str, msgspec.Meta(min_length=3, max_length=accounts.MAX_EMAIL_LENGTH, examples=["ada@example.com"])
]
Password = Annotated[
    str, msgspec.Meta(min_length=1, max_length=256, examples=["correct horse battery staple"])
]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A new account and its first admin."""

    email: Email
    password: Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
    account_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["Acme"])]


class RegisterResponse(msgspec.Struct):
    """The new account, and its admin user."""

    user_id: int
    account_id: int
    role: Role


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Credentials."""

    email: Email
    password: Password


class TokenResponse(msgspec.Struct):
    """A bearer token for `Authorization: Bearer …`, valid `expires_in` seconds."""

    access_token: str
    expires_in: int
    token_type: str = "bearer"


def _client_of(request: Request[Any, Any, Any]) -> str:
    resources: Resources = request.app.state.resources
    return client_address(request, resources.proxies)


class AuthController(Controller):
    """Public routes that hand out identities and tokens."""

    path = "/auth"
    tags = ["auth"]  # noqa: RUF012 - Litestar reads it as a class attribute
    security = [{}]  # noqa: RUF012

    @post(
        "/register",
        sync_to_thread=True,
        status_code=201,
        summary="Create an account and its admin user",
        responses=problem_responses(400, 409, 413, 422, 503),
    )
    def register(
        self, data: JSONBody[RegisterRequest], conn: NamedDependency[Connection]
    ) -> RegisterResponse:
        """409 when a user with this email exists."""
        email = accounts.normalize_login_email(data.email)
        name = data.account_name.strip()
        if not name:
            raise ValidationError("must not be blank", field="account_name", code="blank")
        if "\x00" in name:
            raise ValidationError(
                "may not contain NUL characters", field="account_name", code="invalid_value"
            )
        created = accounts.register(conn, email=email, password=data.password, account_name=name)
        return RegisterResponse(user_id=created.user_id, account_id=created.account_id, role=created.role)

    @post(
        "/login",
        sync_to_thread=True,
        status_code=200,
        summary="Exchange credentials for an access token",
        responses=problem_responses(400, 401, 413, 422, 429, 503),
    )
    def login(
        self,
        data: JSONBody[LoginRequest],
        request: Request[Any, Any, Any],
        resources: NamedDependency[Resources],
    ) -> TokenResponse:
        """401 for wrong credentials; repeated failures per email or per client answer 429 for a while."""
        # No `conn` here: a refused attempt must not take a pooled connection (nor wait for one), and none is
        # held while the throttle's backend answers.
        email = data.email.strip().lower()
        client = _client_of(request)
        throttle = resources.login_throttle
        try:
            refusal = throttle.refusal(email, client)
        except BackendUnavailableError as exc:
            metrics.RATE_LIMITER_ERRORS.inc()
            log.warning("login throttle unavailable, attempt let through: %s", exc)
            refusal = None
        if refusal is not None:
            metrics.RATE_LIMITED.labels(limit="login").inc()
            window = int(PER_EMAIL.burst * PER_EMAIL.refill_seconds)
            raise TooManyRequestsException(
                "too many failed logins; try again later",
                headers=rate_limit_headers(refusal, window_seconds=window),
            )
        try:
            user_id, account_id = resources.in_transaction(
                accounts.authenticate, email=email, password=data.password
            )
        except AuthenticationError:
            metrics.LOGIN_FAILURES.inc()
            try:
                throttle.record_failure(email, client)
            except BackendUnavailableError as exc:
                metrics.RATE_LIMITER_ERRORS.inc()
                log.warning("login throttle unavailable, failure not counted: %s", exc)
            raise
        issued = resources.tokens.issue(user_id=user_id, account_id=account_id)
        return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)
