"""CloudEvents binary-mode headers and a W3C traceparent for each event."""

from __future__ import annotations

import secrets
from datetime import datetime

__all__ = ["cloudevent_headers", "new_traceparent"]


def new_traceparent() -> str:
    ids = secrets.token_hex(24)  # one call: trace id (16 bytes) and parent id (8 bytes)
    return f"00-{ids[:32]}-{ids[32:]}-01"


def cloudevent_headers(
    *, event_id: str, source: str, event_type: str, time: datetime, traceparent: str | None = None
) -> list[tuple[str, str | bytes | None]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", event_type.encode()),
        ("ce_time", time.isoformat(timespec="milliseconds").encode()),
        ("content-type", b"application/avro"),
        ("traceparent", (traceparent or new_traceparent()).encode()),
    ]
