"""`/auth`: register an account with its admin, and log in for an access token."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException, TooManyRequestsException
from litestar.params import JSONBody

from crm_bulk import metrics
from crm_bulk.api.client_address import client_address
from crm_bulk.api.problems import problem_responses
from crm_bulk.api.ratelimiting import rate_limit_headers
from crm_bulk.api.resources import Resources
from crm_bulk.auth import accounts
from crm_bulk.auth.roles import Role
from crm_bulk.auth.throttle import Admission, Bucket, LoginThrottle, charge_signup
from crm_bulk.errors import AuthenticationError, BackendUnavailableError, ValidationError
from crm_bulk.ratelimit import Decision

log = logging.getLogger(__name__)

# The format is what the document promises; accounts.normalize_login_email is what judges an address.
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=accounts.MAX_EMAIL_LENGTH,
        examples=["ada@example.com"],
        extra_json_schema={"format": "email"},
    ),
]
Password = Annotated[
    str, msgspec.Meta(min_length=1, max_length=256, examples=["correct horse battery staple"])
]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A new account and its first admin; the password must be hard to guess (422 `weak_password`)."""

    email: Email
    password: Annotated[
        str, msgspec.Meta(min_length=8, max_length=256, examples=["correct horse battery staple"])
    ]
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


def _throttled(
    limit: str, message: str, refusal: Decision, *, window_seconds: int
) -> TooManyRequestsException:
    metrics.RATE_LIMITED.labels(limit=limit).inc()
    return TooManyRequestsException(
        message, headers=rate_limit_headers(refusal, window_seconds=window_seconds)
    )


def _check_signup(resources: Resources, client: str) -> None:
    """403 when sign-up is closed, 429 when this client signed up too often; a limiter outage lets it by."""
    settings = resources.settings
    if not settings.open_registration:
        raise PermissionDeniedException("sign-up is closed here: an account admin adds new users")
    bucket = Bucket(settings.registration_burst, settings.registration_refill_seconds)
    try:
        decision = charge_signup(resources.limiter, client, bucket)
    except BackendUnavailableError as exc:
        metrics.RATE_LIMITER_ERRORS.inc()
        log.warning("sign-up throttle unavailable, attempt let through: %s", exc)
        return
    if not decision.allowed:
        raise _throttled(
            "signup",
            "too many sign-ups from this address; try again later",
            decision,
            window_seconds=bucket.window_seconds,
        )


def _admit_login(throttle: LoginThrottle, email: str, client: str) -> Admission:
    """The throttle's admission; a limiter outage lets the attempt through."""
    try:
        return throttle.admit(email, client)
    except BackendUnavailableError as exc:
        metrics.RATE_LIMITER_ERRORS.inc()
        log.warning("login throttle unavailable, attempt let through: %s", exc)
        return Admission(None)


def _count_failure(throttle: LoginThrottle, email: str, client: str, admission: Admission) -> Decision | None:
    """Charge the failure; the refusal to answer instead of 401 when the email is guarded."""
    try:
        return throttle.record_failure(email, client, guarded=admission.guarded)
    except BackendUnavailableError as exc:
        metrics.RATE_LIMITER_ERRORS.inc()
        log.warning("login throttle unavailable, failure not counted: %s", exc)
        return None


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
        responses=problem_responses(400, 403, 409, 413, 422, 429, 503),
    )
    def register(
        self,
        data: JSONBody[RegisterRequest],
        request: Request[Any, Any, Any],
        resources: NamedDependency[Resources],
    ) -> RegisterResponse:
        """409 when a user with this email exists; 403 when sign-up is closed (`CRM_BULK_OPEN_REGISTRATION`);
        429 when this client address signed up too often (`CRM_BULK_REGISTRATION_*`)."""
        # No `conn` dependency: a refused sign-up must not take a pooled connection.
        _check_signup(resources, _client_of(request))
        email = accounts.normalize_login_email(data.email)
        name = data.account_name.strip()
        if not name:
            raise ValidationError("must not be blank", field="account_name", code="blank")
        if "\x00" in name:
            raise ValidationError(
                "may not contain NUL characters", field="account_name", code="invalid_value"
            )
        created = resources.in_transaction(
            accounts.register, email=email, password=data.password, account_name=name
        )
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
        """401 for wrong credentials; repeated failures answer 429 for a while (`crm_bulk.auth.throttle`)."""
        # No `conn` here: a refused attempt must not take a pooled connection (nor wait for one), and none is
        # held while the throttle's backend answers.
        email = data.email.strip().lower()
        client = _client_of(request)
        throttle = resources.login_throttle
        admission = _admit_login(throttle, email, client)
        if admission.refusal is not None:
            raise _throttled(
                "login",
                "too many failed logins; try again later",
                admission.refusal,
                window_seconds=throttle.per_pair.window_seconds,
            )
        try:
            user_id, account_id = resources.in_transaction(
                accounts.authenticate, email=email, password=data.password
            )
        except AuthenticationError:
            metrics.LOGIN_FAILURES.inc()
            refusal = _count_failure(throttle, email, client, admission)
            if refusal is not None:
                raise _throttled(
                    "login",
                    "too many failed logins for this email; try again later",
                    refusal,
                    window_seconds=throttle.per_client.window_seconds,
                ) from None
            raise
        issued = resources.tokens.issue(user_id=user_id, account_id=account_id)
        return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)
