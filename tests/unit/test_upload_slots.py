"""Upload admission: the per-account and total caps, 429 with Retry-After, slots given back."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace

import pytest
from litestar.exceptions import TooManyRequestsException

from crm_bulk.api.upload_slots import RETRY_AFTER_SECONDS, UploadSlots
from crm_bulk.errors import ConfigError
from crm_bulk.settings import API_POOL_SIZE, Settings


def test_an_account_over_its_cap_is_refused_with_retry_after() -> None:
    slots = UploadSlots(total=8, per_account=2)
    with ExitStack() as stack:
        stack.enter_context(slots.hold(1))
        stack.enter_context(slots.hold(1))
        with pytest.raises(TooManyRequestsException) as refused, slots.hold(1):
            pass
        assert refused.value.headers == {"Retry-After": str(RETRY_AFTER_SECONDS)}
        assert "the account" in str(refused.value.detail)
        with slots.hold(2):  # another account still gets in
            assert slots.in_use == 3
    assert slots.in_use == 0


def test_the_total_cap_refuses_every_account_until_a_slot_frees() -> None:
    slots = UploadSlots(total=3, per_account=2)
    with ExitStack() as stack:
        for account in (1, 1, 2):
            stack.enter_context(slots.hold(account))
        with pytest.raises(TooManyRequestsException, match="uploads are in progress"), slots.hold(3):
            pass
    with slots.hold(3):
        assert slots.in_use == 1


def test_a_slot_is_given_back_when_the_upload_fails() -> None:
    slots = UploadSlots(total=1, per_account=1)
    with pytest.raises(RuntimeError), slots.hold(1):
        raise RuntimeError("the upload broke")
    with slots.hold(1):
        assert slots.in_use == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"upload_idle_timeout_seconds": 0.0},
        {"max_uploads": 0},
        {"max_uploads": API_POOL_SIZE},
        {"max_uploads": 4, "max_uploads_per_account": 5},
        {"max_uploads_per_account": 0},
    ],
)
def test_upload_limits_out_of_range_are_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        replace(Settings(), **overrides).validate()  # type: ignore[arg-type]


def test_the_default_upload_caps_stay_below_the_pool() -> None:
    settings = Settings()
    settings.validate()
    assert settings.max_uploads_per_account <= settings.max_uploads < API_POOL_SIZE
