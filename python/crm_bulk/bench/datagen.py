"""Realistic contact data from a fixed seed, generated in columns (1M rows in about a second).

About `invalid_email_rate` of the emails are malformed in ways users produce (missing `@`, spaces, double
dots, no domain), and `duplicate_rate` of the rows repeat an earlier row's email with different case or
surrounding spaces, as exports merged from two systems do.
"""

from __future__ import annotations

import numpy as np
import polars as pl

FIRST = [
    "Ana",
    "Ben",
    "Chloé",
    "Dmitri",
    "Eve",
    "Farah",
    "Giulia",
    "Hiro",
    "Ines",
    "José",
    "Kai",
    "Lena",
    "Mateo",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tomás",
    "Uma",
    "Viktor",
    "Wen",
    "Zoë",
]
LAST = [
    "Smith",
    "García",
    "Müller",
    "Rossi",
    "Kowalski",
    "Nguyen",
    "O'Brien",
    "Johansson",
    "Silva",
    "Tanaka",
    "Dubois",
    "Novak",
    "Kim",
    "Haddad",
    "Jensen",
    "Okafor",
    "Petrov",
    "Costa",
    "Fischer",
    "Moreau",
]
COMPANIES = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Soylent",
    "Vandelay",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Aperture",
    "Massive Dynamic",
]
TITLES = ["Engineer", "Manager", "Director", "VP Sales", "CTO", "Analyst", "Designer", "Founder", None]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "bücher.example", "example.co.uk"]
AREA_CODES = [212, 213, 303, 305, 312, 404, 415, 503, 512, 617, 702, 206, 646, 718, 801, 919]
TAGS = ["vip", "newsletter", "trial", "churn-risk", "partner", "beta", "enterprise", "smb"]
PLANS = ["free", "trial", "pro", "enterprise"]
BAD_EMAILS = [
    "{u}example.com",
    "{u}@",
    "{u} @example.com",
    "{u}@example..com",
    "@example.com",
    "{u}@@example.com",
]


def generate_contacts(
    n: int, *, seed: int = 20261129, invalid_email_rate: float = 0.02, duplicate_rate: float = 0.0
) -> pl.DataFrame:
    """`n` contacts: email, first_name, last_name, phone, company, job_title, tags, custom_fields."""
    rng = np.random.default_rng(seed)
    frame = _draws(rng, n, invalid_email_rate).with_columns(
        email=_email(),
        phone=_phone(),
        tags=_tags(),
        custom_fields=pl.lit('{"plan":"')
        + pl.col("plan")
        + pl.lit('","score":')
        + pl.col("score").cast(pl.Utf8)
        + pl.lit("}"),
    )
    if duplicate_rate > 0:
        frame = _inject_duplicates(frame, rng, duplicate_rate)
    return frame.select(
        "email", "first_name", "last_name", "phone", "company", "job_title", "tags", "custom_fields"
    )


def _draws(rng: np.random.Generator, n: int, invalid_email_rate: float) -> pl.DataFrame:
    """Every random choice of `n` rows, one column each (drawn in a fixed order: the seed fixes the data)."""
    return pl.DataFrame(
        {
            "row": np.arange(n),
            "first_name": _pick(FIRST, rng, n),
            "last_name": _pick(LAST, rng, n),
            "domain": _pick(DOMAINS, rng, n),
            "company": _pick(COMPANIES, rng, n),
            "job_title": _pick(TITLES, rng, n),
            "area": np.array(AREA_CODES)[rng.integers(0, len(AREA_CODES), n)],
            "exchange": rng.integers(200, 999, n),
            "line": rng.integers(0, 10_000, n),
            "tag_a": rng.integers(0, len(TAGS), n),
            "tag_b": rng.integers(0, len(TAGS) + 4, n),
            "plan": _pick(PLANS, rng, n),
            "score": rng.integers(0, 100, n),
            "bad": rng.random(n) < invalid_email_rate,
            "bad_kind": rng.integers(0, len(BAD_EMAILS), n),
        }
    )


def _email() -> pl.Expr:
    """first.last<row>@domain, or for a `bad` row that local part in the `bad_kind` malformed template."""
    local = (
        pl.col("first_name").str.to_lowercase().str.replace_all(r"[^a-z]", "")
        + pl.lit(".")
        + pl.col("last_name").str.to_lowercase().str.replace_all(r"[^a-z]", "")
        + pl.col("row").cast(pl.Utf8)
    )
    good_email = local + pl.lit("@") + pl.col("domain")
    bad_email = pl.lit(None, dtype=pl.Utf8)
    for kind, template in enumerate(BAD_EMAILS):
        left, _, right = template.partition("{u}")
        bad_email = (
            pl.when(pl.col("bad_kind") == kind)
            .then(pl.lit(left) + local + pl.lit(right))
            .otherwise(bad_email)
        )
    return pl.when(pl.col("bad")).then(bad_email).otherwise(good_email)


def _phone() -> pl.Expr:
    """Phones in the formats people type; all North American numbers, normalised to E.164 by the platform."""
    return pl.format(
        "({}) {}-{}",
        pl.col("area").cast(pl.Utf8),
        pl.col("exchange").cast(pl.Utf8),
        pl.col("line").cast(pl.Utf8).str.zfill(4),
    )


def _tags() -> pl.Expr:
    """One tag always, a second one (`tag_b` past the list means none) when it differs from the first."""
    codes, names = list(range(len(TAGS))), TAGS
    return (
        pl.concat_list(
            pl.col("tag_a").replace_strict(codes, names, return_dtype=pl.Utf8),
            pl.when(pl.col("tag_b") < len(TAGS))
            .then(pl.col("tag_b").replace_strict(codes, names, default=None, return_dtype=pl.Utf8))
            .otherwise(pl.lit(None, dtype=pl.Utf8)),
        )
        .list.drop_nulls()
        .list.unique(maintain_order=True)
    )


def _pick(values: list[str] | list[str | None], rng: np.random.Generator, n: int) -> pl.Series:
    """`n` values drawn uniformly from `values` (None allowed), as a Utf8 column."""
    return pl.Series(values, dtype=pl.Utf8).gather(rng.integers(0, len(values), n))


def _inject_duplicates(frame: pl.DataFrame, rng: np.random.Generator, rate: float) -> pl.DataFrame:
    """Overwrite `rate` of the emails with an earlier row's email, upper-cased or padded."""
    n = frame.height
    dup_rows = np.flatnonzero(rng.random(n) < rate)
    dup_rows = dup_rows[dup_rows > 0]
    sources = (rng.random(dup_rows.size) * dup_rows).astype(np.int64)
    variants = pl.Series(rng.integers(0, 3, dup_rows.size))
    copies = pl.DataFrame({"email": frame.get_column("email").gather(sources), "variant": variants}).select(
        pl.when(pl.col("variant") == 0)
        .then(pl.col("email").str.to_uppercase())
        .when(pl.col("variant") == 1)
        .then(pl.lit("  ") + pl.col("email") + pl.lit(" "))
        .otherwise(pl.col("email"))
    )
    return frame.with_columns(email=frame.get_column("email").scatter(dup_rows, copies.to_series()))
