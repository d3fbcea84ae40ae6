"""Integer bounds of path, query and header parameters, written into the document exactly as declared.

Litestar renders a parameter's `ge`/`le`/`gt`/`lt` as floats: `le=2**63 - 1` (a bigint id) becomes 2**63,
so the document would call ids valid that the handler refuses. The declared integers are put back into the
built document, from the same parameter declarations the handlers validate with.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Operation, Schema
from litestar.params import ParameterKwarg
from litestar.routes import HTTPRoute

# Declared bound → the schema keyword it becomes.
_BOUNDS = (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusive_minimum"), ("lt", "exclusive_maximum"))


def exact_integer_bounds(app: Litestar) -> None:
    """Build the app's OpenAPI document now and give every parameter its declared integer bounds."""
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or (path_item := paths.get(route.path_format)) is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(path_item, method.lower(), None)
            if isinstance(operation, Operation):
                _fix_operation(operation, _declared_bounds(handler))


def _declared_bounds(handler: BaseRouteHandler) -> dict[str, dict[str, int]]:
    """Parameter name (as the document spells it) → schema keyword → declared integer."""
    found: dict[str, dict[str, int]] = {}
    for name, field in handler.parsed_fn_signature.parameters.items():
        kwarg = field.kwarg_definition
        if not isinstance(kwarg, ParameterKwarg):
            continue
        bounds = {key: value for attr, key in _BOUNDS if type(value := getattr(kwarg, attr)) is int}
        if bounds:
            for alias in {name, kwarg.query, kwarg.header, kwarg.cookie}:
                if alias:
                    found[alias] = bounds
    return found


def _fix_operation(operation: Operation, declared: dict[str, dict[str, int]]) -> None:
    for parameter in operation.parameters or []:
        bounds = declared.get(getattr(parameter, "name", ""))
        schema = getattr(parameter, "schema", None)
        if bounds and isinstance(schema, Schema):
            for key, value in bounds.items():
                setattr(schema, key, value)
