"""Header matching for imports: names and aliases, explicit mappings, unknown columns, refusals."""

from __future__ import annotations

import json

import pytest

from crm_bulk.errors import ValidationError
from crm_bulk.imports.formats import check_delimiter, check_encoding, sniff_delimiter
from crm_bulk.imports.headers import custom_key, header_key, parse_mapping, resolve_columns
from crm_bulk.imports.options import import_options


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("Email", "email"),
        ("E-mail", "email"),
        (" EMAIL ADDRESS ", "email"),
        ("First Name", "first_name"),
        ("given_name", "first_name"),
        ("Forename", "first_name"),
        ("Surname", "last_name"),
        ("Family name", "last_name"),
        ("Phone Number", "phone"),
        ("Mobile", "phone"),
        ("Telephone", "phone"),
        ("Company Name", "company"),
        ("Organisation", "company"),
        ("organization", "company"),
        ("Job Title", "job_title"),
        ("Title", "job_title"),
        ("Position", "job_title"),
        ("Labels", "tags"),
        ("custom_fields.plan", "custom_fields.plan"),
    ],
)
def test_headers_match_by_name_and_alias(header: str, field: str) -> None:
    columns = resolve_columns(["email" if field != "email" else "x", header], unknown_columns="ignore")
    assert columns.fields[1] == field
    assert header_key("E-Mail_Address ") == "emailaddress"


def test_unknown_columns_follow_the_policy_and_the_first_of_two_matches_wins() -> None:
    headers = ["Email", "Phone", "Mobile", "Lifecycle Stage"]
    kept = resolve_columns(headers)
    assert kept.fields == ("email", "phone", "custom_fields.mobile", "custom_fields.lifecycle_stage")
    assert kept.unknown == ("Mobile", "Lifecycle Stage")
    assert resolve_columns(headers, unknown_columns="ignore").fields == ("email", "phone", "", "")
    with pytest.raises(ValidationError) as refused:
        resolve_columns(headers, unknown_columns="reject")
    assert (refused.value.code, refused.value.field) == ("unknown_field", "Mobile")
    assert custom_key("  Lead Source (2024) ") == "lead_source_2024"
    assert resolve_columns(["email", "E-Mail"]).fields == ("email", "custom_fields.e_mail")


def test_an_explicit_mapping_decides_the_columns_it_names() -> None:
    mapping = parse_mapping(json.dumps({"Contact": "email", "Cell": "phone", "phone": None, "Notes": ""}))
    assert mapping == {"Contact": "email", "Cell": "phone", "phone": "", "Notes": ""}
    columns = resolve_columns(["Contact", "phone", "Cell", "Notes", "Title"], mapping=mapping)
    assert columns.used() == {
        "Contact": "email",
        "phone": "",
        "Cell": "phone",
        "Notes": "",
        "Title": "job_title",
    }


@pytest.mark.parametrize(
    ("mapping", "headers", "code"),
    [
        ({"A": "nickname"}, ["A", "email"], "unknown_field"),
        ({"A": "custom_fields."}, ["A", "email"], "unknown_field"),
        ({"A": "email", "B": "email"}, ["A", "B"], "duplicate_field"),
        ({"Z": "email"}, ["A", "B"], "unknown_column"),
        ({"A": "custom_fields.x", "B": "custom_fields"}, ["A", "B", "email"], "conflict"),
        (None, ["first name"], "missing"),
        (None, ["email", "email"], "duplicate_column"),
        (None, ["email", "Lead Source", "lead_source"], "duplicate_field"),
    ],
)
def test_mappings_that_cannot_be_imported_are_refused(
    mapping: dict[str, str] | None, headers: list[str], code: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        resolve_columns(headers, mapping=parse_mapping(json.dumps(mapping)) if mapping else None)
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"mapping": "{not json"}, "mapping"),
        ({"mapping": '{"a": 1}'}, "mapping"),
        ({"unknown_columns": "keep"}, "unknown_columns"),
        ({"delimiter": "ab"}, "delimiter"),
        ({"delimiter": '"'}, "delimiter"),
        ({"encoding": "no-such-codec"}, "encoding"),
        ({"encoding": "rot13"}, "encoding"),
    ],
)
def test_unusable_options_are_refused(options: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        import_options(**options)
    assert refused.value.field == field


def test_formats_are_named_and_sniffed() -> None:
    assert check_encoding("CP1252") == "cp1252"
    assert check_encoding("latin-1") == "iso8859-1"
    assert check_delimiter("tab") == "\t"
    assert check_delimiter("|") == "|"
    assert sniff_delimiter('email;"a,b,c";name') == ";"
    assert sniff_delimiter("email\tname\tphone") == "\t"
    assert sniff_delimiter("email") == ","
