"""What a test needs from outside the package (a running service, an installed tool) being absent."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Fail on CI, where `make test` installs and starts everything the tests need, so an absence there is a
    broken setup; skip elsewhere, where a developer may run a part of the suite without it."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
