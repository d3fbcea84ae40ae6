"""`/accounts/me`: the caller's account and limits, and (admins) its members."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from crm_bulk.api.controllers.auth import Email
from crm_bulk.api.dependencies import Connection
from crm_bulk.api.problems import AUTHENTICATED, problem_responses
from crm_bulk.api.resources import Resources
from crm_bulk.api.security import admin, viewer
from crm_bulk.auth import accounts
from crm_bulk.auth.accounts import Principal
from crm_bulk.auth.limits import MAX_ENTITIES_PER_SECOND, MAX_REQUESTS_PER_MINUTE, LimitCeiling
from crm_bulk.auth.roles import Role

UserId = Annotated[int, PathParameter(ge=1, le=2**63 - 1, description="A member's user id")]


class Limits(msgspec.Struct):
    """The account's limits: API requests per minute, and entities per second its bulk actions apply."""

    api_requests_per_minute: int
    entities_per_second: int


class AccountResponse(msgspec.Struct):
    """The caller's account and the caller's role in it."""

    id: int
    name: str
    role: str
    limits: Limits
    created_at: datetime


class LimitsUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """New limits; a missing one stays as it is. Above the deployment's ceiling (`CRM_BULK_MAX_ACCOUNT_*`) a
    limit cannot be raised (422 `above_ceiling`), only by the operator (`crm-bulk accounts set-limits`)."""

    api_requests_per_minute: Annotated[int, msgspec.Meta(ge=1, le=MAX_REQUESTS_PER_MINUTE)] | None = None
    entities_per_second: Annotated[int, msgspec.Meta(ge=1, le=MAX_ENTITIES_PER_SECOND)] | None = None


class MemberCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new user of the account; the password must be hard to guess (422 `weak_password`, `blank`)."""

    email: Email
    password: Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
    role: Role


class MemberUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """A member's new role."""

    role: Role


class MemberResponse(msgspec.Struct):
    """A member of the account."""

    user_id: int
    email: str
    role: str
    created_at: datetime


def _account_body(account: accounts.Account, role: str) -> AccountResponse:
    return AccountResponse(
        id=account.id,
        name=account.name,
        role=role,
        limits=Limits(account.api_requests_per_minute, account.entities_per_second),
        created_at=account.created_at,
    )


def _member_body(member: accounts.Member) -> MemberResponse:
    return MemberResponse(
        user_id=member.user_id, email=member.email, role=member.role, created_at=member.created_at
    )


class AccountController(Controller):
    """The caller's account; members and limits are for admins."""

    path = "/accounts/me"
    tags = ["accounts"]  # noqa: RUF012 - Litestar reads it as a class attribute
    guards = [viewer]  # noqa: RUF012

    @get(
        "",
        sync_to_thread=True,
        summary="The caller's account, role and limits",
        responses=problem_responses(*AUTHENTICATED),
    )
    def get_account(
        self, principal: NamedDependency[Principal], conn: NamedDependency[Connection]
    ) -> AccountResponse:
        """Any member."""
        account = accounts.get_account(conn, principal.account_id)
        return _account_body(account, principal.role)

    @patch(
        "/limits",
        guards=[admin],
        sync_to_thread=True,
        summary="Change the account's limits (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 422),
    )
    def update_limits(
        self,
        data: JSONBody[LimitsUpdate],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
        resources: NamedDependency[Resources],
    ) -> AccountResponse:
        """Takes effect on the next request (API) and the next chunk (workers); 422 `above_ceiling` for a
        raise above the deployment's ceiling."""
        settings = resources.settings
        account = accounts.update_limits(
            conn,
            principal.account_id,
            api_requests_per_minute=data.api_requests_per_minute,
            entities_per_second=data.entities_per_second,
            ceiling=LimitCeiling(
                api_requests_per_minute=settings.max_account_requests_per_minute,
                entities_per_second=settings.max_account_entities_per_second,
            ),
        )
        return _account_body(account, principal.role)

    @get(
        "/members",
        guards=[admin],
        sync_to_thread=True,
        summary="The account's members (admin)",
        responses=problem_responses(*AUTHENTICATED, 403),
    )
    def list_members(
        self, principal: NamedDependency[Principal], conn: NamedDependency[Connection]
    ) -> list[MemberResponse]:
        """Every member, by user id."""
        return [_member_body(m) for m in accounts.list_members(conn, principal.account_id)]

    @post(
        "/members",
        guards=[admin],
        sync_to_thread=True,
        status_code=201,
        summary="Add a member (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 409, 422),
    )
    def add_member(
        self,
        data: JSONBody[MemberCreate],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> MemberResponse:
        """A new user who logs in with this email and password; 409 when the email is taken."""
        email = accounts.normalize_login_email(data.email)
        member = accounts.add_member(
            conn, principal.account_id, email=email, password=data.password, role=data.role
        )
        return _member_body(member)

    @patch(
        "/members/{user_id:int}",
        guards=[admin],
        sync_to_thread=True,
        summary="Change a member's role (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409, 422),
    )
    def change_role(
        self,
        user_id: UserId,
        data: JSONBody[MemberUpdate],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> MemberResponse:
        """409 when it would leave the account without an admin."""
        member = accounts.change_member_role(conn, principal.account_id, user_id, data.role)
        return _member_body(member)

    @delete(
        "/members/{user_id:int}",
        guards=[admin],
        sync_to_thread=True,
        summary="Remove a member (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409),
    )
    def remove_member(
        self, user_id: UserId, principal: NamedDependency[Principal], conn: NamedDependency[Connection]
    ) -> None:
        """The member's login goes too; 409 for the account's last admin."""
        accounts.remove_member(conn, principal.account_id, user_id)
