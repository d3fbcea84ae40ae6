"""The filter language spelled as query parameters: `company=Acme&tags.contains=vip&created_at.gte=…`.

`field=value` means `eq`; `field.op=value` any other operator. `in` takes comma-separated values (or the
parameter repeated), `is_null` takes `true`/`false`, `id` operands are integers, and range operators on
`custom_fields.<key>` compare numbers when the value reads as one. Anything the shorthand cannot say can go in
`filter=<JSON object>`, merged with the rest. The result is what `crm_bulk.actions.filters.compile_filter`
takes; it rejects unknown fields and operators.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from crm_bulk.actions.filters import compile_filter
from crm_bulk.errors import ValidationError

OPERATORS = frozenset({"eq", "ne", "in", "contains", "starts_with", "gt", "gte", "lt", "lte", "is_null"})
# Query parameters that steer the listing rather than filter it.
RESERVED = frozenset({"limit", "cursor", "filter"})
_RANGE = frozenset({"gt", "gte", "lt", "lte"})
_BOOLEANS = {"true": True, "false": False}


def filter_from_query(items: Iterable[tuple[str, str]]) -> dict[str, dict[str, object]]:
    """A filter object from query parameters (name, value) pairs, reserved names skipped."""
    result: dict[str, dict[str, object]] = {}
    for name, raw in items:
        if name == "filter":
            _merge(result, _json_filter(raw))
            continue
        if name in RESERVED:
            continue
        field, op = _split(name)
        value = _typed(field, op, raw)
        ops = result.setdefault(field, {})
        if op == "in" and isinstance(ops.get("in"), list):
            previous = ops["in"]
            assert isinstance(previous, list) and isinstance(value, list)
            previous.extend(value)
        elif op in ops:
            raise ValidationError(f"{name} is given twice", field=name, code="duplicate_parameter")
        else:
            ops[op] = value
    return result


def is_filter_parameter(name: str) -> bool:
    """Whether a query parameter names a filter condition (`field` or `field.op` of a filterable field).

    The filter compiler owns the field whitelist: a probe condition on the field fails with `unknown_field`
    exactly when the field is not one. A bad operator or value is left for the listing to refuse by name.
    """
    field, _ = _split(name)
    try:
        compile_filter({field: {"is_null": True}})
    except ValidationError as exc:
        return exc.code != "unknown_field"
    return True


def _split(name: str) -> tuple[str, str]:
    field, dot, op = name.rpartition(".")
    if dot and field and op in OPERATORS:
        return field, op
    return name, "eq"


def _typed(field: str, op: str, raw: str) -> object:
    if op == "is_null":
        if raw.lower() not in _BOOLEANS:
            raise ValidationError("is_null takes true or false", field=f"{field}.{op}", code="invalid_value")
        return _BOOLEANS[raw.lower()]
    if op == "in":
        return [_scalar(field, op, part) for part in raw.split(",")]
    return _scalar(field, op, raw)


def _scalar(field: str, op: str, raw: str) -> object:
    if field == "id":
        try:
            return int(raw)
        except ValueError:
            raise ValidationError("ids are integers", field=f"{field}.{op}", code="invalid_type") from None
    if field.startswith("custom_fields.") and op in _RANGE:
        try:
            return int(raw)
        except ValueError:
            pass
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def _json_filter(raw: str) -> dict[str, dict[str, object]]:
    try:
        value = msgspec.json.decode(raw, type=dict[str, dict[str, object]])
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise ValidationError(
            'filter must be a JSON object of {"field": {"op": value}}', field="filter", code="invalid_value"
        ) from None
    return value


def _merge(into: dict[str, dict[str, object]], more: dict[str, dict[str, object]]) -> None:
    for field, ops in more.items():
        target = into.setdefault(field, {})
        for op, value in ops.items():
            if op in target:
                raise ValidationError(
                    f"{field}.{op} is given twice", field=f"{field}.{op}", code="duplicate_parameter"
                )
            target[op] = value
