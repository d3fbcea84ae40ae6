"""A contact's fields checked and normalised by the same Rust kernels that validate bulk imports.

The email is lower-cased and checked (`crm_bulk.kernels.normalize_emails`), the phone becomes E.164
(`normalize_phones`, numbers without a country code read in the same region as imports), tags become a sorted
duplicate-free set, custom fields are bounded in size and depth. As in imports, a blank optional text counts
as absent, and the raw email and phone are kept beside their normalised forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import polars as pl

from crm_bulk import kernels
from crm_bulk.actions.specs import (
    CUSTOM_FIELDS_MAX_BYTES,
    CUSTOM_FIELDS_MAX_DEPTH,
    MAX_CUSTOM_FIELD_KEYS,
    PHONE_REGION,
)
from crm_bulk.contacts.models import ContactInput
from crm_bulk.errors import ValidationError


@dataclass(frozen=True)
class PreparedContact:
    """Normalised values ready to store."""

    email: str
    email_normalized: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    phone_e164: str | None
    company: str | None
    job_title: str | None
    tags: list[str]
    custom_fields: dict[str, Any]


def normalize_email(value: str) -> str:
    """The normalised address; ValidationError(field="email", code="invalid_email") naming the reason."""
    normalized, codes = kernels.normalize_emails(pl.Series([value], dtype=pl.Utf8))
    code = codes[0]
    if code is not None:
        raise ValidationError(f"not a valid email address ({code})", field="email", code="invalid_email")
    return str(normalized[0])


def normalize_phone(value: str | None) -> str | None:
    """E.164, or None for no phone; ValidationError(field="phone", code="invalid_phone") naming the reason."""
    if value is None or not value.strip():
        return None
    normalized, codes = kernels.normalize_phones(
        pl.Series([value], dtype=pl.Utf8), default_region=PHONE_REGION
    )
    code = codes[0]
    if code is not None:
        raise ValidationError(f"not a valid phone number ({code})", field="phone", code="invalid_phone")
    return None if normalized[0] is None else str(normalized[0])


def normalize_tags(tags: list[str]) -> list[str]:
    """A sorted, duplicate-free list of non-blank tags (byte order, as the column's collation)."""
    if any(not tag.strip() for tag in tags):
        raise ValidationError("tags are non-blank strings", field="tags", code="invalid_value")
    return sorted(set(tags))


def check_custom_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Bounded custom fields: at most so many keys, bytes and levels of nesting."""
    if len(fields) > MAX_CUSTOM_FIELD_KEYS:
        raise ValidationError(
            f"at most {MAX_CUSTOM_FIELD_KEYS} custom fields", field="custom_fields", code="too_many"
        )
    if any(not key for key in fields):
        raise ValidationError("custom field keys are non-empty", field="custom_fields", code="invalid_value")
    text = msgspec.json.encode(fields).decode()
    codes = kernels.validate_custom_fields(
        pl.Series([text], dtype=pl.Utf8), max_bytes=CUSTOM_FIELDS_MAX_BYTES, max_depth=CUSTOM_FIELDS_MAX_DEPTH
    )
    if codes[0] is not None:
        raise ValidationError(
            f"custom_fields break a limit ({codes[0]}: {CUSTOM_FIELDS_MAX_BYTES} bytes, "
            f"{CUSTOM_FIELDS_MAX_DEPTH} levels)",
            field="custom_fields",
            code="invalid_field",
        )
    _reject_nul(fields, "custom_fields")
    return fields


def _present(value: str | None) -> str | None:
    return None if value is None or not value.strip() else value


def _reject_nul(value: object, field: str) -> None:
    """PostgreSQL text and jsonb cannot hold NUL characters; say so by field instead of failing the write."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError("text may not contain NUL characters", field=field, code="invalid_value")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, field)
            _reject_nul(item, field)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item, field)


def prepare_contact(data: ContactInput) -> PreparedContact:
    """Every check of a whole contact; the first failing field raises ValidationError."""
    for name in ("email", "first_name", "last_name", "phone", "company", "job_title", "tags"):
        _reject_nul(getattr(data, name), name)
    phone = _present(data.phone)
    return PreparedContact(
        email=data.email.strip(),
        email_normalized=normalize_email(data.email),
        first_name=_present(data.first_name),
        last_name=_present(data.last_name),
        phone=None if phone is None else phone.strip(),
        phone_e164=normalize_phone(phone),
        company=_present(data.company),
        job_title=_present(data.job_title),
        tags=normalize_tags(data.tags),
        custom_fields=check_custom_fields(data.custom_fields),
    )
