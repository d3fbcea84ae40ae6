"""Page cursors decode strictly: only a cursor the listing made for this scope comes back as a position."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

import msgspec
import pytest

from crm_bulk.cursors import MAX_CURSOR_CHARS, CursorCodec
from crm_bulk.errors import ValidationError

UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
LOGS: CursorCodec[tuple[str, int, int]] = CursorCodec("logs", [Literal["failed", "skipped"], UInt32, UInt32])
JOBS: CursorCodec[tuple[datetime, UUID]] = CursorCodec(
    "jobs", [Annotated[datetime, msgspec.Meta(tz=True)], UUID]
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_cursor_round_trips() -> None:
    assert LOGS.decode(LOGS.encode("7/j", ("failed", 3, 9)), "7/j") == ("failed", 3, 9)
    at, job_id = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid4()
    assert JOBS.decode(JOBS.encode("7", (at, job_id)), "7") == (at, job_id)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        "not base64 !",
        "a",
        "x" * (MAX_CURSOR_CHARS + 1),
        b64(b"\xff\xfe"),
        b64(b"nope"),
        b64(b'{"listing": "logs"}'),
        b64(b"[1,2]"),
        b64(b"[" * 10_000),
        b64(b'["logs","7/j","failed",0]'),
        b64(b'["logs","7/j","failed",0,0,0]'),
        b64(b'["logs","7/j","cancelled",0,0]'),
        b64(b'["logs","7/j","failed",true,0]'),
        b64(b'["logs","7/j","failed",0,false]'),
        b64(b'["logs","7/j","failed",1.0,0]'),
        b64(b'["logs","7/j","failed","1",0]'),
        b64(b'["logs","7/j","failed",null,0]'),
        b64(b'["logs","7/j","failed",-1,0]'),
        b64(b'["logs","7/j","failed",0,4294967296]'),
        b64(b'["logs","7/j","failed",0,99999999999999999999999999999]'),
        b64(b'["jobs","7/j","failed",0,0]'),
        b64(b'["logs","8/j","failed",0,0]'),
        b64(b'["logs",7,"failed",0,0]'),
    ],
)
def test_anything_else_is_a_validation_error_on_cursor(cursor: str) -> None:
    with pytest.raises(ValidationError) as raised:
        LOGS.decode(cursor, "7/j")
    assert (raised.value.field, raised.value.code) == ("cursor", "invalid_cursor")


@pytest.mark.parametrize(
    "position",
    [
        ["2026-01-01T00:00:00", str(uuid4())],
        ["yesterday", str(uuid4())],
        ["2026-01-01T00:00:00Z", "not-a-uuid"],
        ["2026-01-01T00:00:00Z", 5],
        [1767225600, str(uuid4())],
    ],
)
def test_a_jobs_cursor_needs_an_aware_datetime_and_a_uuid(position: list[Any]) -> None:
    with pytest.raises(ValidationError):
        JOBS.decode(b64(msgspec.json.encode(["jobs", "7", *position])), "7")


def test_another_scope_is_named_in_the_message() -> None:
    cursor = LOGS.encode("7/a", ("failed", 0, 0))
    with pytest.raises(ValidationError, match="another listing"):
        LOGS.decode(cursor, "7/b")
