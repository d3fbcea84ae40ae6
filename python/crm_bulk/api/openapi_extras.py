"""OpenAPI details Litestar cannot infer: the streamed upload's body and the CSV variant of an answer."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

_TEXT = Schema(type=OpenAPIType.STRING)
_BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass
class ImportUploadOperation(Operation):
    """`POST /bulk-actions/import`: the body is a CSV or NDJSON stream, read as it arrives."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=(
                "Delimited text (`,` `;` TAB `|`; UTF-8, UTF-16 with a byte order mark, or "
                "`encoding=`) with a header row of contact field names or their aliases (`E-mail`, "
                "`Given Name`, `Surname`, `Mobile`, `Organisation`, ...; `tags` `;`-separated, "
                "`custom_fields` as JSON text or `custom_fields.<key>` columns; see `mapping` and "
                "`unknown_columns`), an XLSX workbook, or NDJSON, one import record per line."
            ),
            content={
                "text/csv": OpenAPIMediaType(schema=_TEXT),
                "application/x-ndjson": OpenAPIMediaType(schema=_TEXT),
            },
        )
        self.request_body.content[XLSX_MEDIA_TYPE] = OpenAPIMediaType(schema=_BINARY)


@dataclass
class ImportPreviewOperation(Operation):
    """`POST /bulk-actions/import/preview`: the body is a file's first bytes, or a whole workbook."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="The first bytes of a CSV or NDJSON file (e.g. 64 KiB), or a whole XLSX workbook.",
            content={
                "text/csv": OpenAPIMediaType(schema=_TEXT),
                "application/x-ndjson": OpenAPIMediaType(schema=_TEXT),
                XLSX_MEDIA_TYPE: OpenAPIMediaType(schema=_BINARY),
            },
        )


@dataclass
class ErrorsOperation(Operation):
    """`GET /bulk-actions/{id}/errors`: `Accept: text/csv` streams a CSV instead of the JSON summary."""

    def __post_init__(self) -> None:
        if self.responses is None:
            return
        ok = self.responses.get("200")
        content = getattr(ok, "content", None)
        if content is not None:
            content["text/csv"] = OpenAPIMediaType(schema=_TEXT)
