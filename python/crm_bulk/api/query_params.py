"""One rule for query parameters on every route: a name the route does not declare answers 422.

What a route declares is what Litestar parsed from its handler's signature (and its dependencies'): the same
set the OpenAPI document lists, so a route that gains a parameter allows it the moment it is declared, with
no list kept here. A handler may also accept names by pattern, through `opt={ACCEPTS: predicate}` (the
contacts listing's filter conditions, `field` and `field.op`).

The check is an app-wide guard: it runs after authentication and before the handler's own guards and
parameter parsing, so a misspelt parameter is never silently ignored, whatever the route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.routes import HTTPRoute

# `opt` key of a handler that accepts undeclared names matching a predicate; the value says what they are.
ACCEPTS = "query_parameters_accepted"
ACCEPTS_DESCRIPTION = "query_parameters_accepted_description"
UNKNOWN_PARAMETER = "Unknown query parameter"


class QueryParameterGuard:
    """An app-level guard refusing query parameters the matched route does not declare.

    The declared names of every HTTP handler are read once from the app's routes, on first use (the routes
    are final by then), keyed by the handler's function: guards receive a copy of the handler.
    """

    def __init__(self) -> None:
        self._declared: dict[object, frozenset[str]] | None = None

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        declared = self._declared_by(connection.app).get(handler.fn)
        if declared is None:
            return  # not an HTTP route (no query parameters to speak of)
        accepts: Callable[[str], bool] | None = handler.opt.get(ACCEPTS)
        unknown = sorted(
            name
            for name in set(connection.query_params.keys())
            if name not in declared and not (accepts is not None and accepts(name))
        )
        if unknown:
            raise unknown_parameters(unknown, declared, handler.opt.get(ACCEPTS_DESCRIPTION))

    def _declared_by(self, app: Litestar) -> dict[object, frozenset[str]]:
        if self._declared is None:
            self._declared = dict(declared_query_parameters(app))
        return self._declared


def declared_query_parameters(app: Litestar) -> Iterable[tuple[object, frozenset[str]]]:
    """`(handler function, names)` for every HTTP handler: the query names its parsed signature takes."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, kwargs_model in route.route_handler_map.values():
            yield handler.fn, frozenset(p.field_alias for p in kwargs_model.expected_query_params)


def unknown_parameters(
    unknown: list[str], declared: frozenset[str], also: str | None = None
) -> ValidationException:
    """The 422 for `unknown` names: each named, with what the route takes instead."""
    allowed = ", ".join(sorted(declared))
    if also:
        allowed = f"{allowed}, {also}" if allowed else also
    takes = f"this route takes {allowed}" if allowed else "this route takes no query parameters"
    message = f"{UNKNOWN_PARAMETER}; {takes}"
    return ValidationException(
        detail=f"unknown query parameters: {', '.join(unknown)}; {takes}",
        extra=[{"key": name, "message": message, "source": "query"} for name in unknown],
    )
