"""Settings: defaults are the embedded deployment; every bad value names its variable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from crm_bulk.errors import ConfigError
from crm_bulk.settings import Settings, documented_settings, env_name

SECRET = "s" * 40


def test_defaults_are_the_embedded_deployment() -> None:
    settings = Settings.from_env({})
    assert settings.embedded_database
    assert settings.queue_kind == "postgres"
    assert settings.clickhouse_dsn.startswith("chdb://")
    assert settings.redis_url is None
    assert settings.retry_attempts == 3
    assert settings.retry_wait_seconds == 1.0


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            "CRM_BULK_DATABASE_URL": "postgresql://u:p@db:5432/crm",
            "CRM_BULK_QUEUE_URL": "kafka://k1:9092,k2:9092",
            "CRM_BULK_CLICKHOUSE_URL": "http://ch:8123",
            "CRM_BULK_REDIS_URL": "redis://r:6379/0",
            "CRM_BULK_JWT_SECRET": SECRET,
            "CRM_BULK_CHUNK_SIZE": "2500",
            "CRM_BULK_RETRY_WAIT_SECONDS": "0.5",
        }
    )
    assert settings.queue_kind == "kafka"
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.chunk_size == 2500
    assert settings.retry_wait_seconds == 0.5
    assert settings.clickhouse_dsn == "http://ch:8123"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CRM_BULK_DATABASE_URL": "mysql://db/x", "CRM_BULK_JWT_SECRET": SECRET}, "CRM_BULK_DATABASE_URL"),
        (
            {"CRM_BULK_DATABASE_URL": "postgresql:///nohost", "CRM_BULK_JWT_SECRET": SECRET},
            "CRM_BULK_DATABASE_URL",
        ),
        ({"CRM_BULK_DATABASE_URL": "postgresql://db/x"}, "CRM_BULK_JWT_SECRET"),
        ({"CRM_BULK_JWT_SECRET": "short"}, "CRM_BULK_JWT_SECRET"),
        ({"CRM_BULK_QUEUE_URL": "amqp://rabbit"}, "CRM_BULK_QUEUE_URL"),
        ({"CRM_BULK_QUEUE_URL": "kafka://nohostport"}, "CRM_BULK_QUEUE_URL"),
        ({"CRM_BULK_CLICKHOUSE_URL": "tcp://ch:9000"}, "CRM_BULK_CLICKHOUSE_URL"),
        ({"CRM_BULK_REDIS_URL": "memcached://m"}, "CRM_BULK_REDIS_URL"),
        ({"CRM_BULK_CHUNK_SIZE": "lots"}, "CRM_BULK_CHUNK_SIZE"),
        ({"CRM_BULK_CHUNK_SIZE": "0"}, "CRM_BULK_CHUNK_SIZE"),
        ({"CRM_BULK_API_PORT": "70000"}, "CRM_BULK_API_PORT"),
        ({"CRM_BULK_RETRY_WAIT_SECONDS": "-1"}, "CRM_BULK_RETRY_WAIT_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == variable
    assert str(caught.value).startswith(variable)


def test_passwords_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"CRM_BULK_DATABASE_URL": "mysql://user:hunter2@db/x", "CRM_BULK_JWT_SECRET": SECRET}
        )
    assert "hunter2" not in str(caught.value)


def test_embedded_jwt_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = Settings.from_env({"CRM_BULK_DATA_DIR": str(tmp_path)})
    first = settings.resolved_jwt_secret()
    second = Settings.from_env({"CRM_BULK_DATA_DIR": str(tmp_path)}).resolved_jwt_secret()
    assert first == second
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "jwt-secret").st_mode) == 0o600


def test_a_world_readable_secret_file_is_refused(tmp_path: Path) -> None:
    settings = Settings.from_env({"CRM_BULK_DATA_DIR": str(tmp_path)})
    settings.resolved_jwt_secret()
    (tmp_path / "jwt-secret").chmod(0o644)
    with pytest.raises(ConfigError, match="CRM_BULK_JWT_SECRET"):
        settings.resolved_jwt_secret()


def test_every_setting_is_documented() -> None:
    rows = documented_settings()
    assert {name for name, _, _ in rows} == {env_name(f) for f in Settings.__dataclass_fields__}
    assert all(doc for _, _, doc in rows)


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name, _, _ in documented_settings() if f"| `{name}` |" not in readme]
    assert missing == []


def test_the_repr_leaves_out_urls_and_secrets() -> None:
    settings = Settings(
        database_url="postgresql://crm:db-password@db.internal/crm",
        redis_url="redis://:redis-password@cache.internal/0",
        jwt_secret="s" * 40,
    )
    shown = repr(settings)
    assert "db-password" not in shown
    assert "redis-password" not in shown
    assert "s" * 40 not in shown
