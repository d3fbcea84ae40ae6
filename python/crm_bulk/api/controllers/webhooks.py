"""`/accounts/me/webhooks` (admins): completion webhook endpoints, their delivery log and redelivery.

The signing secret is in the answer to the registration only; afterwards no route shows it. Target URLs
are checked before anything is stored (`crm_bulk.webhooks.targets`): an internal address answers 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from crm_bulk.api.dependencies import Connection
from crm_bulk.api.problems import AUTHENTICATED, problem_responses
from crm_bulk.api.resources import Resources
from crm_bulk.api.security import admin
from crm_bulk.auth.accounts import Principal
from crm_bulk.webhooks import endpoints, outbox
from crm_bulk.webhooks.endpoints import Endpoint
from crm_bulk.webhooks.outbox import Delivery, DeliveryPage
from crm_bulk.webhooks.sealing import SecretBox
from crm_bulk.webhooks.targets import MAX_URL_LENGTH, AddressPolicy, check_registration

EventName = Literal[
    "job.started", "job.completed", "job.completed_with_errors", "job.failed", "job.cancelled"
]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_LENGTH)]
Events = Annotated[list[EventName], msgspec.Meta(min_length=1, max_length=len(endpoints.EVENTS))]
Description = Annotated[str, msgspec.Meta(max_length=500)]
DeliveryId = Annotated[int, PathParameter(ge=1, le=2**63 - 1, description="A delivery's id")]


class EndpointCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new endpoint: an http(s) URL that resolves to public addresses only, and the events it wants."""

    url: Url
    events: Events
    description: Description = ""


class EndpointUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Changes to an endpoint; a missing field stays as it is (the secret always does)."""

    url: Url | None = None
    events: Events | None = None
    enabled: bool | None = None
    description: Description | None = None


class CreatedEndpoint(msgspec.Struct, kw_only=True):
    """The endpoint just registered, with its signing secret (`whsec_…`): shown this once, keep it."""

    id: UUID
    url: str
    description: str
    events: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    secret: str


def _policy(resources: Resources) -> AddressPolicy:
    return AddressPolicy.from_settings(resources.settings)


class WebhookController(Controller):
    """Webhook endpoints of the caller's account (admin)."""

    path = "/accounts/me/webhooks"
    tags = ["webhooks"]  # noqa: RUF012 - Litestar reads it as a class attribute
    guards = [admin]  # noqa: RUF012

    @post(
        "",
        sync_to_thread=True,
        status_code=201,
        summary="Register a webhook endpoint (admin); its secret is shown once",
        responses=problem_responses(*AUTHENTICATED, 403, 409, 422),
    )
    def create_webhook(
        self,
        data: JSONBody[EndpointCreate],
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
    ) -> CreatedEndpoint:
        """422 for a malformed URL, one that reaches an internal address, or an unknown event; 409 past the
        account's endpoint limit."""
        # Resolving the host may take a while: no pooled connection is held meanwhile.
        check_registration(data.url, _policy(resources))
        endpoint, secret = resources.in_transaction(
            endpoints.create_endpoint,
            principal.account_id,
            url=data.url,
            events=list(data.events),
            description=data.description,
            box=SecretBox.from_settings(resources.settings),
        )
        return CreatedEndpoint(**msgspec.structs.asdict(endpoint), secret=secret)

    @get(
        "",
        sync_to_thread=True,
        summary="The account's webhook endpoints (admin)",
        responses=problem_responses(*AUTHENTICATED, 403),
    )
    def list_webhooks(
        self, principal: NamedDependency[Principal], conn: NamedDependency[Connection]
    ) -> list[Endpoint]:
        """Oldest first; secrets are never shown again."""
        return endpoints.list_endpoints(conn, principal.account_id)

    @get(
        "/{endpoint_id:uuid}",
        sync_to_thread=True,
        summary="One webhook endpoint (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 404),
    )
    def get_webhook(
        self,
        endpoint_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Endpoint:
        """404 for unknown ids and other accounts' endpoints alike."""
        return endpoints.get_endpoint(conn, principal.account_id, endpoint_id)

    @patch(
        "/{endpoint_id:uuid}",
        sync_to_thread=True,
        summary="Change a webhook endpoint's URL, events or enabled flag (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 422),
    )
    def update_webhook(
        self,
        endpoint_id: FromPath[UUID],
        data: JSONBody[EndpointUpdate],
        principal: NamedDependency[Principal],
        resources: NamedDependency[Resources],
    ) -> Endpoint:
        """A new URL is checked as at registration. Disabled endpoints get no new events, and their pending
        deliveries wait until they are enabled again."""
        if data.url is not None:
            check_registration(data.url, _policy(resources))
        return resources.in_transaction(
            endpoints.update_endpoint,
            principal.account_id,
            endpoint_id,
            url=data.url,
            events=None if data.events is None else list(data.events),
            enabled=data.enabled,
            description=data.description,
        )

    @delete(
        "/{endpoint_id:uuid}",
        sync_to_thread=True,
        summary="Remove a webhook endpoint and its delivery log (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 404),
    )
    def delete_webhook(
        self,
        endpoint_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> None:
        """Deliveries not yet made to it are dropped."""
        endpoints.delete_endpoint(conn, principal.account_id, endpoint_id)

    @get(
        "/{endpoint_id:uuid}/deliveries",
        sync_to_thread=True,
        summary="The endpoint's delivery log, newest first (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 422),
    )
    def list_webhook_deliveries(
        self,
        endpoint_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
        limit: Annotated[int, QueryParameter(ge=1, le=outbox.MAX_PAGE, description="Page size")] = 50,
        cursor: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page")
        ] = None,
    ) -> DeliveryPage:
        """One row per event sent to this endpoint: its `event_id` (the `webhook-id` header), status
        (`pending`, `succeeded`, `failed`), attempts, last answer and next attempt."""
        return outbox.list_deliveries(conn, principal.account_id, endpoint_id, limit=limit, cursor=cursor)

    @post(
        "/{endpoint_id:uuid}/deliveries/{delivery_id:int}/redeliver",
        sync_to_thread=True,
        status_code=202,
        summary="Send a delivery again (admin)",
        responses=problem_responses(*AUTHENTICATED, 403, 404, 409),
    )
    def redeliver_webhook(
        self,
        endpoint_id: FromPath[UUID],
        delivery_id: DeliveryId,
        principal: NamedDependency[Principal],
        conn: NamedDependency[Connection],
    ) -> Delivery:
        """The same body under the same `webhook-id`, at once, with a fresh retry schedule; 409 while the
        endpoint is disabled."""
        return outbox.redeliver(conn, principal.account_id, endpoint_id, delivery_id)
