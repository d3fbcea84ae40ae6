"""Contact bodies as the API reads and writes them (`shared/api.md`, Contacts)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from crm_bulk.actions.specs import FIELD_MAX_CHARS, MAX_TAGS, TAG_MAX_CHARS

# The format is what the document promises; the Rust kernel (contacts.validation) is what judges an address.
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=FIELD_MAX_CHARS["email"],
        examples=["ada@example.com"],
        extra_json_schema={"format": "email"},
    ),
]
Name = Annotated[str, msgspec.Meta(max_length=FIELD_MAX_CHARS["first_name"])]
Phone = Annotated[str, msgspec.Meta(max_length=FIELD_MAX_CHARS["phone"], examples=["+44 20 7946 0958"])]
Company = Annotated[str, msgspec.Meta(max_length=FIELD_MAX_CHARS["company"])]
JobTitle = Annotated[str, msgspec.Meta(max_length=FIELD_MAX_CHARS["job_title"])]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=TAG_MAX_CHARS)]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=MAX_TAGS, examples=[["vip", "newsletter"]])]
CustomFields = Annotated[dict[str, Any], msgspec.Meta(examples=[{"plan": "gold", "seats": 12}])]


class Contact(msgspec.Struct, kw_only=True):
    """A stored contact: `email` lower-cased, `phone` in E.164, `tags` a sorted set."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    company: str | None
    job_title: str | None
    tags: list[str]
    custom_fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ContactInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A whole contact (`POST /contacts`, `PUT /contacts/{id}`); fields left out are empty."""

    email: Email
    first_name: Name | None = None
    last_name: Name | None = None
    phone: Phone | None = None
    company: Company | None = None
    job_title: JobTitle | None = None
    tags: Tags = msgspec.field(default_factory=list)
    custom_fields: CustomFields = msgspec.field(default_factory=dict)


class ContactPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Some fields of a contact (PATCH): given ones replace, null clears, absent ones stay."""

    email: Email | UnsetType = UNSET
    first_name: Name | UnsetType | None = UNSET
    last_name: Name | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET
    company: Company | UnsetType | None = UNSET
    job_title: JobTitle | UnsetType | None = UNSET
    tags: Tags | UnsetType = UNSET
    custom_fields: CustomFields | UnsetType = UNSET


class ContactPage(msgspec.Struct, kw_only=True):
    """One page of contacts in id order; `next_cursor` is null on the last page."""

    items: list[Contact]
    next_cursor: str | None


class DuplicateEmail(msgspec.Struct, kw_only=True):
    """Documented body of a 409: the live contact that already has the email."""

    existing_id: int
