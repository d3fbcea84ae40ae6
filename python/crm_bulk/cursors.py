"""Page cursors: the opaque `next_cursor` a listing hands out and takes back as `cursor`.

A cursor is the URL-safe base64 (unpadded) of a JSON array `[listing, scope, *position]`: which listing made
it (`jobs`, `contacts`, `logs`), whose rows it pages (an account, or an account's job) and the keyset
position after the last row served. Clients can edit a cursor, so it is decoded completely and strictly,
before any query: its length, its base64, its JSON, the type and range of every field (no booleans for
numbers, no floats, no naive datetimes) and its listing and scope. Anything else is a `ValidationError` on
`cursor` (a 422), whose message says what is wrong without echoing the cursor.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import msgspec

from crm_bulk.errors import ValidationError

# Far above any cursor a listing makes (about 120 characters); a longer one was not made by a listing.
MAX_CURSOR_CHARS = 512

P = TypeVar("P", bound=tuple[Any, ...])


class CursorCodec(Generic[P]):
    """Encodes and strictly decodes the cursors of one listing, whose position is a tuple of `fields`.

    `fields` are msgspec types, constraints included (e.g. `Annotated[int, msgspec.Meta(ge=0)]`).
    """

    def __init__(self, listing: str, fields: Sequence[Any]) -> None:
        """A codec for `listing`'s cursors; `fields` type the position after listing and scope."""
        self.listing = listing
        # A runtime tuple type: the position's field types after the two strings.
        spec: Any = tuple.__class_getitem__((str, str, *fields))
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(spec)
        self._width = len(fields)

    def __repr__(self) -> str:
        return f"CursorCodec({self.listing!r}, {self._width} fields)"

    def encode(self, scope: str, position: P) -> str:
        """The cursor after `position` in this listing's `scope`."""
        raw = msgspec.json.encode([self.listing, scope, *position])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, cursor: str, scope: str) -> P:
        """The position `encode` put in `cursor`; `ValidationError` on `cursor` unless it is one of this
        listing's cursors for `scope`, well formed in every field."""
        if len(cursor) > MAX_CURSOR_CHARS:
            raise _invalid(f"cursor is longer than {MAX_CURSOR_CHARS} characters")
        try:
            raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("cursor is not URL-safe base64") from None
        try:
            listing, owner, *position = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise _invalid(f"cursor fields are malformed ({exc})") from None
        except msgspec.DecodeError:
            raise _invalid("cursor is not one this API made") from None
        if listing != self.listing or owner != scope:
            # Another account's, job's or route's cursor: its position means nothing here.
            raise _invalid(
                f"cursor belongs to another listing; use a `next_cursor` of this {self.listing} list"
            )
        result: P = tuple(position)  # type: ignore[assignment]
        return result


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, field="cursor", code="invalid_cursor")
