"""A real webhook receiver for tests: an HTTP server on loopback that records every request and answers
from a script (status and delay per request), so outages, errors and slow answers are real ones."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Script:
    """Answers in order (status, seconds to wait first); once spent, `default`."""

    answers: list[tuple[int, float]] = field(default_factory=list)
    default: tuple[int, float] = (200, 0.0)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> tuple[int, float]:
        with self.lock:
            return self.answers.pop(0) if self.answers else self.default


class Receiver:
    """Requests received so far, and the URL to register."""

    def __init__(self, server: ThreadingHTTPServer, script: Script) -> None:
        self.server = server
        self.script = script
        self.received: list[Received] = []
        self._lock = threading.Condition()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, request: Received) -> None:
        with self._lock:
            self.received.append(request)
            self._lock.notify_all()

    def wait_for(self, count: int, *, timeout: float) -> list[Received]:
        """The first `count` requests; fails when they do not arrive in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.received)} of {count} webhook requests arrived in {timeout} s"
                self._lock.wait(left)
            return list(self.received[:count])


def _handler(receiver_ref: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = receiver_ref[0]
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.record(Received(path=self.path, headers=headers, body=body, at=time.monotonic()))
            status, delay = receiver.script.next()
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", "/redirected")
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender gave up waiting (a timeout under test) and closed the connection

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests assert on what was received."""

    return Handler


@contextmanager
def receiving(
    script: Script | None = None, *, port: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 (`port`, or any free one), over TLS with `tls`, until the block
    ends."""
    ref: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(ref))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    receiver = Receiver(server, script or Script())
    ref.append(receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
