"""What the user typed, as request parts: JSON inline or as `@file`, files of ids, `field=value`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crm_bulk.cli.client.exits import ClientError

USAGE = 2


def json_argument(value: str, option: str) -> Any:
    """`value` parsed as JSON; `@path` reads the file."""
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise ClientError(f"{option}: cannot read {value[1:]} ({exc.strerror})", USAGE) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ClientError(f"{option}: not valid JSON ({exc})", USAGE) from None


def read_ids(path: str) -> list[int]:
    """Contact ids, one per line (blank lines, `#` comments and an `id` header skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ClientError(f"--ids-from: cannot read {path} ({exc.strerror})", USAGE) from None
    ids = []
    for number, line in enumerate(lines, start=1):
        text = line.split(",", 1)[0].strip()
        if not text or text.startswith("#") or (number == 1 and text.lower() == "id"):
            continue
        if not text.isdigit():
            raise ClientError(f"--ids-from: line {number} of {path} is not a contact id: {text!r}", USAGE)
        ids.append(int(text))
    if not ids:
        raise ClientError(f"--ids-from: {path} holds no contact ids", USAGE)
    return ids


def target_of(filter_json: str | None, ids_from: str | None, everything: bool) -> dict[str, Any]:
    """The request's `target`: exactly one of `--filter`, `--ids-from`, `--all`."""
    given = [x for x in (filter_json, ids_from) if x is not None] + ([True] if everything else [])
    if len(given) != 1:
        raise ClientError("give exactly one of --filter, --ids-from, --all", USAGE)
    if filter_json is not None:
        found = json_argument(filter_json, "--filter")
        if not isinstance(found, dict):
            raise ClientError('--filter: expected a JSON object like {"company": {"eq": "Acme"}}', USAGE)
        return {"filter": found}
    if ids_from is not None:
        return {"ids": read_ids(ids_from)}
    return {"all": True}


def changes_of(assignments: tuple[str, ...], unset: tuple[str, ...]) -> dict[str, Any]:
    """`--set field=value …` and `--unset field …` as the update's `changes`; `custom_fields.<key>=value`
    sets one custom field."""
    plain: dict[str, str] = {}
    custom: dict[str, str] = {}
    for assignment in assignments:
        field, sep, value = assignment.partition("=")
        if not sep or not field.strip():
            raise ClientError(f"--set: expected field=value, got {assignment!r}", USAGE)
        field = field.strip()
        if field.startswith("custom_fields."):
            custom[field.removeprefix("custom_fields.")] = value
        else:
            plain[field] = value
    changes: dict[str, Any] = {}
    if plain:
        changes["set"] = plain
    if custom:
        changes["custom_fields"] = custom
    if unset:
        changes["unset"] = list(unset)
    if not changes:
        raise ClientError("give at least one --set field=value or --unset field", USAGE)
    return changes


def tags_of(values: tuple[str, ...]) -> list[str]:
    """Tags given as arguments, each possibly comma-separated."""
    tags = [tag.strip() for value in values for tag in value.split(",") if tag.strip()]
    if not tags:
        raise ClientError("give at least one tag", USAGE)
    return tags
