"""Password hashes: argon2id through argon2-cffi, with the OWASP minimum profile (19 MiB, t=2, p=1).

That profile costs about 20 ms per hash here; the heavier library default (64 MiB, p=4) took 260 ms on two
cores, which would make login an easy way to exhaust the API's threads.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 8
# Bounds the work an attacker can ask of the hasher with one request.
MAX_PASSWORD_LENGTH = 256

_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    """An encoded argon2id hash (salt and parameters included)."""
    return _HASHER.hash(password)


def verify_password(encoded: str, password: str) -> bool:
    """True when `password` matches `encoded`; a malformed stored hash counts as a mismatch."""
    try:
        return _HASHER.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(encoded: str) -> bool:
    """True when `encoded` was made with other parameters than today's (rehash it at the next login)."""
    return _HASHER.check_needs_rehash(encoded)


@cache
def _decoy_hash() -> str:
    return _HASHER.hash("decoy password that nobody has")


def burn_verification_time(password: str) -> None:
    """Spend what one verification costs, so an unknown email answers as slowly as a wrong password."""
    verify_password(_decoy_hash(), password)
