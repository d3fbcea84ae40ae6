"""The API docs page at `/schema`: Swagger UI from the package's own copy, so it renders offline.

Litestar's Swagger plugin loads the UI from a CDN and starts it with an inline script; this page loads the
vendored `swagger-ui-dist` files from `/ui/static/vendor/swagger-ui/` and starts it from `docs.js`, so the
docs route's Content-Security-Policy allows scripts from this origin only.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Request
from litestar.openapi.plugins import SwaggerRenderPlugin

from crm_bulk.api.controllers.ui import STATIC_PATH

VENDOR = f"{STATIC_PATH}/vendor/swagger-ui"


class OfflineSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI served from the package, started without inline script."""

    def __init__(self, *, path: str | list[str]) -> None:
        super().__init__(
            js_url=f"{VENDOR}/swagger-ui-bundle.js",
            css_url=f"{VENDOR}/swagger-ui.css",
            path=path,
            favicon=f'<link rel="icon" href="{STATIC_PATH}/favicon.svg" type="image/svg+xml">',
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page: the vendored stylesheet and bundle, then `docs.js`, which reads the document's URL."""
        title = escape(str(openapi_schema["info"]["title"]))
        schema_url = escape(self.get_openapi_json_route(request))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — API docs</title>
{self.favicon}
<link rel="stylesheet" href="{self.css_url}">
<link rel="stylesheet" href="{STATIC_PATH}/css/docs.css">
</head>
<body>
<main id="swagger-ui" data-openapi-url="{schema_url}"><p>Loading the API docs…</p></main>
<script src="{self.js_url}"></script>
<script src="{STATIC_PATH}/js/docs.js"></script>
</body>
</html>
""".encode()
