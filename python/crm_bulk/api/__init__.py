"""The REST API (Litestar): `create_app(settings)` builds it."""

from crm_bulk.api.app import create_app

__all__ = ["create_app"]
