"""Pure-Python reference implementations of the Rust kernels in `crm_bulk.kernels`, one row at a time.

They are written from the rules in the kernels' documentation with independent libraries (`idna` for
UTS 46, `phonenumbers` for libphonenumber, `json`), so agreement is evidence, not tautology.
Also used by the benchmarks as the pure-Python baseline.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import idna
import phonenumbers

# Unicode White_Space, what Rust's `str::trim` removes (Python's `str.strip()` also removes U+001C..U+001F).
WHITE_SPACE = (
    "".join(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029]))
    + "\u202f\u205f\u3000"
)

MAX_ADDRESS_BYTES = 254
MAX_LOCAL_PART_BYTES = 64
_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")


def _atext(ch: str) -> bool:
    return not ch.isascii() or (ch.isalnum()) or ch in _ATEXT_SPECIALS


def _qcontent(text: str) -> bool:
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            escaped = next(chars, None)
            if escaped is None or not 0x21 <= ord(escaped) <= 0x7E:
                return False
        elif not (
            ch in " \t"
            or ch == "\x21"
            or 0x23 <= ord(ch) <= 0x5B
            or 0x5D <= ord(ch) <= 0x7E
            or not ch.isascii()
        ):
            return False
    return True


def _local_part_ok(local: str) -> bool:
    if not local:
        return False
    if local.startswith('"') and local.endswith('"'):
        return len(local) > 2 and _qcontent(local[1:-1])
    return all(atom and all(_atext(ch) for ch in atom) for atom in local.split("."))


def _bidi_rule_holds(ascii_domain: str) -> bool:
    """RFC 5893: in a domain with any right-to-left label, every label must satisfy the Bidi rule.

    `idna.encode` checks only the labels that hold right-to-left characters themselves.
    """
    labels = idna.decode(ascii_domain).split(".")
    if not any(unicodedata.bidirectional(ch) in ("R", "AL", "AN") for label in labels for ch in label):
        return True
    try:
        return all(idna.core.check_bidi(label, check_ltr=True) for label in labels)
    except idna.IDNABidiError:
        return False


def _domain_to_ascii(domain: str) -> str | None:
    try:
        ascii_domain = idna.encode(domain, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None
    if ascii_domain.endswith(".") or "." not in ascii_domain or not _bidi_rule_holds(ascii_domain):
        return None
    if ascii_domain.rsplit(".", 1)[1].isdigit():
        return None
    return ascii_domain


def normalize_email(raw: str | None) -> tuple[str | None, str | None]:  # noqa: PLR0911
    # One return per documented step of the kernel, so the reference reads like the spec it checks.
    """(normalised, code) for one email, following the kernel's documented steps."""
    text = (raw or "").strip(WHITE_SPACE)
    if not text:
        return None, "empty"
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).lower())
    if "@" not in folded:
        return None, "missing_at"
    local, domain = folded.rsplit("@", 1)
    if len(local.encode()) > MAX_LOCAL_PART_BYTES:
        return None, "too_long"
    if not _local_part_ok(local):
        return None, "invalid_local_part"
    ascii_domain = _domain_to_ascii(domain)
    if ascii_domain is None:
        return None, "invalid_domain"
    address = f"{local}@{ascii_domain}"
    if len(address.encode()) > MAX_ADDRESS_BYTES:
        return None, "too_long"
    return address, None


_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "invalid_country",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "invalid_phone",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too_short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too_short",
    phonenumbers.NumberParseException.TOO_LONG: "too_long",
}


def normalize_phone(raw: str | None, region: str = "US") -> tuple[str | None, str | None]:
    """(e164, code) for one phone; blank or null is no phone."""
    text = (raw or "").strip(WHITE_SPACE)
    if not text:
        return None, None
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException as err:
        return None, _PARSE_ERRORS[err.error_type]
    if not phonenumbers.is_valid_number(number):
        return None, "invalid_phone"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def first_occurrence(keys: Iterable[str | None]) -> tuple[list[bool], list[int | None]]:
    """(is_first, first_index) with a dict of first rows."""
    seen: dict[str, int] = {}
    is_first: list[bool] = []
    first_index: list[int | None] = []
    for row, key in enumerate(keys):
        first = None if key is None else seen.setdefault(key, row)
        duplicate = first is not None and first != row
        is_first.append(not duplicate)
        first_index.append(first if duplicate else None)
    return is_first, first_index


def seen_key_repeats(slices: Iterable[tuple[list[str | None], int]]) -> list[list[int | None]]:
    """Per slice (keys, first record number): each row's earlier record holding the key, else None."""
    seen: dict[str, int] = {}
    out: list[list[int | None]] = []
    for keys, first_record in slices:
        repeats: list[int | None] = []
        for record, key in enumerate(keys, start=first_record):
            earlier = None if key is None else seen.setdefault(key, record)
            repeats.append(earlier if earlier is not None and earlier != record else None)
        out.append(repeats)
    return out


def first_too_long(row: Mapping[str, str | None], limits: Mapping[str, int]) -> str | None:
    """The first field of `row` (in `limits` order) with more characters than its limit."""
    for name, limit in limits.items():
        value = row[name]
        if value is not None and len(value) > limit:
            return name
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


class _JsonObject(list[Any]):
    """An object's member values, duplicates kept: a repeated key must not hide a deep first value."""


def _object_values(pairs: list[tuple[str, Any]]) -> _JsonObject:
    return _JsonObject(value for _, value in pairs)


def _depth(value: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, list):
            continue
        children: Sequence[Any] = item
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_custom_fields(text: str | None, max_bytes: int = 16384, max_depth: int = 5) -> str | None:
    """The custom-fields code of one document (null when fine)."""
    if text is None:
        return None
    if len(text.encode()) > max_bytes:
        return "too_large"
    try:
        # Integers are not built (no 4300-digit limit); NaN and Infinity are not JSON.
        value = json.loads(
            text, parse_constant=_reject_constant, parse_int=len, object_pairs_hook=_object_values
        )
    except ValueError:
        return "invalid_json"
    if not isinstance(value, _JsonObject):
        return "not_an_object"
    if _depth(value) > max_depth:
        return "too_deep"
    return None
