"""Helpers for the entity log's tests: stores on chDB in this process, and looks behind the store's reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from clickhouse_connect.driver.client import Client

from crm_bulk.entitylog.clickhouse import ClickHouseEngine
from crm_bulk.entitylog.store import ClickHouseStore


def in_process_store(dsn: str, **timeouts: float) -> ClickHouseStore:
    """A store whose engine runs in this process (chDB here, or a server), as a shipper uses it."""
    return ClickHouseStore(ClickHouseEngine(dsn, **timeouts))


def engine_of(store: ClickHouseStore) -> ClickHouseEngine:
    """The in-process engine under `store` (tests reach its client for ad-hoc SQL)."""
    engine = store.engine
    assert isinstance(engine, ClickHouseEngine)
    return engine


def client_of(store: ClickHouseStore) -> Client:
    """The clickhouse-connect client of an in-process store."""
    return engine_of(store).client()


def count_outcomes(store: ClickHouseStore, job_id: UUID, account_id: int) -> int:
    """Outcome rows of the job as reads see them (a chunk shipped twice counts once); any engine."""
    ((n,),) = store.engine.rows("outcomes", "count_rows", {"job_id": str(job_id), "account_id": account_id})
    return int(n)


def plain(view: Any) -> Any:
    """A read's answer as dicts and lists (datetimes kept), the shape its JSON has."""
    return msgspec.to_builtins(view, builtin_types=(datetime,))
