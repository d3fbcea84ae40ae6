"""Property tests: the Rust kernels agree with the pure-Python references on random and adversarial input.

Characters are drawn from code points assigned in Python's Unicode database (no `Cn`), so that Unicode
version differences between Python and Rust (case mapping, NFC) cannot masquerade as bugs; surrogates are
excluded because Polars strings are UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_bulk import kernels
from tests.unit import reference_kernels as ref

PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ANY_CHAR = st.characters(exclude_categories=("Cs", "Cn"))
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
SPACES = st.sampled_from(["", " ", "\t", "\u00a0", "\u3000", "\n "])


def joined(pieces: list[str], max_size: int) -> st.SearchStrategy[str]:
    """Strings made of up to `max_size` of `pieces` (which may be longer than one character)."""
    return st.lists(st.sampled_from(pieces), max_size=max_size).map("".join)


# Local parts: atext, specials, dots, quotes, escapes, non-ASCII, mixed case, a combining accent.
LOCAL_PIECES = [*"aZk09.+-_!#~'\"\\ @(", "é", "É", "ß", "İ", "Σ", "例", "\u00a0", "e\u0301"]
# Domain labels from letters that IDNA2008 and UTS 46 both accept (RTL ones too), digits and hyphens.
LABEL_PIECES = [
    *"abcXYZ019-",
    "é",
    "Ü",
    "ß",
    "ñ",
    "ж",
    "Д",
    "λ",
    "Σ",
    "例",
    "テ",
    "ア",
    "한",
    "ي",
    "א",
    "\u0661",
]
LABELS = joined(LABEL_PIECES, 12) | st.sampled_from(
    ["xn--bcher-kva", "xn--zz", "com", "co", "DE", "a" * 63, "a" * 64, "ab--cd", "-a", "1", "123"]
)


@st.composite
def structured_emails(draw: st.DrawFn) -> str:
    """Addresses shaped like real ones, often valid, with every rule's edge in reach."""
    quoted = st.sampled_from(['"a b"', '"a@b"', '""', '"\\"', "a" * 64])
    local = draw(joined(LOCAL_PIECES, 12) | quoted)
    if draw(st.booleans()):
        local = local * draw(st.integers(1, 8))
    labels = draw(st.lists(LABELS, min_size=1, max_size=5))
    domain = ".".join(labels)
    if draw(st.booleans()):
        domain = ".".join([domain, *["d" * 60] * draw(st.integers(0, 4))])
    at = draw(st.sampled_from(["@", "@", "@", "", "@@"]))
    return draw(SPACES) + local + at + domain + draw(SPACES)


def _emails_frame(values: list[str | None]) -> list[tuple[str | None, str | None]]:
    normalized, codes = kernels.normalize_emails(pl.Series(values, dtype=pl.String))
    return list(zip(normalized.to_list(), codes.to_list(), strict=True))


@PROFILE
@given(st.lists(structured_emails() | st.none(), max_size=30))
def test_emails_agree_with_reference(values: list[str | None]) -> None:
    assert _emails_frame(values) == [ref.normalize_email(v) for v in values]


@PROFILE
@given(st.lists(ANY_TEXT | st.builds(lambda a, b: f"{a}@{b}", ANY_TEXT, ANY_TEXT), max_size=30))
def test_emails_on_arbitrary_unicode(values: list[str | None]) -> None:
    """Exact agreement, except that UTS 46 (the kernel) admits some domains IDNA 2008 (the reference) refuses.

    Symbols such as U+2603 and context rules such as U+00B7 between two `l`s are IDNA 2008 registry
    rules; the kernel follows UTS 46 as browsers do. Every other outcome must match.
    """
    for value, got in zip(values, _emails_frame(values), strict=True):
        want = ref.normalize_email(value)
        if got != want:
            assert want == (None, "invalid_domain"), (value, got, want)
            assert got[1] is None and got[0] is not None, (value, got, want)
            assert got[0].rsplit("@", 1)[1].isascii()


PHONE_CHARS = st.sampled_from(
    [*"0123456789", *"0123456789", " ", "-", "(", ")", ".", "+", "/", "x", "#", "*"]
)
PHONES = (
    st.text(PHONE_CHARS, max_size=22)
    | st.builds(
        "+{}{}".format,
        st.sampled_from(["1", "44", "49", "33", "91", "61", "81", "55", "7", "999"]),
        st.text(st.sampled_from("0123456789 "), min_size=4, max_size=14),
    )
    | st.from_regex(r"\A\(?[2-9]\d\d\)? ?[2-9]\d\d-\d{4}( (ext|x)\.? ?\d{1,4})?\Z")
    | st.text(ANY_CHAR, max_size=16)
)


@PROFILE
@given(
    st.lists(PHONES | st.none(), max_size=25),
    st.sampled_from(["US", "GB", "DE", "IN", "BR", "JP", "FR", "AU"]),
)
def test_phones_agree_with_reference(values: list[str | None], region: str) -> None:
    e164, codes = kernels.normalize_phones(pl.Series(values, dtype=pl.String), default_region=region)
    got = list(zip(e164.to_list(), codes.to_list(), strict=True))
    assert got == [ref.normalize_phone(v, region) for v in values]


KEYS = (
    st.sampled_from(["a", "A", "b", "", " ", "é", "e\u0301", "例"])
    | st.text(ANY_CHAR, max_size=3)
    | st.none()
)


@PROFILE
@given(st.lists(st.lists(KEYS, max_size=20), min_size=1, max_size=4))
def test_first_occurrence_agrees_across_chunks(chunks: list[list[str | None]]) -> None:
    series = pl.concat([pl.Series(c, dtype=pl.String) for c in chunks], rechunk=False)
    is_first, first_index = kernels.first_occurrence(series)
    want_first, want_index = ref.first_occurrence(series.to_list())
    assert is_first.to_list() == want_first
    assert first_index.to_list() == want_index


@PROFILE
@given(st.lists(st.tuples(st.lists(KEYS, max_size=20), st.integers(0, 3)), min_size=1, max_size=4))
def test_seen_keys_agree_with_reference_across_calls(slices: list[tuple[list[str | None], int]]) -> None:
    # Record numbers: each slice starts where the previous ended, after a gap (records not keyed).
    numbered: list[tuple[list[str | None], int]] = []
    start = 1
    for keys, gap in slices:
        numbered.append((keys, start + gap))
        start += gap + len(keys)
    seen = kernels.SeenKeys()
    got = [seen.repeats(pl.Series(keys, dtype=pl.String), first).to_list() for keys, first in numbered]
    assert got == ref.seen_key_repeats(numbered)
    assert len(seen) == len({k for keys, _ in numbered for k in keys if k is not None})


@PROFILE
@given(
    st.lists(st.tuples(KEYS, KEYS, st.text(ANY_CHAR, max_size=8) | st.none()), max_size=25),
    st.permutations(["a", "b", "c"]),
    st.lists(st.integers(0, 6), min_size=3, max_size=3),
)
def test_lengths_agree_with_reference(
    rows: list[tuple[str | None, str | None, str | None]], order: list[str], limits: list[int]
) -> None:
    frame = pl.DataFrame(rows, schema={"a": pl.String, "b": pl.String, "c": pl.String}, orient="row")
    limit_map = dict(zip(order, limits, strict=True))
    want = [ref.first_too_long(row, limit_map) for row in frame.iter_rows(named=True)]
    assert kernels.validate_lengths(frame, limit_map).to_list() == want
    assert kernels.validate_lengths_rust(frame, limit_map).to_list() == want


JSON_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(ANY_CHAR, max_size=6)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(ANY_CHAR, max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def json_texts(draw: st.DrawFn) -> str:
    """Valid documents with odd spacing and escapes, and their truncations and corruptions."""
    value: Any = draw(JSON_VALUES)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2])))
    mutation = draw(st.sampled_from(["none", "none", "truncate", "insert", "wrap"]))
    if mutation == "truncate" and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif mutation == "insert":
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from([",", "]", "}", "{", '"', "\\", " ", "\x01", "NaN", "-", "0"]))
            + text[at:]
        )
    elif mutation == "wrap":
        text = draw(st.sampled_from(['{"k": %s}', "[%s]", '{"k": {"l": [%s]}}', " %s\n"])) % text
    return text


@PROFILE
@given(
    st.lists(json_texts() | st.text(ANY_CHAR, max_size=10) | st.none(), max_size=20),
    st.integers(0, 400),
    st.integers(0, 6),
)
def test_custom_fields_agree_with_reference(values: list[str | None], max_bytes: int, max_depth: int) -> None:
    codes = kernels.validate_custom_fields(
        pl.Series(values, dtype=pl.String), max_bytes=max_bytes, max_depth=max_depth
    )
    assert codes.to_list() == [ref.check_custom_fields(v, max_bytes, max_depth) for v in values]
