"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from crm_bulk.postgres import Conn


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    """An autocommit connection to the session database, as the workers and the scheduler use."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection
