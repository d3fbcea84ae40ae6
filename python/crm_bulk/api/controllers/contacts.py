"""`/contacts`: one contact at a time, and filtered keyset listing."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIFormat
from litestar.params import FromPath, JSONBody, QueryParameter

from crm_bulk.api.dependencies import Connection
from crm_bulk.api.problems import AUTHENTICATED, problem_responses
from crm_bulk.api.query_params import ACCEPTS, ACCEPTS_DESCRIPTION
from crm_bulk.api.security import editor, viewer
from crm_bulk.auth.accounts import Principal
from crm_bulk.contacts import repository
from crm_bulk.contacts.models import Contact, ContactInput, ContactPage, ContactPatch
from crm_bulk.contacts.query_filters import filter_from_query, is_filter_parameter

OptionalText = str | None


class ContactController(Controller):
    """Contacts of the caller's account; viewers read, editors write."""

    path = "/contacts"
    tags = ["contacts"]  # noqa: RUF012 - Litestar reads it as a class attribute
    guards = [viewer]  # noqa: RUF012

    @post(
        "",
        guards=[editor],
        sync_to_thread=True,
        status_code=201,
        summary="Create a contact",
        responses=problem_responses(*AUTHENTICATED, 403, 409, 422),
    )
    def create_contact(
        self,
        data: JSONBody[ContactInput],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Contact:
        """409 with `existing_id` when a live contact of the account has the same normalised email."""
        return repository.create_contact(conn, principal.account_id, data)

    @get(
        "",
        sync_to_thread=True,
        summary="List contacts, filtered, in id order",
        responses=problem_responses(*AUTHENTICATED, 422),
        opt={ACCEPTS: is_filter_parameter, ACCEPTS_DESCRIPTION: "filter conditions (field, field.op)"},
    )
    def list_contacts(
        self,
        *,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
        limit: Annotated[int, QueryParameter(ge=1, le=repository.MAX_PAGE, description="Page size")] = 100,
        cursor: Annotated[
            OptionalText, QueryParameter(description="`next_cursor` of the previous page")
        ] = None,
        filter: Annotated[
            OptionalText,
            QueryParameter(description='The filter language as JSON: {"company": {"eq": "Acme"}}'),
        ] = None,
        email: Annotated[OptionalText, QueryParameter(description="Email equals (case-insensitive)")] = None,
        company: Annotated[OptionalText, QueryParameter(description="Company equals")] = None,
        tags_contains: Annotated[
            OptionalText, QueryParameter(name="tags.contains", description="Has this tag")
        ] = None,
        created_at_gte: Annotated[
            OptionalText,
            QueryParameter(
                name="created_at.gte", format=OpenAPIFormat.DATE_TIME, description="Created at or after"
            ),
        ] = None,
        created_at_lt: Annotated[
            OptionalText,
            QueryParameter(
                name="created_at.lt", format=OpenAPIFormat.DATE_TIME, description="Created before"
            ),
        ] = None,
    ) -> ContactPage:
        """Any filter-language condition works as `field=value` (eq) or `field.op=value`, e.g.
        `custom_fields.plan.in=free,trial`, `phone.is_null=true`; unknown fields or operators answer 422."""
        conditions = filter_from_query(request.query_params.multi_items())
        return repository.list_contacts(
            conn, principal.account_id, filter=conditions, limit=limit, cursor=cursor
        )

    @get(
        "/{contact_id:int}",
        sync_to_thread=True,
        summary="Get a contact",
        responses=problem_responses(*AUTHENTICATED, 404),
    )
    def get_contact(
        self,
        contact_id: FromPath[int],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Contact:
        """404 for unknown ids and other accounts' contacts alike."""
        return repository.get_contact(conn, principal.account_id, contact_id)

    @put(
        "/{contact_id:int}",
        guards=[editor],
        sync_to_thread=True,
        summary="Replace a contact",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409, 422),
    )
    def replace_contact(
        self,
        contact_id: FromPath[int],
        data: JSONBody[ContactInput],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Contact:
        """Every field is set; fields left out become empty."""
        return repository.replace_contact(conn, principal.account_id, contact_id, data)

    @patch(
        "/{contact_id:int}",
        guards=[editor],
        sync_to_thread=True,
        summary="Change some fields of a contact",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409, 422),
    )
    def patch_contact(
        self,
        contact_id: FromPath[int],
        data: JSONBody[ContactPatch],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Contact:
        """Given fields replace, `null` clears, absent fields stay."""
        return repository.patch_contact(conn, principal.account_id, contact_id, data)

    @delete(
        "/{contact_id:int}",
        guards=[editor],
        sync_to_thread=True,
        summary="Delete a contact",
        responses=problem_responses(*AUTHENTICATED, 403, 404),
    )
    def delete_contact(
        self,
        contact_id: FromPath[int],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> None:
        """The contact disappears from reads; its email can be used again."""
        repository.delete_contact(conn, principal.account_id, contact_id)
