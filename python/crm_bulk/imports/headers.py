"""Which contact field each column of an import file fills: explicit mappings, aliases, unknown columns.

Headers are compared by their letters and digits only, case-folded, so `E-mail`, `EMAIL` and ` e_mail `
are one name; each such name may be a field's own name or one of the aliases other CRMs' exports use
(`Email Address`, `Given Name`, `Surname`, `Mobile`, `Organisation`, `Job Title`, `Labels`, ...).

An explicit mapping (header → field, `custom_fields.<key>`, or null/"" to ignore) decides the columns it
names; the others are matched by name. Two columns an explicit mapping sends to one field are refused; when
two columns match one field by name (an export with both `Phone` and `Mobile`), the first one takes it and
the later ones count as unknown. Unknown columns are refused, ignored, or kept as custom fields keyed by the
header in snake case (`Lifecycle Stage` → `custom_fields.lifecycle_stage`), by `unknown_columns`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from crm_bulk.errors import ValidationError
from crm_bulk.ledger.payload import IMPORT_SCHEMA

UnknownColumns = Literal["reject", "ignore", "custom_fields"]
UNKNOWN_COLUMN_POLICIES: tuple[str, ...] = ("reject", "ignore", "custom_fields")
# Another CRM's export carries columns this one has no field for (lifecycle stage, owner, lead source);
# keeping them as custom fields loses nothing and needs no mapping written first.
DEFAULT_UNKNOWN_COLUMNS: UnknownColumns = "custom_fields"
CUSTOM_PREFIX = "custom_fields."
IGNORED = ""
FIELDS: tuple[str, ...] = tuple(IMPORT_SCHEMA.names)
MAX_CUSTOM_KEY_CHARS = 100

_ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "email",
        "emailaddress",
        "mail",
        "primaryemail",
        "workemail",
        "businessemail",
        "contactemail",
    ),
    "first_name": ("firstname", "givenname", "forename", "first", "fname"),
    "last_name": ("lastname", "surname", "familyname", "last", "lname"),
    "phone": (
        "phone",
        "phonenumber",
        "mobile",
        "mobilephone",
        "mobilenumber",
        "mobilephonenumber",
        "telephone",
        "telephonenumber",
        "tel",
        "cell",
        "cellphone",
        "workphone",
        "businessphone",
    ),
    "company": (
        "company",
        "companyname",
        "organisation",
        "organization",
        "organisationname",
        "organizationname",
        "org",
        "accountname",
        "employer",
    ),
    "job_title": ("jobtitle", "title", "position", "jobposition", "designation", "role"),
    "tags": ("tags", "tag", "labels", "label"),
    "custom_fields": ("customfields",),
}
ALIASES: dict[str, str] = {alias: field for field, aliases in _ALIASES.items() for alias in aliases}


def header_key(header: str) -> str:
    """The name a header is matched by: its letters and digits, case-folded."""
    return "".join(ch for ch in header.casefold() if ch.isalnum())


def custom_key(header: str) -> str:
    """The custom-field key an unknown column is kept under: the header in lower snake case."""
    return re.sub(r"[^\w]+", "_", header.strip().casefold()).strip("_")[:MAX_CUSTOM_KEY_CHARS]


class ColumnMapping(msgspec.Struct, frozen=True):
    """Where each column of a file goes, in column order: `fields[i]` is the target of column i
    (a field name, `custom_fields.<key>`, or "" when ignored). `unknown` lists the headers that matched no
    field by name and were not mapped explicitly."""

    headers: tuple[str, ...]
    fields: tuple[str, ...]
    unknown: tuple[str, ...]

    def used(self) -> dict[str, str]:
        """Header → target as stored with the job ("" for an ignored column)."""
        return dict(zip(self.headers, self.fields, strict=True))


def parse_mapping(text: str | None) -> dict[str, str] | None:
    """The `mapping` query parameter (a JSON object of header → field or null) as header → target
    ("" ignores); every target is checked here, before any byte of the file is read."""
    if text is None or not text.strip():
        return None
    try:
        raw = msgspec.json.decode(text.encode(), type=dict[str, str | None])
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ValidationError(
            'mapping must be a JSON object of header → field, e.g. {"E-mail": "email", "Fax": null}',
            field="mapping",
            code="malformed_mapping",
        ) from None
    mapping = {header.strip(): (target or "").strip() for header, target in raw.items()}
    for header, target in mapping.items():
        if target and not is_field(target):
            raise ValidationError(
                f"mapping sends {header!r} to {target!r}, which is not a contact field (one of "
                f"{', '.join(FIELDS)}, or custom_fields.<key>)",
                field=f"mapping.{header}",
                code="unknown_field",
            )
    _refuse_shared_targets(mapping)
    return mapping


def is_field(target: str) -> bool:
    """Whether `target` is an importable contact field or a `custom_fields.<key>` column."""
    if target.startswith(CUSTOM_PREFIX):
        key = target.removeprefix(CUSTOM_PREFIX)
        return 0 < len(key) <= MAX_CUSTOM_KEY_CHARS
    return target in FIELDS


def resolve_columns(
    headers: Sequence[str],
    *,
    mapping: Mapping[str, str] | None = None,
    unknown_columns: UnknownColumns = DEFAULT_UNKNOWN_COLUMNS,
) -> ColumnMapping:
    """The target of every column of a header row; `ValidationError` for a file that cannot be imported
    (no email column, a repeated header, an explicit mapping naming a missing column, unknown columns when
    they are refused, two columns for one field)."""
    names = tuple(h.strip() for h in headers)
    _refuse_repeated_headers(names)
    explicit = _explicit_targets(names, mapping or {})
    taken = {t for t in explicit.values() if t}
    targets: list[str] = []
    unknown: list[str] = []
    for index, header in enumerate(names):
        if index in explicit:
            targets.append(explicit[index])
            continue
        field = _by_name(header)
        if field is not None and field not in taken:
            taken.add(field)
            targets.append(field)
            continue
        unknown.append(header)
        targets.append(_unknown_target(header, unknown_columns))
    _refuse_shared_targets(dict(zip(names, targets, strict=True)))
    _refuse_mixed_custom_fields(targets)
    if "email" not in targets:
        raise ValidationError(
            "no column holds the email: name one `email` (or E-mail, Email Address, ...) or map one "
            'with mapping={"<header>": "email"}',
            field="email",
            code="missing",
        )
    return ColumnMapping(headers=names, fields=tuple(targets), unknown=tuple(unknown))


def _by_name(header: str) -> str | None:
    if header.startswith(CUSTOM_PREFIX) and is_field(header):
        return header
    return ALIASES.get(header_key(header))


def _unknown_target(header: str, policy: UnknownColumns) -> str:
    if policy == "reject":
        raise ValidationError(
            f"unknown import column {header!r}: map it (mapping=...), or pass unknown_columns=ignore or "
            "unknown_columns=custom_fields",
            field=header,
            code="unknown_field",
        )
    key = custom_key(header)
    if policy == "ignore" or not key:
        return IGNORED
    return CUSTOM_PREFIX + key


def _explicit_targets(headers: tuple[str, ...], mapping: Mapping[str, str]) -> dict[int, str]:
    """Column index → target for the columns the mapping names (by exact header, else by matching name)."""
    exact = {h: i for i, h in enumerate(headers)}
    by_key = {header_key(h): i for i, h in reversed(list(enumerate(headers)))}
    found: dict[int, str] = {}
    for header, target in mapping.items():
        index = exact.get(header, by_key.get(header_key(header)))
        if index is None:
            raise ValidationError(
                f"mapping names the column {header!r}, which the file does not have (its columns: "
                f"{', '.join(headers)})",
                field=f"mapping.{header}",
                code="unknown_column",
            )
        found[index] = target
    return found


def _refuse_repeated_headers(headers: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for header in headers:
        if header in seen:
            raise ValidationError(
                f"the header row repeats the column {header!r}", field=header, code="duplicate_column"
            )
        seen.add(header)


def _refuse_shared_targets(targets: Mapping[str, str]) -> None:
    owner: dict[str, str] = {}
    for header, target in targets.items():
        if not target:
            continue
        if target in owner:
            raise ValidationError(
                f"columns {owner[target]!r} and {header!r} both map to {target}; map one of them "
                "elsewhere or to null",
                field=f"mapping.{header}",
                code="duplicate_field",
            )
        owner[target] = header


def _refuse_mixed_custom_fields(targets: Sequence[str]) -> None:
    if "custom_fields" in targets and any(t.startswith(CUSTOM_PREFIX) for t in targets):
        raise ValidationError(
            "use either a custom_fields column (JSON object text) or custom_fields.<key> columns; with "
            "unknown_columns=custom_fields, unknown columns are custom_fields.<key> columns too",
            field="custom_fields",
            code="conflict",
        )
