"""The API over HTTP for the client commands: one httpx client, every failure turned into one line.

No answer (refused, DNS, timeout) → `EXIT_UNREACHABLE`; 401 → `EXIT_NOT_LOGGED_IN`; any other problem answer →
its status, title and detail (and the fields at fault) with `EXIT_REFUSED`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from crm_bulk.cli.client.exits import EXIT_NOT_LOGGED_IN, EXIT_REFUSED, EXIT_UNREACHABLE, ClientError
from crm_bulk.cli.client.sse import StreamEvent, parse_events

TIMEOUT = httpx.Timeout(30.0)
# An upload's answer comes once the server has stored its last rows; an event stream sends a keep-alive at
# least every CRM_BULK_EVENTS_KEEPALIVE_SECONDS (15 s by default).
UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=600.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, read=90.0)


def problem_message(response: httpx.Response) -> str:
    """One line for a problem answer: `404 Not Found: bulk action … not found`, fields at fault appended."""
    status = f"{response.status_code} {response.reason_phrase}".strip()
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = " ".join(response.text.split())[:200]
        return f"{status}: {text}" if text else status
    detail = body.get("detail") or body.get("title") or ""
    line = f"{status}: {detail}" if detail else status
    fields = [
        f"{e.get('field')}: {e.get('message') or e.get('code')}"
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    if fields:
        line += " (" + "; ".join(fields[:5]) + (" …" if len(fields) > 5 else "") + ")"
    if body.get("existing_id") is not None:
        line += f" (existing id {body['existing_id']})"
    return line


def check(response: httpx.Response) -> httpx.Response:
    """The response when it succeeded, else `ClientError` with its one line."""
    if response.is_success:
        return response
    if not response.is_stream_consumed:
        response.read()
    if response.status_code == 401:
        raise ClientError(
            f"not logged in or the token has expired ({problem_message(response)}): run `crm-bulk login`",
            EXIT_NOT_LOGGED_IN,
        )
    raise ClientError(problem_message(response), EXIT_REFUSED)


_checked = check  # under another name inside ApiClient, whose `request` takes a `check` flag


class ApiClient:
    """Requests to one API, with the caller's token when it has one."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"User-Agent": "crm-bulk-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=TIMEOUT)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, check: bool = True, **kwargs: Any) -> httpx.Response:
        """One request; its response (with `check`, only when it succeeded)."""
        with self._reaching():
            response = self._http.request(method, path, **kwargs)
        return _checked(response) if check else response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request's JSON answer."""
        return self.request(method, path, **kwargs).json()

    def upload(
        self, path: str, body: Iterable[bytes], *, size: int, content_type: str, params: dict[str, str]
    ) -> Any:
        """Stream `body` (`size` bytes) as the request body; the JSON answer."""
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        with self._reaching():
            response = self._http.post(
                path, content=body, headers=headers, params=params, timeout=UPLOAD_TIMEOUT
            )
            return _checked(response).json()

    @contextmanager
    def streaming(
        self, path: str, *, accept: str, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """A GET whose body is read as it arrives."""
        with (
            self._reaching(),
            self._http.stream(
                "GET", path, headers={"Accept": accept, **(headers or {})}, timeout=STREAM_TIMEOUT
            ) as response,
        ):
            yield _checked(response)

    def events(self, path: str, *, last_event_id: str | None) -> Iterator[StreamEvent]:
        """The events of a `text/event-stream`; httpx errors pass through (the caller reconnects)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self._http.stream(
            "GET", path, headers={"Accept": "text/event-stream", **headers}, timeout=STREAM_TIMEOUT
        ) as response:
            _checked(response)
            yield from parse_events(response.iter_lines())

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ClientError(
                f"the API at {self.base_url} did not answer in time ({type(exc).__name__})", EXIT_UNREACHABLE
            ) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ClientError(
                f"cannot reach the API at {self.base_url}: {reason}", EXIT_UNREACHABLE
            ) from None
