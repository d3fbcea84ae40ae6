"""Bounds on an account's limits: the platform's maxima, and the ceiling a deployment holds account admins to.

Kept apart from `accounts` so the command line can name the maxima in its options without importing the
database and hashing stack.
"""

from __future__ import annotations

import msgspec

# What the platform accepts at all, operator included; a deployment's ceiling for account admins is lower.
MAX_REQUESTS_PER_MINUTE = 1_000_000
MAX_ENTITIES_PER_SECOND = 10_000_000


class LimitCeiling(msgspec.Struct, frozen=True):
    """The highest limits an account's admin may set (`CRM_BULK_MAX_ACCOUNT_*`); the operator may go above."""

    api_requests_per_minute: int
    entities_per_second: int
