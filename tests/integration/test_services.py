"""Each real backend answers: Redis, chDB through clickhouse-connect, and the compiled Rust core."""

from __future__ import annotations

import uuid
from pathlib import Path

import clickhouse_connect
import redis

import crm_bulk._core as core


def test_redis_round_trip(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"crm-bulk:test:{uuid.uuid4().hex}"
    try:
        client.set(key, "value", ex=30)
        assert client.get(key) == b"value"
    finally:
        client.delete(key)
        client.close()


def test_chdb_insert_and_select(tmp_path: Path) -> None:
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'chdb'}")
    try:
        client.command("CREATE TABLE probe (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
        client.insert("probe", [[1, "a"], [2, "b'; DROP TABLE probe; --"]], column_names=["id", "name"])
        rows = client.query("SELECT id, name FROM probe ORDER BY id").result_rows
        assert rows == [(1, "a"), (2, "b'; DROP TABLE probe; --")]
    finally:
        client.close()


def test_rust_core_is_compiled_and_callable() -> None:
    assert core.__file__ is not None and core.__file__.endswith(".so")
    assert core.core_version() == "0.1.0"
