"""Column kernels of record validation: normalise emails and phones, find duplicates, check limits.

Every function takes and returns Polars columns; no Python runs per row. Which engine computes each was
decided by measurement: median seconds on 1,000,000 rows, 2-core machine, `benchmarks/test_bench_kernels.py`
(the Polars chains for email and phone do less than the kernels: ASCII only, no IDNA, US-only phones).

========================  ======  ======  ======  =====================================================
kernel                    Rust    Polars  Python  engine and why
========================  ======  ======  ======  =====================================================
normalize_emails          0.24    0.58    33.7    Rust: NFC, IDNA and RFC 5322 local parts; 2.4x the
                                                  regex-only Polars chain, 140x Python
normalize_phones          2.67    0.37*   35.9    Rust: libphonenumber metadata; *Polars only strips
                                                  punctuation, it cannot validate, so it is no substitute
first_occurrence          0.15    0.42    0.57    Rust: one pass over a table of row numbers beats
                                                  ``is_first_distinct`` plus a windowed ``first().over()``
validate_custom_fields    0.039   n/a     6.3     Rust: a syntax-only JSON scan that tracks depth;
                                                  Polars' ``json_decode`` needs a schema, reports neither
validate_lengths          0.027   0.009   0.19    Polars: ``len_chars`` per field wins; the Rust
                                                  version stays as ``validate_lengths_rust``
========================  ======  ======  ======  =====================================================

Timings on a shared machine vary by 2-3x between runs; across five runs email stayed 2.0-5.2x faster
than the Polars chain and 54-140x faster than pure Python.

The Rust kernels receive the Series' Arrow buffers through the Arrow PyCapsule interface (no copy),
release the GIL while they run, and hand back Arrow arrays that Polars adopts without copying. The
row-independent ones (emails, phones, custom fields) split columns of 131,072 rows or more over up to
min(cores, 4) threads; worker chunks (5,000 rows by default) run on the calling thread.
Errors: a wrong column type raises ``TypeError``; unusable arguments raise ``ValueError``; a bug in the
core surfaces as ``RuntimeError``, never as a panic.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from crm_bulk import _core

__all__ = [
    "CUSTOM_FIELD_CODES",
    "EMAIL_CODES",
    "PHONE_CODES",
    "first_occurrence",
    "normalize_emails",
    "normalize_phones",
    "validate_custom_fields",
    "validate_lengths",
    "validate_lengths_rust",
]

EMAIL_CODES = ("empty", "too_long", "missing_at", "invalid_local_part", "invalid_domain")
"""Every code `normalize_emails` reports."""
PHONE_CODES = ("invalid_phone", "too_short", "too_long", "invalid_country")
"""Every code `normalize_phones` reports."""
CUSTOM_FIELD_CODES = ("invalid_json", "not_an_object", "too_large", "too_deep")
"""Every code `validate_custom_fields` reports."""


def _string_column(series: pl.Series, what: str) -> pl.Series:
    """The Series as Polars strings; an all-null Series of type Null counts as strings."""
    if not isinstance(series, pl.Series):
        raise TypeError(f"{what}: expected a polars.Series, got {type(series).__name__}")
    if series.dtype == pl.String:
        return series
    if series.dtype in (pl.Null, pl.Categorical) or isinstance(series.dtype, pl.Enum):
        return series.cast(pl.String)
    raise TypeError(f"{what}: expected a String Series, got {series.dtype}")


def _series(name: str, column: _core.ArrowColumn) -> pl.Series:
    return pl.Series(column).alias(name)


def normalize_emails(emails: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Normalise and validate emails.

    Returns ``(normalized, code)``: ``normalized`` is trimmed, NFC, lower-case, with the domain in ASCII
    (IDNA), null where the input is null or invalid; ``code`` is null when valid, else one of
    `EMAIL_CODES`. A null email has code ``"empty"``. Names: the input's, and ``<name>_code``.
    """
    column = _string_column(emails, "emails")
    normalized, codes = _core.normalize_emails(column)
    return _series(emails.name, normalized), _series(f"{emails.name}_code", codes)


def normalize_phones(phones: pl.Series, default_region: str = "US") -> tuple[pl.Series, pl.Series]:
    """Normalise phones to E.164, reading numbers without a country code in ``default_region``.

    Returns ``(e164, code)``: ``e164`` is null where the input is null, blank or invalid; ``code`` is
    null when valid or when there is no phone (null or blank), else one of `PHONE_CODES`.
    An unknown region raises ``ValueError``.
    """
    column = _string_column(phones, "phones")
    e164, codes = _core.normalize_phones(column, default_region)
    return _series(phones.name, e164), _series(f"{phones.name}_code", codes)


def first_occurrence(keys: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Find duplicates within a column.

    Returns ``(is_first, first_index)``: ``is_first`` (Boolean) is True for the first row of each key;
    ``first_index`` (Int64) is, for a duplicate, the row of its key's first occurrence, else null. Null
    keys are never duplicates.
    """
    column = _string_column(keys, "keys")
    is_first, first_index = _core.first_occurrence(column)
    return _series("is_first", is_first), _series("first_index", first_index)


class SeenKeys:
    """Keys met across calls — an import's normalised emails, slice by slice — each with the number of the
    record that held it first. Kept in Rust as 128-bit hashes, about 30 MB per million distinct keys."""

    def __init__(self) -> None:
        self._seen = _core.SeenKeys()

    def repeats(self, keys: pl.Series, first_record: int) -> pl.Series:
        """Per row (row i is record `first_record + i`): the number of the earlier record that held the key,
        as Int64, or null when the row is the key's first record. Null keys are never repeats."""
        column = _string_column(keys, "keys")
        return _series("repeat_of", self._seen.repeats(column, first_record))

    def __len__(self) -> int:
        return len(self._seen)


def validate_lengths(frame: pl.DataFrame, limits: Mapping[str, int]) -> pl.Series:
    """Per row, the first field (in ``limits`` order) longer than its limit in characters, else null.

    Every field named in ``limits`` must be a String (or all-null) column of ``frame``; a missing one
    raises ``ValueError``, a limit below zero too. A Polars expression: see the module docstring.
    """
    checks: list[pl.Expr] = []
    for name, limit in limits.items():
        if name not in frame.columns:
            raise ValueError(f"validate_lengths: no column named {name!r}")
        if limit < 0:
            raise ValueError(f"validate_lengths: limit for {name!r} must be >= 0, got {limit}")
        _string_column(frame.get_column(name), name)
        length = pl.col(name).cast(pl.String).str.len_chars()
        checks.append(pl.when(length > limit).then(pl.lit(name)))
    if not checks:
        return pl.Series("too_long_field", [None] * frame.height, dtype=pl.String)
    return frame.select(pl.coalesce(checks).alias("too_long_field")).to_series()


def validate_lengths_rust(frame: pl.DataFrame, limits: Mapping[str, int]) -> pl.Series:
    """`validate_lengths` computed by the Rust core instead: same result, measured slower (module docstring).

    Kept so the measurement behind the choice stays reproducible (``benchmarks/test_bench_kernels.py``).
    """
    missing = [name for name in limits if name not in frame.columns]
    if missing:
        raise ValueError(f"validate_lengths: no column named {', '.join(map(repr, missing))}")
    names = list(limits)
    columns = [_string_column(frame.get_column(name), name) for name in names]
    codes = _core.validate_lengths(columns, names, [limits[name] for name in names], frame.height)
    return _series("too_long_field", codes)


def validate_custom_fields(json_texts: pl.Series, *, max_bytes: int = 16384, max_depth: int = 5) -> pl.Series:
    """Check custom-fields JSON documents: a code per row, null when fine or null.

    Codes, first failure wins: ``too_large`` (UTF-8 bytes over ``max_bytes``), ``invalid_json`` (the
    empty string included), ``not_an_object``, ``too_deep`` (objects/arrays nested deeper than
    ``max_depth``, the top-level object counting as 1).
    """
    column = _string_column(json_texts, "json_texts")
    codes = _core.validate_custom_fields(column, max_bytes=max_bytes, max_depth=max_depth)
    return _series(f"{json_texts.name}_code", codes)
