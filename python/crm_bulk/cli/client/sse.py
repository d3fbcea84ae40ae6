"""Reading a `text/event-stream` (the WHATWG Server-Sent Events format) line by line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamEvent:
    """One dispatched event; a comment line (a keep-alive) comes as `event="comment"`."""

    event: str
    data: str
    id: str | None = None


def parse_events(lines: Iterable[str]) -> Iterator[StreamEvent]:
    """The events of a stream's lines (without their line breaks), dispatched at each blank line."""
    event, data, event_id = "", list[str](), None
    for line in lines:
        if not line:
            if data:
                yield StreamEvent(event or "message", "\n".join(data), event_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            yield StreamEvent("comment", line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            event_id = value  # as browsers do: kept for the next events too
