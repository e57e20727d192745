"""The Kafka headers the bus's writers and readers agree on: CloudEvents and marks.

Every record the bus writes is a CloudEvent in the Kafka protocol binding's binary
mode: ``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``, ``ce_time`` and
``content-type`` always; ``ce_subject``, ``ce_dataschema`` and the extension
``ce_originid`` where they apply. This module builds them, for every writer:

- ``cloudevent`` builds the headers of a new event;
- ``derive`` builds those of an event the bus made from another one (std from raw,
  shared from std): a new id (``derived_id``, deterministic: processing the same
  record again after a crash gives the same id), the bus component as source, the
  original's id in ``ce_originid`` and its ``ce_time`` kept; every header that is not
  a CloudEvents attribute (``traceparent``, the backfill mark, a replay mark) is kept;
- ``ensure_cloudevent`` completes the headers of a record passed on as it is (a dead
  letter keeps the original event's attributes; one that had none gets its own).

``ce_dataschema`` is ``urn:databus:schema:<subject>:<version>`` (``dataschema``): the
registry subject and the version the record's schema has there (``schema_version``).

The source of a record the bus produces (``PROCESSOR_SOURCE`` …) is a URN; the
sources' own events keep ``/databus/<system>/<unit>``.
"""

from __future__ import annotations

import hashlib
import time as _time
import uuid
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from bus.errors import RegistryError

__all__ = [
    "ALERTS_SOURCE",
    "AVRO",
    "BACKFILL_HEADER",
    "CONTENT_TYPE_HEADER",
    "DECLARATIONS_TYPE",
    "DERIVED_NAMESPACE",
    "ORIGINID_HEADER",
    "PROCESSOR_SOURCE",
    "QUALITY_SOURCE",
    "REPLAY_SOURCE",
    "REQUIRED_HEADERS",
    "SHARE_SOURCE",
    "SPECVERSION",
    "attributes",
    "ce_time_text",
    "cloudevent",
    "dataschema",
    "derive",
    "derived_id",
    "ensure_cloudevent",
    "schema_version",
    "sink_source",
]

Headers = Sequence[tuple[str, bytes | None]]

BACKFILL_HEADER = "databus.backfill"
"""Set (to ``1``) on events a backfill re-published: counted, never alerted on."""

SPECVERSION = "1.0"
AVRO = "application/avro"
CONTENT_TYPE_HEADER = "content-type"
ORIGINID_HEADER = "ce_originid"
"""Extension ``originid``: the ``ce_id`` of the event a derived event was made from."""
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")

PROCESSOR_SOURCE = "urn:databus:processor"
SHARE_SOURCE = "urn:databus:share"
ALERTS_SOURCE = "urn:databus:alerts"
QUALITY_SOURCE = "urn:databus:quality"
REPLAY_SOURCE = "urn:databus:dlq-replay"
DECLARATIONS_TYPE = "vn.gov.databus.control.declaration"

DERIVED_NAMESPACE = uuid.UUID("7f3c1f0e-5b1d-5a54-9a7e-3d6a1c0b9e21")
"""The UUIDv5 namespace of derived event ids (fixed: ids must not change)."""

_SPEC = ("ce_specversion", SPECVERSION.encode())
_PROCESSOR = PROCESSOR_SOURCE.encode()
_AVRO = (CONTENT_TYPE_HEADER, AVRO.encode())


def sink_source(sink_name: str) -> str:
    """The source of what a sink writes (its dead letters)."""
    return f"urn:databus:sink:{sink_name}"


_NS = DERIVED_NAMESPACE.bytes
# The hex digit holding the RFC 4122 variant bits (10xx), from a hash's.
_VARIANT = {f"{i:x}": f"{(i & 0x3) | 0x8:x}" for i in range(16)}


def _uuid5(source: bytes, event_id: bytes, stage: bytes) -> bytes:
    """``uuid.uuid5(DERIVED_NAMESPACE, "<source>\\n<id>\\n<stage>")`` as text, spelled on
    the SHA-1's hex digits (a fifth of ``uuid.uuid5``'s cost: it runs per std event)."""
    h = hashlib.sha1(_NS + source + b"\n" + event_id + b"\n" + stage).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}".encode()


def derived_id(origin_source: str, origin_id: str, stage: str) -> str:
    """The id of the event ``stage`` made from (``origin_source``, ``origin_id``): a
    UUIDv5, the same every time, so a record processed again keeps its id."""
    return _uuid5(origin_source.encode(), origin_id.encode(), stage.encode()).decode()


def dataschema(subject: str, version: int) -> str:
    """``ce_dataschema``: the registry subject and the schema's version in it."""
    return f"urn:databus:schema:{subject}:{version}"


def schema_version(client: SchemaRegistryClient, subject: str, schema_str: str) -> int:
    """The version of ``schema_str`` under ``subject`` (registered already).

    Raises ``RegistryError`` (retriable when the registry cannot be reached)."""
    try:
        found = client.lookup_schema(subject, Schema(schema_str, "AVRO"))
    except Exception as exc:
        status = getattr(exc, "http_status_code", None)
        raise RegistryError(
            f"schema registry: looking up {subject} failed: {exc}",
            retriable=not isinstance(status, int) or status >= 500,
        ) from exc
    if found.version is None:
        raise RegistryError(f"{subject}: the registry returned no version")
    return int(found.version)


def ce_time_text(ms: int) -> str:
    """RFC 3339 text of a UTC instant in epoch milliseconds (``ce_time``)."""
    seconds, millis = divmod(ms, 1000)
    return f"{_time.strftime('%Y-%m-%dT%H:%M:%S', _time.gmtime(seconds))}.{millis:03d}Z"


def cloudevent(
    *,
    id: str,
    source: str,
    type: str,
    time_ms: int,
    content_type: str = AVRO,
    subject: str | None = None,
    schema: str | None = None,
    originid: str | None = None,
) -> list[tuple[str, bytes]]:
    """The binary-mode headers of one event (``schema``: its ``ce_dataschema``)."""
    headers = [
        _SPEC,
        ("ce_id", id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", type.encode()),
        ("ce_time", ce_time_text(time_ms).encode()),
        (CONTENT_TYPE_HEADER, content_type.encode()),
    ]
    if subject:
        headers.append(("ce_subject", subject.encode()))
    if schema:
        headers.append(("ce_dataschema", schema.encode()))
    if originid:
        headers.append((ORIGINID_HEADER, originid.encode()))
    return headers


def _is_ce(name: str) -> bool:
    return name.startswith("ce_") or name == CONTENT_TYPE_HEADER


def attributes(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The CloudEvents headers as text, by header name (the first of a name wins)."""
    out: dict[str, str] = {}
    for name, value in headers or ():
        if _is_ce(name) and name not in out:
            out[name] = (value or b"").decode("utf-8", errors="replace")
    return out


def derive(
    headers: Iterable[tuple[str, bytes | None]],
    *,
    stage: str,
    type: str,
    source: str = PROCESSOR_SOURCE,
    fallback_id: str,
    fallback_source: str,
    time_ms: int,
    schema: str | None = None,
    subject: str | None = None,
) -> list[tuple[str, bytes]]:
    """The headers of the event ``stage`` made from the one with ``headers``.

    The origin is the original's (``ce_source``, ``ce_id``), or (``fallback_source``,
    ``fallback_id``) when it has none (the envelope's ``event_id``, say). Its
    ``ce_time`` is kept (``time_ms`` when it has none): the occurrence is the same
    change. Headers that are no CloudEvents attribute are kept, in order.
    """
    kept: list[tuple[str, bytes]] = []
    origin_id = origin_source = when = None
    for name, value in headers:
        if name.startswith("ce_"):
            if name == "ce_id":
                origin_id = origin_id or value
            elif name == "ce_source":
                origin_source = origin_source or value
            elif name == "ce_time":
                when = when or value
        elif name != CONTENT_TYPE_HEADER:
            kept.append((name, value or b""))
    if not origin_id or not origin_source:
        origin_id, origin_source = fallback_id.encode(), fallback_source.encode()
    out = [
        _SPEC,
        ("ce_id", _uuid5(origin_source, origin_id, stage.encode())),
        ("ce_source", _PROCESSOR if source == PROCESSOR_SOURCE else source.encode()),
        ("ce_type", type.encode()),
        ("ce_time", when or ce_time_text(time_ms).encode()),
        _AVRO,
    ]
    if subject:
        out.append(("ce_subject", subject.encode()))
    if schema:
        out.append(("ce_dataschema", schema.encode()))
    out.append((ORIGINID_HEADER, origin_id))
    out.extend(kept)
    return out


def ensure_cloudevent(
    headers: Iterable[tuple[str, bytes | None]],
    *,
    stage: str,
    source: str,
    type: str,
    fallback_id: str,
    time_ms: int,
    content_type: str = "application/octet-stream",
) -> list[tuple[str, bytes]]:
    """``headers``, completed into a CloudEvent's: kept in order (an empty attribute
    dropped, a ``ce_specversion`` other than 1.0 set to 1.0), the missing attributes
    added after them: ``ce_specversion``, ``ce_id`` = ``derived_id(source, fallback_id,
    stage)`` (``fallback_id``: the record's coordinates, say), ``source``, ``type``,
    ``time_ms``, ``content_type``."""
    out: list[tuple[str, bytes]] = []
    present: set[str] = set()
    for name, value in headers:
        if name in _ALL_SET:
            if not value:
                continue
            if name == "ce_specversion":
                value = _SPEC[1]
            present.add(name)
        out.append((name, value or b""))
    if len(present) == len(_ALL_SET):
        return out
    missing: dict[str, Callable[[], str]] = {
        "ce_specversion": lambda: SPECVERSION,
        "ce_id": lambda: derived_id(source, fallback_id, stage),
        "ce_source": lambda: source,
        "ce_type": lambda: type,
        "ce_time": lambda: ce_time_text(time_ms),
        CONTENT_TYPE_HEADER: lambda: content_type,
    }
    out.extend((name, make().encode()) for name, make in missing.items() if name not in present)
    return out


_ALL_SET = frozenset((*REQUIRED_HEADERS, "ce_time", CONTENT_TYPE_HEADER))
