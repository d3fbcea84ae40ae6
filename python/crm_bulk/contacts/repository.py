"""Contact rows for the API: create, read, replace, patch, soft-delete and list, all within one account.

Every function takes an open connection and runs in the caller's transaction. Another account's id and a
deleted contact are both simply not found.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from crm_bulk.actions.filters import compile_filter
from crm_bulk.contacts.models import Contact, ContactInput, ContactPage, ContactPatch
from crm_bulk.contacts.validation import PreparedContact, prepare_contact
from crm_bulk.cursors import CursorCodec
from crm_bulk.errors import ConflictError, NotFoundError, ValidationError
from crm_bulk.postgres import Conn
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

MAX_PAGE = 1000
# Ids are bigint: anything outside cannot exist, and must not reach PostgreSQL as a numeric.
MAX_ID = 2**63 - 1
# A contacts cursor: the id of the last contact served, in one account's listing.
CONTACT_CURSOR: CursorCodec[tuple[int]] = CursorCodec(
    "contacts", [Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]]
)


def _q(name: str) -> str:
    return query("postgres", "contacts_api", name)


def _params(account_id: int, prepared: PreparedContact) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "email": prepared.email,
        "email_normalized": prepared.email_normalized,
        "first_name": prepared.first_name,
        "last_name": prepared.last_name,
        "phone": prepared.phone,
        "phone_e164": prepared.phone_e164,
        "company": prepared.company,
        "job_title": prepared.job_title,
        "tags": prepared.tags,
        "custom_fields": Jsonb(prepared.custom_fields),
    }


def _contact(row: Mapping[str, Any]) -> Contact:
    return Contact(**row)


def _duplicate(conn: Conn, account_id: int, email: str) -> ConflictError:
    row = conn.execute(
        _q("live_id_by_email"), {"account_id": account_id, "email_normalized": email}
    ).fetchone()
    existing = int(row[0]) if row is not None else None
    return ConflictError("a contact with this email already exists", existing_id=existing)


def create_contact(conn: Conn, account_id: int, data: ContactInput) -> Contact:
    """Store a new contact; ConflictError(existing_id) when its normalised email is taken in the account."""
    prepared = prepare_contact(data)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_q("insert_contact"), _params(account_id, prepared)).fetchone()
    if row is None:
        raise _duplicate(conn, account_id, prepared.email_normalized)
    return _contact(row)


def get_contact(conn: Conn, account_id: int, contact_id: int) -> Contact:
    """One live contact of the account."""
    if not 1 <= contact_id <= MAX_ID:
        raise NotFoundError(f"contact {contact_id} not found")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_q("get_contact"), {"account_id": account_id, "id": contact_id}).fetchone()
    if row is None:
        raise NotFoundError(f"contact {contact_id} not found")
    return _contact(row)


def replace_contact(conn: Conn, account_id: int, contact_id: int, data: ContactInput) -> Contact:
    """Overwrite every field of a contact (PUT)."""
    return _write(conn, account_id, contact_id, prepare_contact(data))


def patch_contact(conn: Conn, account_id: int, contact_id: int, patch: ContactPatch) -> Contact:
    """Change the given fields of a contact (PATCH); the row is locked between read and write."""
    if not 1 <= contact_id <= MAX_ID:
        raise NotFoundError(f"contact {contact_id} not found")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_q("lock_contact"), {"account_id": account_id, "id": contact_id}).fetchone()
    if row is None:
        raise NotFoundError(f"contact {contact_id} not found")
    current = {name: row[name] for name in ContactInput.__struct_fields__}
    changes = {
        name: value for name, value in msgspec.structs.asdict(patch).items() if value is not msgspec.UNSET
    }
    if changes.get("email", "") is None:
        raise ValidationError("email cannot be cleared", field="email", code="not_nullable")
    merged = msgspec.convert(current | changes, ContactInput)
    return _write(conn, account_id, contact_id, prepare_contact(merged))


def _write(conn: Conn, account_id: int, contact_id: int, prepared: PreparedContact) -> Contact:
    if not 1 <= contact_id <= MAX_ID:
        raise NotFoundError(f"contact {contact_id} not found")
    params = _params(account_id, prepared) | {"id": contact_id}
    try:
        # A savepoint, so a duplicate email leaves the transaction usable for the lookup below.
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(_q("replace_contact"), params).fetchone()
    except psycopg.errors.UniqueViolation:
        raise _duplicate(conn, account_id, prepared.email_normalized) from None
    if row is None:
        raise NotFoundError(f"contact {contact_id} not found")
    return _contact(row)


def delete_contact(conn: Conn, account_id: int, contact_id: int) -> None:
    """Soft-delete a contact (its id stays in job logs; its email becomes free)."""
    if not 1 <= contact_id <= MAX_ID:
        raise NotFoundError(f"contact {contact_id} not found")
    row = conn.execute(_q("delete_contact"), {"account_id": account_id, "id": contact_id}).fetchone()
    if row is None:
        raise NotFoundError(f"contact {contact_id} not found")


def list_contacts(
    conn: Conn, account_id: int, *, filter: Mapping[str, Any], limit: int = 100, cursor: str | None = None
) -> ContactPage:
    """A page of the account's contacts matching `filter` (the filter language), in id order."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit is 1-{MAX_PAGE}", field="limit", code="out_of_range")
    fragment, filter_params = compile_filter(filter)
    after = decode_cursor(account_id, cursor) if cursor else 0
    statement = sql.SQL(_q("list_contacts")).format(filter=fragment)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(statement, [account_id, after, *filter_params, limit + 1]).fetchall()
    items = [_contact(r) for r in rows[:limit]]
    next_cursor = encode_cursor(account_id, items[-1].id) if len(rows) > limit else None
    return ContactPage(items=items, next_cursor=next_cursor)


def encode_cursor(account_id: int, last_id: int) -> str:
    """The opaque cursor of the account's listing after contact `last_id`."""
    return CONTACT_CURSOR.encode(str(account_id), (last_id,))


def decode_cursor(account_id: int, cursor: str) -> int:
    """Inverse of `encode_cursor` for this account; anything else is a 422 on `cursor`."""
    (last_id,) = CONTACT_CURSOR.decode(cursor, str(account_id))
    return last_id
