"""The CLI ends bad configuration with one line naming the setting and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SECRET = "s" * 40


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRM_BULK_")}
    return subprocess.run(
        [sys.executable, "-m", "crm_bulk.cli", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "variable", "code"),
    [
        (
            ["migrate"],
            {"CRM_BULK_DATABASE_URL": "mysql://db/x", "CRM_BULK_JWT_SECRET": SECRET},
            "CRM_BULK_DATABASE_URL",
            2,
        ),
        (["api"], {"CRM_BULK_DATABASE_URL": "postgresql://127.0.0.1:1/x"}, "CRM_BULK_JWT_SECRET", 2),
        (
            ["api"],
            {"CRM_BULK_DATABASE_URL": "postgresql://127.0.0.1:1/x", "CRM_BULK_JWT_SECRET": SECRET},
            "CRM_BULK_DATABASE_URL",
            3,
        ),
        (["migrate"], {"CRM_BULK_CHUNK_SIZE": "many"}, "CRM_BULK_CHUNK_SIZE", 2),
        (["up"], {"CRM_BULK_QUEUE_URL": "kafka:/broken"}, "CRM_BULK_QUEUE_URL", 2),
    ],
)
def test_bad_configuration_is_one_clear_line(
    args: list[str], env: dict[str, str], variable: str, code: int, tmp_path: Path
) -> None:
    result = run_cli(args, env, tmp_path)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crm-bulk: error: ")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_api_without_a_running_embedded_database_says_how_to_start_it(tmp_path: Path) -> None:
    result = run_cli(["api"], {"CRM_BULK_DATA_DIR": str(tmp_path / "data")}, tmp_path)
    assert result.returncode == 3
    assert "crm-bulk up" in result.stderr
    assert "Traceback" not in result.stderr
