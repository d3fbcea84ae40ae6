"""Bulk action requests (the `POST /bulk-actions` body of `shared/api.md`) as msgspec Structs, validated.

Validation here is structural: the action's required parts are present and well-formed, field names are
known, a filter compiles. Whether a value is acceptable for a contact (an email's syntax, a phone number, a
length, a custom field document) is decided per entity when the chunk is applied, and reported as that
entity's outcome (`invalid_email`, `invalid_phone`, `too_long`, `invalid_field`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from crm_bulk.actions.filters import compile_filter
from crm_bulk.errors import ValidationError

Action = Literal["update", "delete", "add_tags", "remove_tags", "import"]
OnDuplicate = Literal["skip", "update"]

# Contact columns a request may write as plain values (tags and custom_fields have their own operations).
SETTABLE_FIELDS: tuple[str, ...] = ("email", "first_name", "last_name", "phone", "company", "job_title")
NULLABLE_FIELDS: tuple[str, ...] = ("first_name", "last_name", "phone", "company", "job_title")
# Largest values, in characters; longer ones fail the entity with `too_long` (message: the field).
FIELD_MAX_CHARS: dict[str, int] = {
    "email": 320,
    "first_name": 200,
    "last_name": 200,
    "phone": 50,
    "company": 200,
    "job_title": 200,
}
TAG_MAX_CHARS = 100
MAX_TAGS = 100
CUSTOM_FIELDS_MAX_BYTES = 16_384
CUSTOM_FIELDS_MAX_DEPTH = 5
MAX_TARGET_IDS = 1_000_000
MAX_CUSTOM_FIELD_KEYS = 100
# Region phones without a country code are read in (E.164 normalisation), in imports and single edits alike.
PHONE_REGION = "US"

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


def _documented(**bounds: object) -> msgspec.Meta:
    """Bounds the OpenAPI document states for a part that `validate_request` checks itself, with the same
    constants: its checks name the field and code a client gets, so msgspec only publishes them."""
    return msgspec.Meta(extra_json_schema=bounds)


TargetIds = Annotated[
    list[Annotated[int, _documented(minimum=1)]], _documented(minItems=1, maxItems=MAX_TARGET_IDS)
]
ActionTags = Annotated[
    list[Annotated[str, _documented(minLength=1, maxLength=TAG_MAX_CHARS)]],
    _documented(minItems=1, maxItems=MAX_TAGS),
]
SetFields = Annotated[dict[str, str], _documented(propertyNames={"enum": list(SETTABLE_FIELDS)})]
UnsetFields = list[Annotated[str, _documented(enum=list(NULLABLE_FIELDS))]]


class Target(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Which contacts an action touches: exactly one of `ids`, `filter`, `all`."""

    ids: TargetIds | None = None
    filter: dict[str, dict[str, Any]] | None = None
    all: bool | None = None


class Changes(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What an `update` does to every target contact."""

    set: SetFields = msgspec.field(default_factory=dict)
    unset: UnsetFields = msgspec.field(default_factory=list)
    custom_fields: dict[str, Any] = msgspec.field(default_factory=dict)
    remove_custom_fields: list[str] = msgspec.field(default_factory=list)


class ImportRecord(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One contact of an `import`; `email` is required per entity (a missing one fails `invalid_email`)."""

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    company: str | None = None
    job_title: str | None = None
    tags: list[str] | None = None
    custom_fields: dict[str, Any] | None = None


class BulkActionRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The body of `POST /bulk-actions`. Which optional parts are required depends on `action`."""

    action: Action
    target: Target | None = None
    changes: Changes | None = None
    tags: ActionTags | None = None
    records: list[ImportRecord] | None = None
    on_duplicate: OnDuplicate | None = None
    scheduled_for: AwareDatetime | None = None
    # Run in full but roll every chunk's data change back: counts, outcomes and a before/after sample stay.
    dry_run: bool = False


class ActionParams(msgspec.Struct, omit_defaults=True):
    """What applying one chunk needs from the request: its parameters without targets or records."""

    changes: Changes | None = None
    tags: list[str] | None = None
    on_duplicate: OnDuplicate | None = None


_MSGSPEC_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]+)`")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")
# A \u0000 escape in JSON text: preceded by an even number of backslashes (an odd one would escape it).
_JSON_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")


def decode_request(raw: bytes, *, now: datetime | None = None) -> BulkActionRequest:
    """Decode and validate a JSON body; any problem raises `ValidationError(field, code)`."""
    try:
        request = msgspec.json.decode(raw, type=BulkActionRequest)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(exc) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"malformed JSON: {exc}", field=None, code="malformed_json") from None
    return validate_request(request, now=now)


def validate_request(
    request: BulkActionRequest, *, streamed: bool = False, now: datetime | None = None
) -> BulkActionRequest:
    """Check the action-specific rules; return the request with defaults filled in (`on_duplicate`) and
    tag lists made sorted, duplicate-free sets. `streamed=True` is an import whose records arrive as an
    upload rather than inline."""
    if request.scheduled_for is not None and request.scheduled_for <= (now or datetime.now(UTC)):
        raise ValidationError("scheduled_for must be in the future", field="scheduled_for", code="not_future")
    _forbid_nul(request)
    if request.action == "import":
        return _validate_import(request, streamed=streamed)
    _forbid(request, "records", "on_duplicate")
    _validate_target(request.target)
    if request.action == "update":
        _forbid(request, "tags")
        _validate_changes(request.changes)
        return request
    _forbid(request, "changes")
    if request.action == "delete":
        _forbid(request, "tags")
        return request
    return msgspec.structs.replace(request, tags=_validate_tags(request.tags))


def spec_json(request: BulkActionRequest) -> bytes:
    """The request as stored in `bulk_actions.spec`."""
    return msgspec.json.encode(request)


def spec_from_json(raw: bytes | str) -> BulkActionRequest:
    """A stored spec back as a request (no re-validation: it was validated before it was stored)."""
    return msgspec.json.decode(raw, type=BulkActionRequest)


def action_params(request: BulkActionRequest) -> bytes:
    """The `bulk_actions.params` document of a validated request."""
    return msgspec.json.encode(
        ActionParams(changes=request.changes, tags=request.tags, on_duplicate=request.on_duplicate)
    )


def params_from_json(raw: bytes | str) -> ActionParams:
    """A stored `params` document."""
    return msgspec.json.decode(raw, type=ActionParams)


def _validate_import(request: BulkActionRequest, *, streamed: bool) -> BulkActionRequest:
    _forbid(request, "target", "changes", "tags")
    if streamed:
        _forbid(request, "records")
    elif not request.records:
        raise ValidationError("an import needs a non-empty records list", field="records", code="missing")
    return msgspec.structs.replace(request, on_duplicate=request.on_duplicate or "skip")


def _validate_target(target: Target | None) -> None:
    if target is None:
        raise ValidationError("this action needs a target", field="target", code="missing")
    given = [name for name in ("ids", "filter", "all") if getattr(target, name) is not None]
    if len(given) != 1:
        raise ValidationError(
            "a target is exactly one of ids, filter, all", field="target", code="invalid_value"
        )
    if target.ids is not None:
        if not target.ids or len(target.ids) > MAX_TARGET_IDS:
            raise ValidationError(
                f"ids holds 1-{MAX_TARGET_IDS} ids", field="target.ids", code="invalid_value"
            )
        if min(target.ids) < 1:
            raise ValidationError("ids are positive integers", field="target.ids", code="invalid_value")
    elif target.filter is not None:
        if not target.filter:
            raise ValidationError(
                'an empty filter would match every contact; use {"all": true}',
                field="target.filter",
                code="empty_filter",
            )
        try:
            compile_filter(target.filter)
        except ValidationError as exc:
            raise ValidationError(str(exc), field=f"target.filter.{exc.field}", code=exc.code) from None
    elif target.all is not True:
        raise ValidationError("all must be true", field="target.all", code="invalid_value")


def _validate_changes(changes: Changes | None) -> None:
    if changes is None or not (
        changes.set or changes.unset or changes.custom_fields or changes.remove_custom_fields
    ):
        raise ValidationError("an update needs at least one change", field="changes", code="missing")
    _validate_set_and_unset(changes)
    _validate_custom_field_changes(changes)


def _validate_set_and_unset(changes: Changes) -> None:
    for name in changes.set:
        if name not in SETTABLE_FIELDS:
            raise ValidationError(
                f"{name!r} cannot be set", field=f"changes.set.{name}", code="unknown_field"
            )
    for name in changes.unset:
        if name == "email":
            raise ValidationError("email cannot be unset", field="changes.unset", code="not_nullable")
        if name not in NULLABLE_FIELDS:
            raise ValidationError(f"{name!r} cannot be unset", field="changes.unset", code="unknown_field")
        if name in changes.set:
            raise ValidationError(f"{name!r} is both set and unset", field="changes.unset", code="conflict")


def _validate_custom_field_changes(changes: Changes) -> None:
    keys = changes.remove_custom_fields
    if len(changes.custom_fields) > MAX_CUSTOM_FIELD_KEYS or len(keys) > MAX_CUSTOM_FIELD_KEYS:
        raise ValidationError("too many custom field keys", field="changes.custom_fields", code="too_many")
    if any(not key for key in keys):
        raise ValidationError(
            "custom field keys are non-empty", field="changes.remove_custom_fields", code="invalid_value"
        )
    both = sorted(set(keys) & set(changes.custom_fields))
    if both:
        raise ValidationError(
            f"custom fields both merged and removed: {both}",
            field="changes.remove_custom_fields",
            code="conflict",
        )


def _validate_tags(tags: list[str] | None) -> list[str]:
    if not tags:
        raise ValidationError("this action needs a non-empty tags list", field="tags", code="missing")
    unique = sorted(set(tags))
    if len(unique) > MAX_TAGS:
        raise ValidationError(f"at most {MAX_TAGS} tags", field="tags", code="too_many")
    for tag in unique:
        if not tag.strip():
            raise ValidationError("tags are non-blank strings", field="tags", code="invalid_value")
        if len(tag) > TAG_MAX_CHARS:
            raise ValidationError(
                f"tags are at most {TAG_MAX_CHARS} characters", field="tags", code="too_long"
            )
    return unique


def _forbid_nul(request: BulkActionRequest) -> None:
    """The stored spec is jsonb, which cannot hold a NUL character; name the part that has one."""
    if _JSON_NUL.search(msgspec.json.encode(request)) is None:
        return
    parts: list[tuple[str, object]] = [
        ("target", request.target),
        ("changes", request.changes),
        ("tags", request.tags),
    ]
    parts += [(f"records[{i}]", record) for i, record in enumerate(request.records or [])]
    field = next((name for name, part in parts if _JSON_NUL.search(msgspec.json.encode(part))), None)
    raise ValidationError("text may not contain NUL characters", field=field, code="invalid_value")


def _forbid(request: BulkActionRequest, *names: str) -> None:
    for name in names:
        if getattr(request, name) is not None:
            raise ValidationError(
                f"{name} does not apply to {request.action}", field=name, code="not_allowed"
            )


def _from_msgspec(exc: msgspec.ValidationError) -> ValidationError:
    """msgspec's message carries a JSON path (`$.target.ids[0]`); expose it as a dotted field name."""
    message = str(exc)
    match = _MSGSPEC_PATH.search(message)
    # msgspec names a dict value `[...]` without its key; the dict itself is the useful field.
    path = match.group("path").replace("[...]", "") if match else ""
    if (found := _UNKNOWN.search(message)) is not None:
        return ValidationError(message, field=_join(path, found.group("name")), code="unknown_field")
    if (found := _MISSING.search(message)) is not None:
        return ValidationError(message, field=_join(path, found.group("name")), code="missing")
    code = "invalid_value" if message.startswith("Invalid") else "invalid_type"
    return ValidationError(message, field=path or None, code=code)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
