"""The three roles and what each may do: viewer reads, editor also writes, admin also manages the account."""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["admin", "editor", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)
_RANK: dict[str, int] = {"viewer": 0, "editor": 1, "admin": 2}


def role_allows(role: str, required: Role) -> bool:
    """True when `role` is at least `required` (unknown roles allow nothing)."""
    return role in _RANK and _RANK[role] >= _RANK[required]
