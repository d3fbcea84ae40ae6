"""Shared fixtures: real services from scripts/services.sh, one throw-away database per test session."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.databases import own_database
from tests.requirements import unavailable

ROOT = Path(__file__).resolve().parents[1]


def _services_env() -> dict[str, str]:
    """URLs written by scripts/services.sh (in its state folder, CRM_BULK_SERVICES_DIR or .services), so
    `pytest` works without sourcing them by hand."""
    path = Path(os.environ.get("CRM_BULK_SERVICES_DIR") or ROOT / ".services") / "env"
    if not path.exists():
        return {}
    found = re.findall(r"^export (\w+)=(.*)$", path.read_text(), flags=re.MULTILINE)
    return dict(found)


def service_url(var: str) -> str:
    """The URL of a running test service; missing fails on CI and skips elsewhere."""
    url = os.environ.get(var) or _services_env().get(var)
    if not url:
        unavailable(f"{var} is not set: start the services with scripts/services.sh start")
    return url


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The test PostgreSQL server's `crm_bulk` database URL (the server itself is shared)."""
    return service_url("CRM_BULK_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this session, dropped at the end, so parallel runs never collide."""
    with own_database(pg_server_url) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection to the session database."""
    with psycopg.connect(database_url) as conn:
        yield conn


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis server."""
    return service_url("CRM_BULK_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """`host:port` of the test Kafka broker."""
    return service_url("CRM_BULK_TEST_KAFKA")
