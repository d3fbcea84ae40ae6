"""Long-lived clients of the API process, opened in the app's lifespan and closed there."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from crm_bulk.deployment import database_url
from crm_bulk.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Resources:
    """What request handlers share. The API process is the one that owns the chDB store when embedded."""

    settings: Settings
    database_url: str
    _clickhouse: Any = None
    _clickhouse_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings, *, database_url_override: str | None = None) -> Resources:
        """Resources for `settings`; tests pass the database they created."""
        return cls(settings=settings, database_url=database_url_override or database_url(settings))

    def clickhouse(self) -> Any:
        """The clickhouse-connect client, created on first use (chDB opens its store lazily)."""
        with self._clickhouse_lock:
            if self._clickhouse is None:
                import clickhouse_connect

                self._clickhouse = clickhouse_connect.get_client(dsn=self.settings.clickhouse_dsn)
            return self._clickhouse

    def close(self) -> None:
        """Release every client."""
        with self._clickhouse_lock:
            if self._clickhouse is not None:
                self._clickhouse.close()
                self._clickhouse = None
