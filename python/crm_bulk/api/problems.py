"""Every error answers `application/problem+json` (RFC 9457); no stack trace ever reaches a client.

One table maps the crm-bulk exception tree, Litestar's HTTP exceptions and database errors onto problems.
Validation problems (422) list the fields at fault with a machine-readable code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import msgspec
import psycopg
import psycopg_pool
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from crm_bulk.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    CrmBulkError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationError,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:crm-bulk:problem:"


class FieldProblem(msgspec.Struct, frozen=True):
    """One input field at fault: where (`field`, dotted for nested ones) and what (`code`)."""

    field: str
    code: str
    message: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """An RFC 9457 problem details object, with crm-bulk's extension members."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None
    existing_id: int | str | None = None


def problem_response(
    request: Request[Any, Any, Any] | None,
    status: int,
    *,
    kind: str | None = None,
    detail: str | None = None,
    errors: list[FieldProblem] | None = None,
    existing_id: int | str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[Problem]:
    """A problem+json response; `kind` names the problem type, else `about:blank` (the status says it all)."""
    body = Problem(
        type=TYPE_BASE + kind if kind else "about:blank",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else None,
        errors=errors,
        existing_id=existing_id,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _validation_error(request: Request[Any, Any, Any], exc: ValidationError) -> Response[Problem]:
    field = exc.field or "body"
    return problem_response(
        request,
        422,
        kind="validation",
        detail=f"{field}: {exc}",
        errors=[FieldProblem(field=field, code=exc.code, message=str(exc))],
    )


def _litestar_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    """Litestar's own validation failures: malformed JSON is a 400, well-formed but wrong input a 422."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    messages = [e for e in extra if isinstance(e, dict)]
    if any(str(m.get("message", "")).startswith(("JSON is malformed", "Malformed")) for m in messages):
        return problem_response(request, 400, kind="malformed", detail=str(messages[0]["message"]))
    errors = [
        FieldProblem(
            field=_field_of(m),
            code=_litestar_code(str(m.get("message", ""))),
            message=str(m.get("message", "invalid")),
        )
        for m in messages
    ] or [FieldProblem(field="body", code="invalid", message=exc.detail)]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return problem_response(request, 422, kind="validation", detail=detail, errors=errors)


_NAMED_FIELD = re.compile(r"field `([^`]+)`")


def _field_of(message: dict[str, Any]) -> str:
    """The dotted path of the field at fault; msgspec names missing and unknown fields in the message."""
    key = str(message.get("key") or "")
    key = "" if key in {"data", "body"} else key.removeprefix("data.")
    named = _NAMED_FIELD.search(str(message.get("message", "")))
    if named is not None:
        return f"{key}.{named.group(1)}" if key else named.group(1)
    return key or str(message.get("source") or "body")


# msgspec's validation messages and their codes, first match wins: by how the message starts, then, for an
# "Expected `…`" message, by what it contains.
_MESSAGE_CODES: tuple[tuple[str, str], ...] = (
    ("Object missing required field", "required"),
    ("Object contains unknown field", "unknown_field"),
    ("Invalid enum value", "invalid_value"),
    ("Unknown query parameter", "unknown_parameter"),
)
_EXPECTED_CODES: tuple[tuple[str, str], ...] = (
    ("got `", "invalid_type"),
    ("length >=", "too_short"),
    ("length <=", "too_long"),
    (">=", "out_of_range"),
    ("<=", "out_of_range"),
    (" > ", "out_of_range"),
    (" < ", "out_of_range"),
)


def _litestar_code(message: str) -> str:
    """A stable code for msgspec's validation messages."""
    for prefix, code in _MESSAGE_CODES:
        if message.startswith(prefix):
            return code
    if not message.startswith("Expected `"):
        return "invalid"
    return next((code for needle, code in _EXPECTED_CODES if needle in message), "invalid_value")


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    if isinstance(exc, ValidationException):
        return _litestar_validation(request, exc)
    status = exc.status_code
    if status >= 500:
        log.error("%s %s answered %s: %s", request.method, request.url.path, status, exc.detail)
        return problem_response(request, status, headers=exc.headers)
    detail = exc.detail if exc.detail != HTTPStatus(status).phrase else None
    return problem_response(request, status, detail=detail, headers=exc.headers)


# Errors whose problem is their status, kind and message alone.
_PLAIN_ERRORS: tuple[tuple[type[CrmBulkError], tuple[int, str]], ...] = (
    (NotFoundError, (404, "not-found")),
    (PayloadTooLargeError, (413, "too-large")),
)


def _domain_error(request: Request[Any, Any, Any], exc: CrmBulkError) -> Response[Problem]:
    if isinstance(exc, ValidationError):
        return _validation_error(request, exc)
    for error, (status, kind) in _PLAIN_ERRORS:
        if isinstance(exc, error):
            return problem_response(request, status, kind=kind, detail=str(exc))
    if isinstance(exc, ConflictError):
        return problem_response(request, 409, kind="conflict", detail=str(exc), existing_id=exc.existing_id)
    if isinstance(exc, AuthenticationError):
        return problem_response(
            request, 401, kind="unauthenticated", detail=str(exc), headers={"WWW-Authenticate": "Bearer"}
        )
    if isinstance(exc, BackendUnavailableError):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return problem_response(
            request,
            503,
            kind="backend-unavailable",
            detail=f"{exc.backend} is unavailable",
            headers={"Retry-After": "5"},
        )
    return _internal(request, exc)


def _not_configured(request: Request[Any, Any, Any], exc: ConfigError) -> Response[Problem]:
    # The deployment lacks a setting this request needs (e.g. webhook secrets under key-pair tokens): the
    # operator's to fix, and nothing the client sent is wrong.
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        request, 503, kind="not-configured", detail=f"this deployment is not configured for it: {exc}"
    )


def _database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if isinstance(exc, psycopg.DataError):
        # Values the database refuses to read (a malformed timestamp in a filter): client input, not a crash.
        message = exc.diag.message_primary or "invalid value"
        return problem_response(
            request,
            422,
            kind="validation",
            detail=message,
            errors=[FieldProblem(field="request", code="invalid_value", message=message)],
        )
    if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return problem_response(
            request,
            503,
            kind="backend-unavailable",
            detail="postgres is unavailable",
            headers={"Retry-After": "5"},
        )
    return _internal(request, exc)


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Problem]:
    """A JSON body nested beyond what the decoder follows (a nesting bomb) is malformed input."""
    return problem_response(request, 400, kind="malformed", detail="the JSON body is nested too deeply")


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, detail="an internal error occurred; it has been logged")


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Problem]]] = {
    HTTPException: _http_exception,
    CrmBulkError: _domain_error,
    ConfigError: _not_configured,
    psycopg.Error: _database_error,
    psycopg_pool.PoolTimeout: _database_error,
    RecursionError: _too_deep,
    Exception: _internal,
}

_DESCRIPTIONS = {
    400: "Malformed request (unparseable JSON, bad headers).",
    401: "Missing, invalid or expired access token, or wrong credentials.",
    403: "The caller's role does not allow this.",
    404: "No such resource in the caller's account.",
    409: "Conflicts with the current state; `existing_id` names the existing resource when there is one.",
    413: "Request body larger than the limit.",
    415: "Unsupported content type.",
    422: "Input that breaks the contract; `errors` lists each field with a code.",
    429: "Rate limited: wait `Retry-After` seconds (see the `RateLimit-*` headers).",
    503: "A backend is unavailable; try again later.",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI response entries for the problem statuses a route can answer."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
    }


# The statuses every authenticated route can answer, whatever it does (422: a path or query parameter out of
# its bounds, or a body that breaks the contract).
AUTHENTICATED = (400, 401, 413, 422, 429, 503)
