"""Accounts and their members: registration, login, the per-request principal, member and limit management.

Every function takes an open psycopg connection and runs inside the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row

from crm_bulk.auth import passwords
from crm_bulk.auth.limits import LimitCeiling
from crm_bulk.auth.roles import Role
from crm_bulk.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from crm_bulk.sqlfiles import query

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

MAX_EMAIL_LENGTH = 254


class Principal(msgspec.Struct, frozen=True):
    """The authenticated caller as of this request: who, in which account, with which role and limits."""

    user_id: int
    account_id: int
    role: str
    api_requests_per_minute: int
    entities_per_second: int


class Registration(msgspec.Struct, frozen=True):
    """A new account and its first admin."""

    user_id: int
    account_id: int
    role: Role


class Account(msgspec.Struct, frozen=True):
    """An account row."""

    id: int
    name: str
    api_requests_per_minute: int
    entities_per_second: int
    created_at: datetime


class Member(msgspec.Struct, frozen=True):
    """A user of an account and their role there."""

    user_id: int
    email: str
    role: str
    created_at: datetime


def _auth(name: str) -> str:
    return query("postgres", "auth", name)


def _accounts(name: str) -> str:
    return query("postgres", "accounts", name)


def normalize_login_email(email: str) -> str:
    """The form a login email is stored and compared in: trimmed, lower-cased, one `@` with text around it."""
    value = email.strip().lower()
    local, at, domain = value.partition("@")
    if (
        not at
        or not local
        or "." not in domain.strip(".")
        or "@" in domain
        or "\x00" in value
        or any(c.isspace() for c in value)
    ):
        raise ValidationError("not an email address", field="email", code="invalid_email")
    if len(value) > MAX_EMAIL_LENGTH:
        raise ValidationError(
            f"must be at most {MAX_EMAIL_LENGTH} characters", field="email", code="too_long"
        )
    return value


def check_password(password: str, *, user_inputs: Sequence[str] = ()) -> None:
    """Length bounds, then strength (`passwords.weakness`): long passphrases are welcome, hashing cost stays
    bounded, and guessable passwords are refused with the field and a code."""
    if len(password) < passwords.MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"must be at least {passwords.MIN_PASSWORD_LENGTH} characters", field="password", code="too_short"
        )
    if len(password) > passwords.MAX_PASSWORD_LENGTH:
        raise ValidationError(
            f"must be at most {passwords.MAX_PASSWORD_LENGTH} characters", field="password", code="too_long"
        )
    problem = passwords.weakness(password, user_inputs=user_inputs)
    if problem is not None:
        code, message = problem
        raise ValidationError(message, field="password", code=code)


def _create_user(conn: Connection, email: str, password: str) -> int:
    row = conn.execute(
        _auth("insert_user"), {"email": email, "password_hash": passwords.hash_password(password)}
    ).fetchone()
    if row is None:
        raise ConflictError("a user with this email already exists")
    return int(row[0])


def register(conn: Connection, *, email: str, password: str, account_name: str) -> Registration:
    """Create an account and its admin; ConflictError when the email is taken (`email` is normalised)."""
    check_password(password, user_inputs=(email, account_name))
    user_id = _create_user(conn, email, password)
    account = conn.execute(_auth("insert_account"), {"name": account_name}).fetchone()
    assert account is not None  # INSERT … RETURNING always returns the row
    account_id = int(account[0])
    conn.execute(_auth("insert_membership"), {"user_id": user_id, "account_id": account_id, "role": "admin"})
    log.info("registered account %s with admin user %s", account_id, user_id)
    return Registration(user_id=user_id, account_id=account_id, role="admin")


def authenticate(conn: Connection, *, email: str, password: str) -> tuple[int, int]:
    """(user_id, account_id) for valid credentials; AuthenticationError otherwise, as slowly either way."""
    # No stored email holds a NUL character (PostgreSQL text cannot): such an address is nobody's.
    row = None if "\x00" in email else conn.execute(_auth("login_candidate"), {"email": email}).fetchone()
    if row is None:
        passwords.burn_verification_time(password)
        raise AuthenticationError("invalid email or password")
    user_id, encoded, account_id = int(row[0]), str(row[1]), int(row[2])
    if not passwords.verify_password(encoded, password):
        raise AuthenticationError("invalid email or password")
    if passwords.needs_rehash(encoded):
        conn.execute(
            _auth("update_password_hash"),
            {"user_id": user_id, "password_hash": passwords.hash_password(password)},
        )
    return user_id, account_id


def load_principal(conn: Connection, *, user_id: int, account_id: int) -> Principal:
    """The caller's current role and limits; AuthenticationError when the membership no longer exists."""
    row = conn.execute(_auth("principal"), {"user_id": user_id, "account_id": account_id}).fetchone()
    if row is None:
        raise AuthenticationError("the access token's user is no longer a member of the account")
    return Principal(
        user_id=user_id,
        account_id=account_id,
        role=str(row[0]),
        api_requests_per_minute=int(row[1]),
        entities_per_second=int(row[2]),
    )


def get_account(conn: Connection, account_id: int) -> Account:
    """The account row."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_accounts("get_account"), {"account_id": account_id}).fetchone()
    if row is None:
        raise NotFoundError("account not found")
    return Account(**row)


def _within_ceiling(field: str, wanted: int | None, current: int, ceiling: int, setting: str) -> None:
    """Refuse raising a limit above the ceiling; lowering one the operator set above it stays allowed."""
    if wanted is not None and wanted > ceiling and wanted > current:
        raise ValidationError(
            f"must be at most {ceiling}, this deployment's ceiling ({setting}); only the operator can raise "
            "an account above it",
            field=field,
            code="above_ceiling",
        )


def update_limits(
    conn: Connection,
    account_id: int,
    *,
    api_requests_per_minute: int | None,
    entities_per_second: int | None,
    ceiling: LimitCeiling | None = None,
) -> Account:
    """Change the account's limits; None keeps a limit as it is.

    With a `ceiling` (an account admin's change) no limit may be raised above it; without one (the operator's
    change) anything goes up to the platform's maxima."""
    if ceiling is not None:
        # Locked, so the limits compared against are the ones being replaced.
        conn.execute(_accounts("lock_account"), {"account_id": account_id})
        current = get_account(conn, account_id)
        _within_ceiling(
            "api_requests_per_minute",
            api_requests_per_minute,
            current.api_requests_per_minute,
            ceiling.api_requests_per_minute,
            "CRM_BULK_MAX_ACCOUNT_REQUESTS_PER_MINUTE",
        )
        _within_ceiling(
            "entities_per_second",
            entities_per_second,
            current.entities_per_second,
            ceiling.entities_per_second,
            "CRM_BULK_MAX_ACCOUNT_ENTITIES_PER_SECOND",
        )
    params = {
        "account_id": account_id,
        "api_requests_per_minute": api_requests_per_minute,
        "entities_per_second": entities_per_second,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_accounts("update_limits"), params).fetchone()
    if row is None:
        raise NotFoundError("account not found")
    log.info("account %s limits changed: %s", account_id, params)
    return Account(**row)


def list_members(conn: Connection, account_id: int) -> list[Member]:
    """Every member of the account, by user id."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_accounts("list_members"), {"account_id": account_id}).fetchall()
    return [
        Member(user_id=r["id"], email=r["email"], role=r["role"], created_at=r["created_at"]) for r in rows
    ]


def get_member(conn: Connection, account_id: int, user_id: int) -> Member:
    """One member; NotFoundError for users of other accounts."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_accounts("get_member"), {"account_id": account_id, "user_id": user_id}).fetchone()
    if row is None:
        raise NotFoundError("member not found")
    return Member(user_id=row["id"], email=row["email"], role=row["role"], created_at=row["created_at"])


def add_member(conn: Connection, account_id: int, *, email: str, password: str, role: Role) -> Member:
    """A new user in the account; ConflictError when the email belongs to any user already."""
    check_password(password, user_inputs=(email,))
    user_id = _create_user(conn, email, password)
    conn.execute(_auth("insert_membership"), {"user_id": user_id, "account_id": account_id, "role": role})
    log.info("account %s: added member %s as %s", account_id, user_id, role)
    return get_member(conn, account_id, user_id)


def _keep_an_admin(conn: Connection, account_id: int, user_id: int) -> None:
    """Refuse a change that would leave the account without an admin (the account row lock is held)."""
    member = get_member(conn, account_id, user_id)
    if member.role != "admin":
        return
    row = conn.execute(_accounts("count_admins"), {"account_id": account_id}).fetchone()
    if row is not None and int(row[0]) <= 1:
        raise ConflictError("the account must keep at least one admin")


def change_member_role(conn: Connection, account_id: int, user_id: int, role: Role) -> Member:
    """Give a member another role; the last admin cannot be demoted."""
    conn.execute(_accounts("lock_account"), {"account_id": account_id})
    if role != "admin":
        _keep_an_admin(conn, account_id, user_id)
    updated = conn.execute(
        _accounts("update_member_role"), {"account_id": account_id, "user_id": user_id, "role": role}
    ).fetchone()
    if updated is None:
        raise NotFoundError("member not found")
    log.info("account %s: member %s is now %s", account_id, user_id, role)
    return get_member(conn, account_id, user_id)


def remove_member(conn: Connection, account_id: int, user_id: int) -> None:
    """Remove a member and their login; the last admin cannot be removed."""
    conn.execute(_accounts("lock_account"), {"account_id": account_id})
    _keep_an_admin(conn, account_id, user_id)
    deleted = conn.execute(
        _accounts("delete_membership"), {"account_id": account_id, "user_id": user_id}
    ).fetchone()
    if deleted is None:
        raise NotFoundError("member not found")
    conn.execute(_accounts("delete_user_without_memberships"), {"user_id": user_id})
    log.info("account %s: removed member %s", account_id, user_id)
