"""What route handlers receive through `Provide`: the shared resources and the request's connection.

A handler whose work is all in PostgreSQL declares `conn` and runs on the request's pooled connection, in one
transaction: committed once the handler has returned and its response is built (so before the client reads
it), rolled back when either raises. A pool that has no connection to give within its timeout raises
`PoolTimeout` before the handler runs, which answers 503 like any other database outage.

Handlers that go on to slower work after reading PostgreSQL (ClickHouse reads, an upload's body, the login
throttle) declare `resources` instead and read on a short transaction (`Resources.in_transaction`), so that no
pooled connection waits on that work; a streamed import holds its own connection for the upload
(`ImportSession`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import anyio.to_thread
import psycopg
from litestar.datastructures import State
from litestar.di import NamedDependency

from crm_bulk.api.resources import Resources

T = TypeVar("T")
Connection: TypeAlias = psycopg.Connection[Any]


def provide_resources(state: State) -> Resources:
    """The dependency handlers declare as `resources`."""
    resources: Resources = state.resources
    return resources


async def provide_connection(resources: NamedDependency[Resources]) -> AsyncGenerator[Connection, None]:
    """The dependency handlers declare as `conn`: a pooled connection in one transaction for the request."""
    async with _on_worker_threads(resources.connection()) as conn:
        yield conn


async def provide_autocommit_connection(
    resources: NamedDependency[Resources],
) -> AsyncGenerator[Connection, None]:
    """`conn` for a route whose code commits its own steps: a pooled connection in autocommit mode."""
    async with _on_worker_threads(resources.connection(autocommit=True)) as conn:
        yield conn


@asynccontextmanager
async def _on_worker_threads(held: AbstractContextManager[T]) -> AsyncIterator[T]:
    """Enter and leave a blocking context manager on worker threads.

    Waiting for a pooled connection (up to the pool's timeout) and committing block; on the event loop they
    would stall every other request. What the handler raises is passed on, so the transaction rolls back.
    """
    value = await anyio.to_thread.run_sync(held.__enter__)
    try:
        yield value
    except BaseException as exc:
        await anyio.to_thread.run_sync(held.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await anyio.to_thread.run_sync(held.__exit__, None, None, None)
