"""The contact filter language of `shared/api.md`, compiled to a WHERE fragment with bound parameters only.

A filter is `{field: {op: value, ...}, ...}`; every condition is ANDed. Field names and operators come from
fixed whitelists and become SQL through `psycopg.sql` objects; every value, custom field key included, is a
bound parameter, so a value can never be read as SQL whatever it holds.

The fragment names bare `contacts` columns and does not scope by account or liveness: callers add
`account_id = … AND deleted_at IS NULL` themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from crm_bulk.errors import ValidationError

MAX_IN_VALUES = 1000
MAX_CUSTOM_FIELD_IN_VALUES = 100
MAX_CONDITIONS = 50
MAX_KEY_CHARS = 200

Condition = tuple[sql.Composable, list[object]]

_COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_TEXT_OPS = frozenset({"eq", "ne", "in", "starts_with", "gt", "gte", "lt", "lte", "is_null"})
_TEXT_COLUMNS = {
    "first_name": "first_name",
    "last_name": "last_name",
    "company": "company",
    "job_title": "job_title",
    "phone": "phone_e164",
}
_TIME_COLUMNS = frozenset({"created_at", "updated_at"})
CUSTOM_PREFIX = "custom_fields."


def compile_filter(filter: Mapping[str, Any]) -> tuple[sql.Composable, list[object]]:
    """`(WHERE fragment, params)` for a filter object; an unknown field, operator or value type raises
    `ValidationError` naming `<field>.<op>`. An empty filter compiles to `TRUE`."""
    if not isinstance(filter, Mapping):
        raise ValidationError(
            "a filter is an object of field: {op: value}", field="filter", code="invalid_type"
        )
    parts: list[sql.Composable] = []
    params: list[object] = []
    for field, ops in filter.items():
        if not isinstance(field, str):
            raise ValidationError("filter field names are strings", field="filter", code="invalid_type")
        if not isinstance(ops, Mapping) or not ops:
            raise ValidationError(
                f"filter field {field!r} needs an object of {{op: value}}", field=field, code="invalid_type"
            )
        for op, value in ops.items():
            fragment, values = _condition(field, str(op), value)
            parts.append(fragment)
            params.extend(values)
    if len(parts) > MAX_CONDITIONS:
        raise ValidationError(f"at most {MAX_CONDITIONS} filter conditions", field="filter", code="too_many")
    if not parts:
        return sql.SQL("TRUE"), []
    return sql.SQL(" AND ").join(sql.SQL("({})").format(p) for p in parts), params


def _condition(field: str, op: str, value: object) -> Condition:
    where = f"{field}.{op}"
    if field in _TEXT_COLUMNS:
        return _text_condition(sql.Identifier(_TEXT_COLUMNS[field]), op, value, where, transform=None)
    if field == "email":
        return _text_condition(sql.Identifier("email_normalized"), op, value, where, transform=_fold_email)
    if field == "id":
        return _id_condition(op, value, where)
    if field in _TIME_COLUMNS:
        return _time_condition(sql.Identifier(field), op, value, where)
    if field == "tags":
        return _tags_condition(op, value, where)
    if field.startswith(CUSTOM_PREFIX):
        key = field.removeprefix(CUSTOM_PREFIX)
        if not key or len(key) > MAX_KEY_CHARS:
            raise ValidationError(
                f"custom field key must be 1-{MAX_KEY_CHARS} characters", field=field, code="invalid_field"
            )
        return _custom_condition(key, op, value, where)
    raise ValidationError(f"unknown filter field {field!r}", field=field, code="unknown_field")


def _fold_email(value: str) -> str:
    # Stored emails are normalised lower-case; comparing case-insensitively is what a user means.
    return value.strip().lower()


def _unknown_op(op: str, where: str) -> ValidationError:
    return ValidationError(f"unsupported filter operator {op!r}", field=where, code="unknown_operator")


def _text_condition(
    column: sql.Identifier, op: str, value: object, where: str, *, transform: Callable[[str], str] | None
) -> Condition:
    if op not in _TEXT_OPS:
        raise _unknown_op(op, where)
    if op == "is_null":
        return _is_null(column, value, where)
    fold = transform or (lambda s: s)
    if op == "in":
        items = [fold(v) for v in _string_list(value, where, MAX_IN_VALUES)]
        return sql.SQL("{} = ANY(%s::text[])").format(column), [items]
    text = fold(_string(value, where))
    if op == "eq":
        return sql.SQL("{} = %s").format(column), [text]
    if op == "ne":
        return sql.SQL("{} IS DISTINCT FROM %s").format(column), [text]
    if op == "starts_with":
        return sql.SQL("{} ^@ %s").format(column), [text]
    return sql.SQL("{} {} %s").format(column, sql.SQL(_COMPARISONS[op])), [text]


def _id_condition(op: str, value: object, where: str) -> Condition:
    column = sql.Identifier("id")
    if op == "in":
        if not isinstance(value, list) or not value or len(value) > MAX_IN_VALUES:
            raise ValidationError(f"`in` takes 1-{MAX_IN_VALUES} ids", field=where, code="invalid_value")
        return sql.SQL("{} = ANY(%s::bigint[])").format(column), [[_integer(v, where) for v in value]]
    number = _integer(value, where)
    if op == "eq":
        return sql.SQL("{} = %s").format(column), [number]
    if op == "ne":
        return sql.SQL("{} <> %s").format(column), [number]
    if op in _COMPARISONS:
        return sql.SQL("{} {} %s").format(column, sql.SQL(_COMPARISONS[op])), [number]
    raise _unknown_op(op, where)


def _time_condition(column: sql.Identifier, op: str, value: object, where: str) -> Condition:
    if op not in _COMPARISONS and op not in {"eq", "ne"}:
        raise _unknown_op(op, where)
    if not isinstance(value, str):
        raise ValidationError("expected an ISO 8601 timestamp", field=where, code="invalid_type")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("expected an ISO 8601 timestamp", field=where, code="invalid_value") from None
    if moment.tzinfo is None:
        raise ValidationError("timestamps need a time zone (e.g. Z)", field=where, code="invalid_value")
    if op == "eq":
        return sql.SQL("{} = %s").format(column), [moment]
    if op == "ne":
        return sql.SQL("{} <> %s").format(column), [moment]
    return sql.SQL("{} {} %s").format(column, sql.SQL(_COMPARISONS[op])), [moment]


def _tags_condition(op: str, value: object, where: str) -> Condition:
    column = sql.Identifier("tags")
    if op == "contains":
        if not isinstance(value, str | list):
            raise ValidationError("expected a tag or a list of tags", field=where, code="invalid_type")
        tags = [value] if isinstance(value, str) else _string_list(value, where, MAX_IN_VALUES)
        return sql.SQL("{} @> %s::text[]").format(column), [tags]
    if op == "in":
        return sql.SQL("{} && %s::text[]").format(column), [_string_list(value, where, MAX_IN_VALUES)]
    if op == "is_null":
        if not isinstance(value, bool):
            raise ValidationError("is_null takes true or false", field=where, code="invalid_type")
        return sql.SQL("cardinality({}) {} 0").format(column, sql.SQL("=" if value else ">")), []
    raise _unknown_op(op, where)


def _custom_condition(key: str, op: str, value: object, where: str) -> Condition:
    column = sql.Identifier("custom_fields")
    if op == "eq":
        # Containment is what the jsonb_path_ops GIN index answers.
        return sql.SQL("{} @> %s").format(column), [Jsonb({key: _json_scalar(value, where)})]
    if op == "ne":
        return sql.SQL("NOT ({} @> %s)").format(column), [Jsonb({key: _json_scalar(value, where)})]
    if op == "in":
        if not isinstance(value, list) or not value or len(value) > MAX_CUSTOM_FIELD_IN_VALUES:
            raise ValidationError(
                f"`in` takes 1-{MAX_CUSTOM_FIELD_IN_VALUES} values", field=where, code="invalid_value"
            )
        alternatives = sql.SQL(" OR ").join(sql.SQL("{} @> %s").format(column) for _ in value)
        return sql.SQL("({})").format(alternatives), [Jsonb({key: _json_scalar(v, where)}) for v in value]
    if op == "starts_with":
        return sql.SQL("({} ->> %s) ^@ %s").format(column), [key, _string(value, where)]
    if op == "is_null":
        if not isinstance(value, bool):
            raise ValidationError("is_null takes true or false", field=where, code="invalid_type")
        test = sql.SQL("coalesce(jsonb_typeof({} -> %s), 'null') {} 'null'").format(
            column, sql.SQL("=" if value else "<>")
        )
        return test, [key]
    if op in _COMPARISONS:
        scalar = _json_scalar(value, where)
        if isinstance(scalar, bool) or not isinstance(scalar, str | int | float):
            raise ValidationError(
                "range operators take a number or a string", field=where, code="invalid_type"
            )
        kind = "string" if isinstance(scalar, str) else "number"
        # jsonb orders values of different types by type; compare only values of the operand's type.
        test = sql.SQL("jsonb_typeof({col} -> %s) = %s AND ({col} -> %s) {cmp} %s").format(
            col=column, cmp=sql.SQL(_COMPARISONS[op])
        )
        return test, [key, kind, key, Jsonb(scalar)]
    raise _unknown_op(op, where)


def _is_null(column: sql.Identifier, value: object, where: str) -> Condition:
    if not isinstance(value, bool):
        raise ValidationError("is_null takes true or false", field=where, code="invalid_type")
    return sql.SQL("{} IS {}NULL").format(column, sql.SQL("" if value else "NOT ")), []


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValidationError("expected a string", field=where, code="invalid_type")
    return value


def _string_list(value: object, where: str, limit: int) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > limit:
        raise ValidationError(f"expected a list of 1-{limit} strings", field=where, code="invalid_value")
    return [_string(v, where) for v in value]


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("expected an integer", field=where, code="invalid_type")
    return value


def _json_scalar(value: object, where: str) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValidationError("expected a string, number, boolean or null", field=where, code="invalid_type")
