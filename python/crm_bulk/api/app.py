"""The Litestar application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from crm_bulk.api import health
from crm_bulk.api.resources import Resources
from crm_bulk.settings import Settings


def create_app(settings: Settings, *, database_url: str | None = None) -> Litestar:
    """Build the API for `settings`; `database_url` overrides the resolved DSN (tests)."""
    resources = Resources.from_settings(settings, database_url_override=database_url)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            resources.close()

    return Litestar(
        route_handlers=[health.healthz, health.readyz],
        state=State({"resources": resources}),
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="crm-bulk", version="0.1.0", path="/schema"),
        request_max_body_size=settings.max_body_bytes,
    )
