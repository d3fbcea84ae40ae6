"""Real servers for tests that a test client cannot stand in for: a free loopback port, and the API under
uvicorn in a thread (stalled sockets, proxy headers, what the CLI configures)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(config: uvicorn.Config, *, start_timeout: float = 60.0) -> Iterator[uvicorn.Server]:
    """`config` served by uvicorn in a thread until the block ends; entered once it accepts connections."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        assert thread.is_alive(), "the API server stopped"
        assert time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
