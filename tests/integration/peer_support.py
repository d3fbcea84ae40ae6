"""An app under test whose requests can come from any client address: the test client always connects as
`testclient`, so a test header stands in for the peer address the server sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.testing import TestClient
from litestar.types import Receive, Scope, Send

from crm_bulk.api import create_app
from crm_bulk.settings import Settings

PEER_HEADER = "x-test-peer"


def peer(address: str) -> dict[str, str]:
    """Headers that make a request come from `address`."""
    return {PEER_HEADER: address}


class PeerFromHeader:
    """ASGI wrapper: sets the connection's client address from `PEER_HEADER`, as a real socket peer."""

    def __init__(self, app: Litestar) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            headers = dict(scope["headers"])
            address = headers.get(PEER_HEADER.encode())
            if address is not None:
                scope = {**scope, "client": (address.decode(), 40000)}
        await self.app(scope, receive, send)


def running_client_with_peers(
    settings: Settings, database_url: str
) -> Iterator[tuple[TestClient[Any], Litestar]]:
    """Like `api_support.running_client`, with requests going through `PeerFromHeader`; also the app (the
    client's `app` is the wrapper)."""
    app = create_app(settings.resolved(database_url=database_url))
    with TestClient(PeerFromHeader(app), raise_server_exceptions=False) as client:
        yield client, app
