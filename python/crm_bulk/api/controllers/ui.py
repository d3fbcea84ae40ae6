"""`/ui`: the dashboard in the browser, and the files it and the API docs page load.

The page is static: plain ES modules and CSS shipped in the package (`crm_bulk/ui/static/`), nothing fetched
from elsewhere at run time. It signs in with `POST /auth/login` and keeps the token in the page's memory only
(never in storage or a cookie), so every call it makes carries `Authorization: Bearer` like any other client
and no cookie can be ridden by another site. The routes here are public (`security.PUBLIC_PATHS`): they hand
out only these files.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.static_files import create_static_files_router

import crm_bulk

STATIC_DIR = Path(crm_bulk.__file__).resolve().parent / "ui" / "static"
STATIC_PATH = "/ui/static"
# Revalidated on each load (ETag), so a new release's files are picked up at once.
REVALIDATE = CacheControlHeader(no_cache=True)


@get(["/ui", "/ui/"], include_in_schema=False, sync_to_thread=False, cache_control=REVALIDATE)
def dashboard_page() -> Response[bytes]:
    """The dashboard's one HTML page; its views are picked by the URL's fragment (`#/jobs/<id>`)."""
    return Response((STATIC_DIR / "index.html").read_bytes(), media_type=MediaType.HTML)


def static_files_router() -> Router:
    """`/ui/static/…`: the dashboard's modules and styles, and the vendored docs UI."""
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_DIR],
        name="ui-static",
        cache_control=REVALIDATE,
        include_in_schema=False,
    )
