"""Behaviour of `crm_bulk.kernels` at the Python boundary: dtypes, nulls, names, chunks, errors."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pyarrow as pa
import pytest

from crm_bulk import _core, kernels
from tests.unit import reference_kernels as ref


def test_normalize_emails_values_codes_and_nulls() -> None:
    emails = pl.Series("email", ["  John@Example.COM", None, "nope", "", "a@b", "Jürgen@Bücher.de"])
    normalized, codes = kernels.normalize_emails(emails)
    assert normalized.name == "email"
    assert codes.name == "email_code"
    assert normalized.dtype == pl.String
    assert codes.dtype == pl.String
    assert normalized.to_list() == ["john@example.com", None, None, None, None, "jürgen@xn--bcher-kva.de"]
    assert codes.to_list() == [None, "empty", "missing_at", "empty", "invalid_domain", None]


@pytest.mark.parametrize(
    ("email", "code"),
    [
        ("a" * 65 + "@example.com", "too_long"),
        ("a" * 10 + "@" + ".".join(["d" * 63] * 3 + ["d" * 57, "com"]), "too_long"),
        ("a..b@example.com", "invalid_local_part"),
        ('"quoted"@example.com', None),
        ('"un"closed"@example.com', "invalid_local_part"),
        ("user@exa mple.com", "invalid_domain"),
        ("user@[10.0.0.1]", "invalid_domain"),
    ],
)
def test_normalize_emails_codes(email: str, code: str | None) -> None:
    _, codes = kernels.normalize_emails(pl.Series([email]))
    assert codes.to_list() == [code]


def test_every_email_code_is_declared() -> None:
    samples = pl.Series(["", "x", "a" * 65 + "@b.co", ".a@b.co", "a@-b.co"])
    _, codes = kernels.normalize_emails(samples)
    assert set(codes.to_list()) == set(kernels.EMAIL_CODES)


def test_normalize_phones_default_region_and_blank() -> None:
    phones = pl.Series("phone", ["(650) 253-0000", "  ", None, "+44 20 7031 3000", "12", "abc"])
    e164, codes = kernels.normalize_phones(phones)
    assert e164.name == "phone"
    assert codes.name == "phone_code"
    assert e164.to_list() == ["+16502530000", None, None, "+442070313000", None, None]
    assert codes.to_list() == [None, None, None, None, "invalid_phone", "invalid_phone"]
    gb, _ = kernels.normalize_phones(pl.Series(["020 7031 3000"]), default_region="gb")
    assert gb.to_list() == ["+442070313000"]


@pytest.mark.parametrize(
    ("phone", "code"),
    [("+999 123 456 789", "invalid_country"), ("+44 1", "too_short"), ("1" * 25, "too_long")],
)
def test_normalize_phones_codes(phone: str, code: str) -> None:
    _, codes = kernels.normalize_phones(pl.Series([phone]))
    assert codes.to_list() == [code]
    assert code in kernels.PHONE_CODES


@pytest.mark.parametrize("region", ["XX", "", "USA", "1"])
def test_normalize_phones_rejects_unknown_regions(region: str) -> None:
    with pytest.raises(ValueError, match="default_region"):
        kernels.normalize_phones(pl.Series(["650 253 0000"]), default_region=region)


def test_first_occurrence_with_nulls() -> None:
    keys = pl.Series(["a", "b", "a", None, None, "b", "a"])
    is_first, first_index = kernels.first_occurrence(keys)
    assert is_first.dtype == pl.Boolean
    assert first_index.dtype == pl.Int64
    assert is_first.to_list() == [True, True, False, True, True, False, False]
    assert first_index.to_list() == [None, None, 0, None, None, 1, 0]


def test_first_occurrence_spans_chunks() -> None:
    keys = pl.concat([pl.Series(["x", "y"]), pl.Series(["y", "x", "z"])], rechunk=False)
    assert keys.n_chunks() == 2
    is_first, first_index = kernels.first_occurrence(keys)
    assert is_first.to_list() == [True, True, False, False, True]
    assert first_index.to_list() == [None, None, 1, 0, None]


@pytest.mark.parametrize("validate", [kernels.validate_lengths, kernels.validate_lengths_rust])
def test_validate_lengths_first_field_in_limit_order(
    validate: Callable[[pl.DataFrame, dict[str, int]], pl.Series],
) -> None:
    frame = pl.DataFrame(
        {
            "first_name": ["ok", "toolong", None, "ééé"],
            "company": ["c" * 5, "ok", "c" * 5, "ok"],
            "tags": [1, 2, 3, 4],
        }
    )
    result = validate(frame, {"company": 4, "first_name": 3})
    assert result.dtype == pl.String
    assert result.name == "too_long_field"
    assert result.to_list() == ["company", "first_name", "company", None]
    assert validate(frame, {}).to_list() == [None] * 4


@pytest.mark.parametrize("validate", [kernels.validate_lengths, kernels.validate_lengths_rust])
def test_validate_lengths_errors(validate: Callable[[pl.DataFrame, dict[str, int]], pl.Series]) -> None:
    frame = pl.DataFrame({"name": ["a"], "n": [1]})
    with pytest.raises(ValueError, match="missing_column"):
        validate(frame, {"missing_column": 3})
    with pytest.raises(TypeError, match="Int64"):
        validate(frame, {"n": 3})
    with pytest.raises(ValueError, match=">= 0"):
        validate(frame, {"name": -1})


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (None, None),
        ('{"plan": "gold", "seats": [1, 2]}', None),
        ("", "invalid_json"),
        ("{'a': 1}", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('{"a": {"b": {"c": {"d": {"e": {}}}}}}', "too_deep"),
        ('{"a": "' + "x" * 20000 + '"}', "too_large"),
    ],
)
def test_validate_custom_fields(text: str | None, code: str | None) -> None:
    codes = kernels.validate_custom_fields(pl.Series("custom_fields", [text], dtype=pl.String))
    assert codes.name == "custom_fields_code"
    assert codes.to_list() == [code]


def test_validate_custom_fields_limits_are_keywords() -> None:
    texts = pl.Series(['{"a": [1]}'])
    assert kernels.validate_custom_fields(texts, max_depth=1).to_list() == ["too_deep"]
    assert kernels.validate_custom_fields(texts, max_bytes=5).to_list() == ["too_large"]
    with pytest.raises(ValueError, match="max_depth"):
        kernels.validate_custom_fields(texts, max_depth=-1)


@pytest.mark.parametrize(
    "call",
    [
        kernels.normalize_emails,
        kernels.normalize_phones,
        kernels.first_occurrence,
        kernels.validate_custom_fields,
    ],
)
def test_wrong_dtype_is_a_type_error(call: Callable[[pl.Series], object]) -> None:
    with pytest.raises(TypeError, match="String"):
        call(pl.Series([1, 2]))


def test_not_a_series_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"polars\.Series"):
        kernels.normalize_emails(["a@b.co"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Arrow PyCapsule"):
        _core.normalize_emails(["a@b.co"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Int64"):
        _core.first_occurrence(pl.Series([1]))


@pytest.mark.parametrize("values", [[None, None], []])
def test_all_null_and_empty_columns(values: list[None]) -> None:
    series = pl.Series("e", values)
    normalized, codes = kernels.normalize_emails(series)
    assert normalized.to_list() == values
    assert codes.to_list() == ["empty"] * len(values)
    is_first, first_index = kernels.first_occurrence(series)
    assert is_first.to_list() == [True] * len(values)
    assert first_index.to_list() == values


def test_categorical_keys_are_read_as_strings() -> None:
    keys = pl.Series(["a", "b", "a"], dtype=pl.Categorical)
    is_first, _ = kernels.first_occurrence(keys)
    assert is_first.to_list() == [True, True, False]


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string(), pa.string_view()])
def test_core_accepts_pyarrow_arrays(arrow_type: pa.DataType) -> None:
    array = pa.array(["X@Y.com", None], type=arrow_type)
    normalized, codes = _core.normalize_emails(array)
    assert pa.array(normalized).to_pylist() == ["x@y.com", None]
    assert pl.Series(codes).to_list() == [None, "empty"]
    assert len(normalized) == 2


def test_sliced_series_keeps_offsets() -> None:
    series = pl.Series(["A@b.co", "C@d.co", "E@f.co", None])[1:]
    normalized, _ = kernels.normalize_emails(series)
    assert normalized.to_list() == ["c@d.co", "e@f.co", None]


@pytest.mark.parametrize(
    "email",
    [
        "a" * 100_000 + "@example.com",
        "x@" + "a" * 100_000 + ".com",
        "  " + "é" * 50_000 + "@b.co",
        "@" * 10_000,
    ],
)
def test_very_long_emails_agree_with_reference(email: str) -> None:
    normalized, codes = kernels.normalize_emails(pl.Series([email]))
    assert (normalized[0], codes[0]) == ref.normalize_email(email)
    assert codes[0] is not None


@pytest.mark.parametrize(
    "phone", ["1" * 10_000, "+" + "4" * 300, "(" * 5_000 + "650 253 0000", "(" * 238 + "650 253 0000"]
)
def test_very_long_phones_agree_with_reference(phone: str) -> None:
    e164, codes = kernels.normalize_phones(pl.Series([phone]))
    assert (e164[0], codes[0]) == ref.normalize_phone(phone)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"a": ' + "[" * 50_000 + "]" * 50_000 + "}", "too_deep"),
        ("[" * 100_000, "invalid_json"),
        ("{" * 100_000, "invalid_json"),
        ('{"a": ' + "[" * 50_000 + "]" * 49_999 + "}", "invalid_json"),
    ],
)
def test_deep_json_never_overflows(text: str, code: str) -> None:
    codes = kernels.validate_custom_fields(pl.Series([text]), max_bytes=1_000_000)
    assert codes.to_list() == [code]


def _in_slices(series: pl.Series, kernel: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """The kernel applied to small slices (each below the size that splits work over threads)."""
    return pl.concat([kernel(series.slice(start, 10_000)) for start in range(0, series.len(), 10_000)])


@pytest.mark.parametrize(
    ("values", "kernel"),
    [
        (
            ["A@B.co", None, "bad", "José.Ñ@Bücher.de", "x" * 30 + "@example.org"],
            lambda s: kernels.normalize_emails(s)[0],
        ),
        (["A@B.co", None, "bad", "x@-y.com"], lambda s: kernels.normalize_emails(s)[1]),
        (["(650) 253-0000", None, "", "+44 20 7031 3000", "12"], lambda s: kernels.normalize_phones(s)[0]),
        (["(650) 253-0000", "12", "+999 1", "abc"], lambda s: kernels.normalize_phones(s)[1]),
        (['{"a": 1}', "[]", None, "{", '{"k": "' + "v" * 20 + '"}'], kernels.validate_custom_fields),
    ],
)
def test_large_columns_split_over_threads_give_the_same_rows(
    values: list[str | None], kernel: Callable[[pl.Series], pl.Series]
) -> None:
    series = pl.Series("v", values * (300_000 // len(values)), dtype=pl.String)
    whole = kernel(series)
    assert whole.n_chunks() == 1
    assert whole.equals(_in_slices(series, kernel), check_names=False)
