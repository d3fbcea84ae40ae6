"""The small HTTP endpoint of the worker pool and the scheduler, for orchestrators' probes.

- `/healthz` — alive: the process's main loop ticked within `max_age_seconds`. A loop waiting out a backend
  failure still ticks (its retries do), so a database outage makes processes unready, never restarts them.
  Before its first tick (still waiting for the queue to be set up) a process counts as alive.
- `/readyz` — ready: every backend the process needs (PostgreSQL, the queue, the rate limiter) answers; each
  probed at most once per `every_seconds` whatever the request rate. Bodies carry statuses only, no targets.
- any other path goes to `fallback` (the worker pool's Prometheus `/metrics`), else 404.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import msgspec

from crm_bulk.health import BackendStatus, probe_postgres, queue_status, ratelimit_status
from crm_bulk.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Probe = Callable[[], dict[str, BackendStatus]]


class Heartbeat:
    """When a loop last ticked; `alive()` while that is at most `max_age_seconds` ago (or it never has)."""

    def __init__(self, *, max_age_seconds: float, clock: Clock = time.monotonic) -> None:
        if max_age_seconds <= 0:
            raise ValueError("max_age_seconds must be positive")
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._last: float | None = None

    def beat(self) -> None:
        """The loop made a step (or a retry of one)."""
        self._last = self._clock()

    def age(self) -> float | None:
        """Seconds since the last beat; None before the first."""
        return None if self._last is None else self._clock() - self._last

    def alive(self) -> bool:
        """True unless the loop has ticked before and not for longer than `max_age_seconds`."""
        age = self.age()
        return age is None or age <= self.max_age_seconds


class BackendReadiness:
    """`probe()` run at most once per `every_seconds` (one caller at a time; the others get its answer)."""

    def __init__(self, probe: Probe, *, every_seconds: float = 1.0, clock: Clock = time.monotonic) -> None:
        self._probe = probe
        self._every = every_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[str, BackendStatus] | None = None
        self._at = 0.0

    def statuses(self) -> dict[str, BackendStatus]:
        """Each backend's last status, probed again when older than `every_seconds`."""
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._at >= self._every:
                self._cached = self._probe()
                self._at = self._clock()
            return self._cached


def backend_probe(settings: Settings) -> Probe:
    """The probe of what worker and scheduler need: PostgreSQL, the queue and the rate limiter."""

    def probe() -> dict[str, BackendStatus]:
        postgres = probe_postgres(settings.postgres_dsn)
        return {
            "postgres": postgres,
            "queue": queue_status(settings, postgres),
            "ratelimit": ratelimit_status(settings),
        }

    return probe


class _Liveness(msgspec.Struct):
    status: str
    last_tick_seconds_ago: float | None


class _Readiness(msgspec.Struct):
    status: str
    backends: dict[str, bool]


def health_app(
    heartbeat: Heartbeat, readiness: BackendReadiness, *, fallback: WSGIApplication | None = None
) -> WSGIApplication:
    """The WSGI app answering `/healthz` and `/readyz` (JSON, 200 or 503), other paths by `fallback`."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            age = heartbeat.age()
            ok = heartbeat.alive()
            body: _Liveness | _Readiness = _Liveness(
                "ok" if ok else "stalled", None if age is None else round(age, 3)
            )
        elif path == "/readyz":
            backends = {name: status.ok for name, status in readiness.statuses().items()}
            ok = all(backends.values())
            body = _Readiness("ready" if ok else "unready", backends)
        elif fallback is not None:
            return fallback(environ, start_response)
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [msgspec.json.encode(body)]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds; their access lines would drown the process's log."""


@dataclass
class HttpEndpoint:
    """A running endpoint; `stop()` shuts it down."""

    server: WSGIServer
    thread: threading.Thread
    port: int

    def stop(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_http(app: WSGIApplication, *, addr: str, port: int, name: str) -> HttpEndpoint:
    """Serve `app` on `addr:port` (0 picks a free port) from a daemon thread; OSError if it cannot listen."""
    server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    bound = int(server.server_address[1])
    log.info("%s on http://%s:%d (/healthz, /readyz)", name, addr, bound)
    return HttpEndpoint(server=server, thread=thread, port=bound)


def postgres_probe(settings: Settings) -> Probe:
    """The probe of a process that needs PostgreSQL only (the webhook deliverer)."""
    return lambda: {"postgres": probe_postgres(settings.postgres_dsn)}


def serve_process_health(
    settings: Settings,
    heartbeat: Heartbeat,
    *,
    port: int,
    name: str,
    fallback: WSGIApplication | None = None,
    probe: Probe | None = None,
) -> HttpEndpoint | None:
    """The endpoint of a worker pool, scheduler or deliverer on `settings.health_host:port`, ready by `probe`
    (default: `backend_probe`); None (logged) when the port is taken, so a probe port never stops the
    process from working."""
    readiness = BackendReadiness(probe or backend_probe(settings))
    app = health_app(heartbeat, readiness, fallback=fallback)
    try:
        return serve_http(app, addr=settings.health_host, port=port, name=name)
    except OSError as exc:
        log.error("%s not served: cannot listen on %s:%d: %s", name, settings.health_host, port, exc)
        return None
