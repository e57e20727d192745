"""CloudEvents binary-mode headers, a W3C traceparent and an event id for each event.

The Publisher builds these for every event, so they are made cheaply: one
``os.urandom`` call gives both the event id (a version-4 UUID, the same bits
``uuid.uuid4()`` would set) and the traceparent; headers that are the same for a
whole dataset are encoded once (``HeaderTemplate``); the ``ce_time`` text is built
from integer milliseconds, its date-and-time part cached per second.
"""

from __future__ import annotations

import os
import time as _time
from datetime import datetime

from schemas.headers import AVRO, CONTENT_TYPE_HEADER, SPECVERSION

__all__ = [
    "HeaderTemplate",
    "ce_time",
    "cloudevent_headers",
    "new_event_id",
    "new_ids",
    "new_traceparent",
]

# The names and values are the contract's (schemas.headers, which builds the headers
# of every event the bus itself derives); these are the sources' events, built hot.
_SPECVERSION = ("ce_specversion", SPECVERSION.encode())
_CONTENT_TYPE = (CONTENT_TYPE_HEADER, AVRO.encode())
# uuid4: version nibble 4, variant bits 10 (RFC 4122), as uuid.UUID(version=4) sets them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _uuid4_text(raw: bytes) -> str:
    h = f"{(int.from_bytes(raw) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_event_id() -> str:
    """A random version-4 UUID as text: ``str(uuid.uuid4())`` at a quarter of the cost."""
    return _uuid4_text(os.urandom(16))


def new_traceparent() -> str:
    ids = os.urandom(24).hex()  # one call: trace id (16 bytes) and parent id (8 bytes)
    return f"00-{ids[:32]}-{ids[32:]}-01"


# The hex digit holding the RFC 4122 variant bits (10xx), from a random one.
_VARIANT = {f"{i:x}": f"{(i & 0x3) | 0x8:x}" for i in range(16)}


def new_ids() -> tuple[str, bytes]:
    """(event id, encoded traceparent) from one ``os.urandom`` call.

    The event id is ``_uuid4_text`` of the first 16 bytes, spelled on the hex text:
    digit 12 is the version (4), digit 16 carries the variant bits.
    """
    h = os.urandom(40).hex()
    return (
        f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}",
        f"00-{h[32:64]}-{h[64:]}-01".encode(),
    )


_second_cache: tuple[int, str] = (-1, "")


def ce_time(ms: int) -> bytes:
    """``datetime.isoformat(timespec="milliseconds")`` of a UTC instant in epoch ms."""
    global _second_cache
    seconds, millis = divmod(ms, 1000)
    cached_second, text = _second_cache
    if cached_second != seconds:
        text = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(seconds))
        # One tuple, replaced whole: another thread sees the old pair or the new one.
        _second_cache = (seconds, text)
    return f"{text}.{millis:03d}+00:00".encode()


class HeaderTemplate:
    """The headers of one (source, type): only id, time and traceparent change per event."""

    __slots__ = ("_source", "_type")

    def __init__(self, source: str, event_type: str) -> None:
        self._source = ("ce_source", source.encode())
        self._type = ("ce_type", event_type.encode())

    def headers(
        self, event_id: str, ms: int, traceparent: bytes
    ) -> list[tuple[str, str | bytes | None]]:
        return [
            _SPECVERSION,
            ("ce_id", event_id.encode()),
            self._source,
            self._type,
            ("ce_time", ce_time(ms)),
            _CONTENT_TYPE,
            ("traceparent", traceparent),
        ]


def cloudevent_headers(
    *, event_id: str, source: str, event_type: str, time: datetime, traceparent: str | None = None
) -> list[tuple[str, str | bytes | None]]:
    return [
        _SPECVERSION,
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", event_type.encode()),
        ("ce_time", time.isoformat(timespec="milliseconds").encode()),
        _CONTENT_TYPE,
        ("traceparent", (traceparent or new_traceparent()).encode()),
    ]
