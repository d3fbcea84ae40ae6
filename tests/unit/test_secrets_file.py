"""The embedded deployment's secret files: generated once, mode 0600, refused when others can read them."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crm_bulk.errors import ConfigError
from crm_bulk.secrets_file import read_or_create_secret


def test_a_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "secret"
    first = read_or_create_secret(path, setting="CRM_BULK_X")
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_or_create_secret(path, setting="CRM_BULK_X") == first
    assert [p.name for p in path.parent.iterdir()] == ["secret"]


def test_concurrent_first_uses_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    with ThreadPoolExecutor(8) as pool:
        found = set(pool.map(lambda _: read_or_create_secret(path, setting="CRM_BULK_X"), range(32)))
    assert found == {path.read_text()}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    read_or_create_secret(path, setting="CRM_BULK_X")
    path.chmod(mode)
    with pytest.raises(ConfigError, match=r"CRM_BULK_X: .*secret must not be readable by others"):
        read_or_create_secret(path, setting="CRM_BULK_X")


def test_an_existing_secret_is_kept_and_an_empty_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("operator-chosen-secret\n")
    path.chmod(0o600)
    assert read_or_create_secret(path, setting="CRM_BULK_X") == "operator-chosen-secret"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_or_create_secret(path, setting="CRM_BULK_X")
