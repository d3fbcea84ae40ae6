"""Record-validation kernels on 1,000,000 rows: Rust (`crm_bulk.kernels`) beside the best Polars-expression
chain and a pure-Python loop (the references in tests/unit/reference_kernels.py).

    .venv/bin/pytest benchmarks/test_bench_kernels.py --benchmark-only
    CRM_BULK_BENCH_ROWS=20000 .venv/bin/pytest benchmarks/test_bench_kernels.py   # a quick check

The Polars chains are what one would write without the Rust core. They do less than the kernels (ASCII
only: no NFC, no IDNA, no per-country phone metadata) and still lose, which is the point of measuring them.
Pure Python runs one round (it takes tens of seconds at 1M rows); the others several. The ratio table
printed at the end comes from benchmarks/conftest.py.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from tests.unit import reference_kernels as ref

from crm_bulk import kernels

ROWS = int(os.environ.get("CRM_BULK_BENCH_ROWS", "1000000"))
SEED = 20260101

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")


def _emails(rng: random.Random, n: int) -> list[str | None]:
    firsts = ["john", "Mary", "li", "José", "anna-marie", "o'neil", "Zoë", "wei", "ahmed", "SVEN"]
    domains = ["example.com", "Mail.Example.org", "corp.co.uk", "bücher.de", "gmail.com", "例え.jp", "x.io"]
    out: list[str | None] = []
    for i in range(n):
        roll = rng.random()
        first = rng.choice(firsts)
        if roll < 0.02:
            out.append(None)
        elif roll < 0.05:
            out.append(f"{first}.{i}.example.com")  # missing @
        elif roll < 0.07:
            out.append(f"{first}..{i}@example.com")  # bad local part
        elif roll < 0.09:
            out.append(f"{first}{i}@exa_mple.com")  # bad domain
        else:
            pad = " " if roll > 0.97 else ""
            out.append(f"{pad}{first}.{rng.randrange(10**6)}+{i % 7}@{rng.choice(domains)}{pad}")
    return out


def _phones(rng: random.Random, n: int) -> list[str | None]:
    out: list[str | None] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.03:
            out.append(None)
        elif roll < 0.06:
            out.append("n/a")
        elif roll < 0.8:
            out.append(f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randrange(10000):04d}")
        elif roll < 0.9:
            out.append(f"+44 20 7{rng.randrange(1000):03d} {rng.randrange(10000):04d}")
        else:
            out.append(f"+49 30 {rng.randrange(10**7, 10**8)}")
    return out


@pytest.fixture(scope="module")
def data() -> dict[str, pl.Series]:
    rng = random.Random(SEED)
    emails = _emails(rng, ROWS)
    # Dedup keys: normalised emails, about one in five repeated.
    keys = [f"user{rng.randrange(int(ROWS * 0.8))}@example.com" for _ in range(ROWS)]
    return {
        "email": pl.Series("email", emails, dtype=pl.String),
        "phone": pl.Series("phone", _phones(rng, ROWS), dtype=pl.String),
        "key": pl.Series("key", keys, dtype=pl.String),
    }


Timings = dict[tuple[str, str], float]


def _run(benchmark: Any, timings: Timings, key: tuple[str, str], fn: Callable[[], Any], rounds: int) -> Any:
    result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    if benchmark.stats is not None:
        timings[key] = benchmark.stats.stats.median
    return result


# Email ---------------------------------------------------------------------------------------------

_LOCAL_RE = r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"
_DOMAIN_RE = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"


def polars_emails(emails: pl.Series) -> pl.DataFrame:
    """The best Polars chain we found: trim, lower-case, split on the last @, two regexes (ASCII only)."""
    text = pl.col("email").str.strip_chars().str.to_lowercase()
    local = pl.col("_t").str.extract(r"^(.*)@[^@]*$", 1)
    domain = pl.col("_t").str.extract(r"@([^@]*)$", 1)
    code = (
        pl.when(pl.col("_t").is_null() | (pl.col("_t") == ""))
        .then(pl.lit("empty"))
        .when(~pl.col("_t").str.contains("@", literal=True))
        .then(pl.lit("missing_at"))
        .when(local.str.len_bytes() > 64)
        .then(pl.lit("too_long"))
        .when(~local.str.contains(_LOCAL_RE))
        .then(pl.lit("invalid_local_part"))
        .when(~domain.str.contains(_DOMAIN_RE))
        .then(pl.lit("invalid_domain"))
        .when(pl.col("_t").str.len_bytes() > 254)
        .then(pl.lit("too_long"))
    )
    return (
        emails.to_frame()
        .lazy()
        .with_columns(text.alias("_t"))
        .with_columns(code.alias("code"))
        .select(pl.when(pl.col("code").is_null()).then(pl.col("_t")).alias("email"), "code")
        .collect()
    )


def test_email_rust(benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series]) -> None:
    normalized, codes = _run(
        benchmark, kernel_timings, ("email", "rust"), lambda: kernels.normalize_emails(data["email"]), 5
    )
    assert normalized.len() == ROWS and codes.null_count() > ROWS // 2


# Phone ---------------------------------------------------------------------------------------------


def polars_phones(phones: pl.Series) -> pl.DataFrame:
    """A North-American-only approximation: keep digits and +, then fix up 10/11-digit numbers."""
    digits = pl.col("phone").str.replace_all(r"[^0-9+]", "")
    e164 = (
        pl.when(pl.col("_d").str.starts_with("+") & pl.col("_d").str.len_bytes().is_between(8, 16))
        .then(pl.col("_d"))
        .when(pl.col("_d").str.contains(r"^[2-9][0-9]{2}[2-9][0-9]{6}$"))
        .then(pl.lit("+1") + pl.col("_d"))
        .when(pl.col("_d").str.contains(r"^1[2-9][0-9]{2}[2-9][0-9]{6}$"))
        .then(pl.lit("+") + pl.col("_d"))
    )
    code = pl.when(pl.col("_d").is_not_null() & (pl.col("_d") != "") & pl.col("e164").is_null()).then(
        pl.lit("invalid_phone")
    )
    return (
        phones.to_frame()
        .lazy()
        .with_columns(digits.alias("_d"))
        .with_columns(e164.alias("e164"))
        .select("e164", code.alias("code"))
        .collect()
    )


def test_phone_rust(benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series]) -> None:
    e164, _ = _run(
        benchmark, kernel_timings, ("phone", "rust"), lambda: kernels.normalize_phones(data["phone"]), 3
    )
    assert e164.null_count() < ROWS // 2


# The normalisers' alternatives per field: the Polars chain and the pure-Python reference.
NORMALISERS: dict[str, tuple[Callable[[pl.Series], pl.DataFrame], Callable[[str | None], Any]]] = {
    "email": (polars_emails, ref.normalize_email),
    "phone": (polars_phones, ref.normalize_phone),
}


@pytest.mark.parametrize("column", list(NORMALISERS))
def test_normalise_polars(
    benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series], column: str
) -> None:
    chain = NORMALISERS[column][0]
    frame = _run(benchmark, kernel_timings, (column, "polars"), lambda: chain(data[column]), 5)
    assert isinstance(frame, pl.DataFrame) and frame.height == ROWS


@pytest.mark.parametrize("column", list(NORMALISERS))
def test_normalise_python(
    benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series], column: str
) -> None:
    reference, values = NORMALISERS[column][1], data[column].to_list()
    result = _run(benchmark, kernel_timings, (column, "python"), lambda: [reference(v) for v in values], 1)
    assert isinstance(result, list) and len(result) == ROWS


# Dedup ---------------------------------------------------------------------------------------------


def polars_first_occurrence(keys: pl.Series) -> pl.DataFrame:
    """`is_first_distinct` for the mask; a window `first()` of the row index for the first occurrence."""
    key = pl.col("key")
    is_first = key.is_null() | key.is_first_distinct()
    first = pl.col("row").first().over(key).cast(pl.Int64)
    return (
        keys.to_frame()
        .lazy()
        .with_row_index("row")
        .select(is_first.alias("is_first"), pl.when(~is_first).then(first).alias("first_index"))
        .collect()
    )


def test_dedup_rust(benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series]) -> None:
    is_first, _ = _run(
        benchmark, kernel_timings, ("dedup", "rust"), lambda: kernels.first_occurrence(data["key"]), 5
    )
    assert 0 < is_first.sum() < ROWS


def test_dedup_polars(benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series]) -> None:
    frame = _run(
        benchmark, kernel_timings, ("dedup", "polars"), lambda: polars_first_occurrence(data["key"]), 5
    )
    assert isinstance(frame, pl.DataFrame) and frame.height == ROWS


def test_dedup_python(benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series]) -> None:
    values = data["key"].to_list()
    result = _run(benchmark, kernel_timings, ("dedup", "python"), lambda: ref.first_occurrence(values), 1)
    assert isinstance(result, tuple)


def test_dedup_agrees_with_polars(data: dict[str, pl.Series]) -> None:
    is_first, first_index = kernels.first_occurrence(data["key"])
    frame = polars_first_occurrence(data["key"])
    assert is_first.equals(frame["is_first"], check_names=False)
    assert first_index.equals(frame["first_index"], check_names=False)


# Hash ----------------------------------------------------------------------------------------------


# Lengths -------------------------------------------------------------------------------------------

LIMITS = {"email": 254, "phone": 32, "key": 40}


def polars_lengths(frame: pl.DataFrame) -> pl.Series:
    """The shipped `kernels.validate_lengths`: a `len_chars` test per field, the first by `coalesce`."""
    return kernels.validate_lengths(frame, LIMITS)


def test_lengths_rust(benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series]) -> None:
    frame = pl.DataFrame(list(data.values()))
    result = _run(
        benchmark,
        kernel_timings,
        ("lengths", "rust"),
        lambda: kernels.validate_lengths_rust(frame, LIMITS),
        5,
    )
    assert isinstance(result, pl.Series) and result.equals(polars_lengths(frame), check_names=False)


def test_lengths_polars(benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series]) -> None:
    frame = pl.DataFrame(list(data.values()))
    result = _run(benchmark, kernel_timings, ("lengths", "polars"), lambda: polars_lengths(frame), 5)
    assert isinstance(result, pl.Series)


def test_lengths_python(benchmark: Any, kernel_timings: Timings, data: dict[str, pl.Series]) -> None:
    rows = pl.DataFrame(list(data.values())).to_dicts()
    result = _run(
        benchmark,
        kernel_timings,
        ("lengths", "python"),
        lambda: [ref.first_too_long(r, LIMITS) for r in rows],
        1,
    )
    assert isinstance(result, list)


# Custom fields (no Polars equivalent: json_decode needs a schema and cannot report depth) ------------------


@pytest.fixture(scope="module")
def custom_fields() -> pl.Series:
    rng = random.Random(SEED)
    docs = [
        json.dumps(
            {"plan": "gold", "seats": rng.randrange(100), "tags": ["a", "b"], "meta": {"score": rng.random()}}
        )
        for _ in range(ROWS)
    ]
    return pl.Series("custom_fields", docs)


def test_custom_fields_rust(benchmark: Any, kernel_timings: Timings, custom_fields: pl.Series) -> None:
    codes = _run(
        benchmark,
        kernel_timings,
        ("custom_fields", "rust"),
        lambda: kernels.validate_custom_fields(custom_fields),
        5,
    )
    assert isinstance(codes, pl.Series) and codes.null_count() == ROWS


def test_custom_fields_python(benchmark: Any, kernel_timings: Timings, custom_fields: pl.Series) -> None:
    values = custom_fields.to_list()
    result = _run(
        benchmark,
        kernel_timings,
        ("custom_fields", "python"),
        lambda: [ref.check_custom_fields(v) for v in values],
        1,
    )
    assert isinstance(result, list)
