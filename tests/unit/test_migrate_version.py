"""Migrations refuse a PostgreSQL older than 18 (the chunk statements use `RETURNING old.*`) by name,
before anything is created."""

from __future__ import annotations

import pytest

from crm_bulk.errors import ConfigError
from crm_bulk.store.migrate import check_server_version


def test_an_older_server_is_refused_naming_the_setting_and_the_version() -> None:
    with pytest.raises(ConfigError) as refused:
        check_server_version(170005)
    assert refused.value.setting == "CRM_BULK_DATABASE_URL"
    assert "PostgreSQL 17.5 is too old" in str(refused.value)


def test_postgresql_18_and_newer_are_accepted() -> None:
    check_server_version(180000)
    check_server_version(190002)
