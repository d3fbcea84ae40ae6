"""`/bulk-actions/import/preview`: how an import would read a file, before it is sent whole."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio.to_thread
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import QueryParameter

from crm_bulk.api.controllers.bulk_actions import UPLOAD_TYPES
from crm_bulk.api.import_params import provide_import_options
from crm_bulk.api.openapi_extras import ImportPreviewOperation
from crm_bulk.api.problems import problem_responses
from crm_bulk.api.resources import Resources
from crm_bulk.api.security import editor
from crm_bulk.api.uploads import CSV_TYPES, NDJSON_TYPES, media_type
from crm_bulk.imports import XLSX_TYPES, ImportOptions
from crm_bulk.imports.preview import (
    DEFAULT_PREVIEW_ROWS,
    MAX_PREVIEW_ROWS,
    ImportPreview,
    preview_ndjson,
    preview_text,
    preview_xlsx,
)

# A text file's sample: its first bytes (64 KiB is plenty for the rows a preview shows); a workbook must be
# sent whole, up to CRM_BULK_MAX_XLSX_BYTES.
MAX_SAMPLE_BYTES = 1024 * 1024


async def _sample(request: Request[Any, Any, Any], limit: int, setting: str) -> bytes:
    """The body, refused with 413 past `limit` bytes (counted as it arrives: no length need be declared)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, setting)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise _too_large(limit, setting)
    return bytes(body)


def _too_large(limit: int, setting: str) -> HTTPException:
    return HTTPException(status_code=413, detail=f"a preview takes at most {limit} bytes ({setting})")


def _preview(
    kind: str, body: bytes, options: ImportOptions, *, max_xlsx_bytes: int, limit: int
) -> ImportPreview:
    if kind in XLSX_TYPES:
        return preview_xlsx(body, options, max_bytes=max_xlsx_bytes, limit=limit)
    if kind in NDJSON_TYPES:
        return preview_ndjson(body, limit=limit)
    return preview_text(body, options, limit=limit)


class ImportPreviewController(Controller):
    """Previews of imports: editors and admins, like the import itself."""

    path = "/bulk-actions/import"
    tags = ["bulk-actions"]  # noqa: RUF012 - Litestar reads it as a class attribute
    guards = [editor]  # noqa: RUF012

    @post(
        "/preview",
        status_code=200,
        request_max_body_size=None,
        summary="Preview an import: format, column mapping, the first rows and every cell's error",
        operation_class=ImportPreviewOperation,
        responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
        dependencies={"import_options": Provide(provide_import_options, sync_to_thread=False)},
    )
    async def preview_import(
        self,
        request: Request[Any, Any, Any],
        *,
        resources: NamedDependency[Resources],
        import_options: NamedDependency[ImportOptions],
        rows: Annotated[
            int, QueryParameter(ge=1, le=MAX_PREVIEW_ROWS, description="How many of the first rows to show")
        ] = DEFAULT_PREVIEW_ROWS,
    ) -> Response[ImportPreview]:
        """The body is the file's first bytes (a CSV's first 64 KiB, say; a line cut off at the end is left
        out) or a whole XLSX workbook. Nothing is stored. Rows show the records as an import would store them
        (email and phone normalised, tags sorted) and every cell at fault, by line and column. The answer's
        `Server-Timing` header carries the time the server spent on it."""
        started = time.perf_counter()
        kind = media_type(request.headers.get("content-type", ""))
        if kind not in CSV_TYPES | NDJSON_TYPES | XLSX_TYPES:
            raise HTTPException(status_code=415, detail=UPLOAD_TYPES)
        max_xlsx = resources.settings.max_xlsx_bytes
        if kind in XLSX_TYPES:
            body = await _sample(request, max_xlsx, "CRM_BULK_MAX_XLSX_BYTES")
        else:
            body = await _sample(request, MAX_SAMPLE_BYTES, "a sample of the file's first bytes")
        preview = await anyio.to_thread.run_sync(
            lambda: _preview(kind, body, import_options, max_xlsx_bytes=max_xlsx, limit=rows)
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        return Response(preview, headers={"Server-Timing": f"preview;dur={elapsed_ms:.1f}"})
