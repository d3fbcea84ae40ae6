"""The query parameters that say how to read an import file, shared by the import and its preview."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar.params import QueryParameter

from crm_bulk.imports import ImportOptions, import_options

UnknownColumnsParam = Literal["reject", "ignore", "custom_fields"]


def provide_import_options(
    mapping: Annotated[
        str | None,
        QueryParameter(
            description="JSON object of header → contact field, `custom_fields.<key>`, or null to leave the "
            'column out, e.g. `{"E-mail": "email", "Notes": "custom_fields.notes", "Fax": null}`. Columns '
            "it does not name are matched by name and alias (Email Address, Given Name, Surname, Mobile, "
            "Organisation, Job Title, Labels, ...), case, spaces and punctuation aside."
        ),
    ] = None,
    unknown_columns: Annotated[
        UnknownColumnsParam,
        QueryParameter(
            description="What a column matching no field does: `custom_fields` (default) keeps it as "
            "`custom_fields.<header_in_snake_case>`, `ignore` leaves it out, `reject` refuses the file (422)."
        ),
    ] = "custom_fields",
    delimiter: Annotated[
        str | None,
        QueryParameter(
            description="Field delimiter of a text file: one character, or `tab`. Unset: detected among "
            "`,` `;` TAB `|` from the header row."
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        QueryParameter(
            description="Text encoding (e.g. `cp1252`, `latin-1`, `utf-16`) when the file has no byte order "
            "mark. Unset: UTF-8. A byte order mark (UTF-8, UTF-16) always wins."
        ),
    ] = None,
    sheet: Annotated[
        str | None, QueryParameter(description="The XLSX sheet to read. Unset: the first sheet.")
    ] = None,
) -> ImportOptions:
    """The checked options; an unusable one answers 422 before any byte of the body is read."""
    return import_options(
        mapping=mapping, unknown_columns=unknown_columns, delimiter=delimiter, encoding=encoding, sheet=sheet
    )
