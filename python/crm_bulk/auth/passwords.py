"""Password hashes: argon2id through argon2-cffi, with the OWASP minimum profile (19 MiB, t=2, p=1); and the
strength a new password needs.

That profile costs about 20 ms per hash here; the heavier library default (64 MiB, p=4) took 260 ms on two
cores, which would make login an easy way to exhaust the API's threads.

Strength is zxcvbn's estimate (common-password and word lists, keyboard patterns, dates, repeats, l33t, the
user's own email and account name): a new password needs `MIN_STRENGTH_SCORE`, about 10^8 guesses, which with
this hash takes an offline attacker on one core years.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

MIN_PASSWORD_LENGTH = 8
# Bounds the work an attacker can ask of the hasher with one request.
MAX_PASSWORD_LENGTH = 256
# zxcvbn's 0-4 scale: 3 is "safely unguessable" (>= 10^8 guesses).
MIN_STRENGTH_SCORE = 3
# zxcvbn's work grows with the length and it refuses more than 72 characters; a 72-character prefix that is
# strong makes the whole password strong.
_STRENGTH_PREFIX = 72

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


def weakness(password: str, *, user_inputs: Sequence[str] = ()) -> tuple[str, str] | None:
    """(code, message) when `password` is too easy to guess, else None; `user_inputs` are words it must not
    lean on (the email, the account name)."""
    if not password.strip():
        return "blank", "must not be blank or only whitespace"
    # The email's and name's parts too, so "ada" counts as a word of "ada@acme.example".
    words = [part for value in user_inputs for part in re.split(r"[^0-9a-z]+", value.lower()) if part]
    estimate = zxcvbn(password[:_STRENGTH_PREFIX], user_inputs=[*user_inputs, *words])
    if int(estimate["score"]) < MIN_STRENGTH_SCORE:
        return (
            "weak_password",
            "is too easy to guess (a common password, a word or name, a pattern such as 12345678, or part "
            "of the email or account name); a few unrelated words make a good one",
        )
    return None
