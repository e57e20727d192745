"""Dead-letter records: the original bytes, with Kafka Connect's error headers.

A dead letter carries the original key, bytes and headers, plus the error context
under Kafka Connect's header names (KIP-298, KIP-610), so Connect tooling reads it:

- ``__connect.errors.topic`` / ``.partition`` / ``.offset``: where the record was read;
- ``__connect.errors.connector.name`` (``databus-processor`` or ``sink.<name>``) and
  ``__connect.errors.task.id`` (``0``);
- ``__connect.errors.stage``: Connect's stage name (``VALUE_CONVERTER``,
  ``TRANSFORMATION``, ``KAFKA_PRODUCE``, ``TASK_PUT``) and
  ``__connect.errors.class.name``: the bus component of that stage;
- ``__connect.errors.exception.class.name`` and ``.exception.message``.

Beside them, the bus's own: ``databus.errors.stage`` (``decode``, ``standardize``,
``dedup``, ``encode``, ``produce``, ``sink:<name>``), ``databus.errors.reason`` (the
reason code), ``databus.errors.field`` and ``databus.errors.exception.message.vi``.
Letters written before these names carried everything under ``databus.errors.``
(``databus.errors.topic`` …); ``error_context`` reads both.

The letter keeps the original's CloudEvents headers: it is the same event, delivered
to the dead-letter topic. One whose original had none gets its own
(``schemas.headers.ensure_cloudevent``).

Operators and ``databus dlq`` read these headers to see where a record came
from and why it was refused, in English and Vietnamese.

A dead letter too large to write itself (the record was over the broker's limit) is
written without the original bytes (``omitted_dlq_headers``): an empty value, the
original's coordinates, size (``databus.errors.original.size``) and SHA-256
(``databus.errors.original.sha256``), and only the original's short headers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from bus.errors import CodecError
from schemas.headers import PROCESSOR_SOURCE, ensure_cloudevent, sink_source

__all__ = [
    "CONNECT_PREFIX",
    "DEADLETTER_TYPE",
    "HEADER_PREFIX",
    "ORIGINAL_SHA256_HEADER",
    "ORIGINAL_SIZE_HEADER",
    "PROCESSOR_CONNECTOR",
    "REPLAYS_TOPIC",
    "REPLAY_HEADER",
    "DeadLetter",
    "codec_letter",
    "connect_stage",
    "dlq_headers",
    "error_context",
    "is_error_header",
    "omitted_dlq_headers",
]

HEADER_PREFIX = "databus.errors."
CONNECT_PREFIX = "__connect.errors."
PROCESSOR_CONNECTOR = "databus-processor"
DEADLETTER_TYPE = "vn.gov.databus.deadletter"
"""``ce_type`` of a dead letter whose original was no CloudEvent."""
# Set by `databus dlq replay` on a re-published record: "<dlq topic>:<partition>:<offset>".
# dlq_headers keeps it, so a replayed record that fails again shows which letter it was.
REPLAY_HEADER = "databus.replay.of"
# What `databus dlq replay` has re-published, one record per letter (key = the
# REPLAY_HEADER value), so a second replay of the same letter sends nothing.
REPLAYS_TOPIC = "control.dlq_replays.v1"
# Set on a dead letter written without the original bytes: their size and digest.
ORIGINAL_SIZE_HEADER = HEADER_PREFIX + "original.size"
ORIGINAL_SHA256_HEADER = HEADER_PREFIX + "original.sha256"
_KEPT_HEADER_BYTES = 256  # a digest-only dead letter keeps original headers up to this size
_KEPT_HEADERS = 32


@dataclass(frozen=True)
class DeadLetter:
    """Why a record was refused; ``field`` is a field name, never a value."""

    stage: str
    reason: str
    exception_class: str
    message: str
    message_vi: str = ""
    field: str = ""


def is_error_header(name: str) -> bool:
    """An error-context header, of this writer or an older one."""
    return name.startswith(HEADER_PREFIX) or name.startswith(CONNECT_PREFIX)


def connect_stage(letter: DeadLetter) -> tuple[str, str]:
    """(Connect's stage name, the component's class) of where ``letter`` was refused."""
    stage = letter.stage
    if letter.exception_class == "CodecError" or stage == "decode":
        return "VALUE_CONVERTER", "schemas.codec.serde.AvroDeserializer"
    if stage == "encode":
        return "VALUE_CONVERTER", "schemas.codec.serde.AvroSerializer"
    if stage == "produce":
        return "KAFKA_PRODUCE", "stream_processors.batch_loop.BatchLoop"
    if stage.startswith("sink:"):
        return "TASK_PUT", "sinks.runner.SinkRunner"
    if stage == "standardize":
        return "TRANSFORMATION", "stream_processors.pipeline.DatasetPipeline"
    return "TRANSFORMATION", "stream_processors.batch_core.BatchCore"


def _connector(letter: DeadLetter) -> tuple[str, str]:
    """(``connector.name``, CloudEvents source) of the writer of ``letter``."""
    if letter.stage.startswith("sink:"):
        name = letter.stage.removeprefix("sink:")
        return f"sink.{name}", sink_source(name)
    return PROCESSOR_CONNECTOR, PROCESSOR_SOURCE


def dlq_headers(
    original: Iterable[tuple[str, bytes | None]],
    *,
    topic: str,
    partition: int,
    offset: int,
    letter: DeadLetter,
    time_ms: int | None = None,
) -> list[tuple[str, bytes]]:
    """The original headers (minus stale error headers, a CloudEvent's set completed)
    plus the error context: Connect's names and the bus's own."""
    kept = [(k, v or b"") for k, v in original if not is_error_header(k)]
    connector, source = _connector(letter)
    kept = ensure_cloudevent(
        kept,
        stage="dlq",
        source=source,
        type=DEADLETTER_TYPE,
        fallback_id=f"{topic}:{partition}:{offset}",
        time_ms=time.time_ns() // 1_000_000 if time_ms is None else time_ms,
    )
    stage, class_name = connect_stage(letter)
    context = {
        CONNECT_PREFIX + "topic": topic,
        CONNECT_PREFIX + "partition": str(partition),
        CONNECT_PREFIX + "offset": str(offset),
        CONNECT_PREFIX + "connector.name": connector,
        CONNECT_PREFIX + "task.id": "0",
        CONNECT_PREFIX + "stage": stage,
        CONNECT_PREFIX + "class.name": class_name,
        CONNECT_PREFIX + "exception.class.name": letter.exception_class,
        CONNECT_PREFIX + "exception.message": letter.message,
        HEADER_PREFIX + "stage": letter.stage,
        HEADER_PREFIX + "reason": letter.reason,
        HEADER_PREFIX + "field": letter.field,
        HEADER_PREFIX + "exception.message.vi": letter.message_vi,
    }
    return kept + [(k, v.encode()) for k, v in context.items()]


# What each error-context field was called before the Connect names: read both.
_OLD_NAMES = {
    "topic": HEADER_PREFIX + "topic",
    "partition": HEADER_PREFIX + "partition",
    "offset": HEADER_PREFIX + "offset",
    "exception.class.name": HEADER_PREFIX + "exception.class.name",
    "exception.message": HEADER_PREFIX + "exception.message",
}


def error_context(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """A dead letter's error context by field (``topic``, ``partition``, ``offset``,
    ``stage``, ``reason``, ``field``, ``exception.class.name``, ``exception.message``,
    ``exception.message.vi``, ``original.size``, ``original.sha256``, and Connect's
    ``connect.stage``, ``connector.name``, ``task.id``, ``class.name``), from the
    Connect names or the older ``databus.errors.*`` ones; the last header of a name
    wins (a hand-made record may carry stale ones)."""
    bus: dict[str, str] = {}
    connect: dict[str, str] = {}
    for name, value in headers or ():
        text = "" if value is None else value.decode("utf-8", errors="replace")
        if name.startswith(CONNECT_PREFIX):
            connect[name.removeprefix(CONNECT_PREFIX)] = text
        elif name.startswith(HEADER_PREFIX):
            bus[name.removeprefix(HEADER_PREFIX)] = text
    out = dict(bus)  # the old letters' topic/partition/… and the bus's own fields
    for field in _OLD_NAMES:
        if field in connect:
            out[field] = connect[field]
    for field in ("connector.name", "task.id", "class.name"):
        if field in connect:
            out[field] = connect[field]
    if "stage" in connect:
        out["connect.stage"] = connect["stage"]
    return out


def omitted_dlq_headers(
    original: Iterable[tuple[str, bytes | None]],
    *,
    topic: str,
    partition: int,
    offset: int,
    letter: DeadLetter,
    size: int,
    sha256: str,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter written without the original bytes: the original's
    short headers (``ce_id`` and the like), the error context, its size and digest."""
    short = [(k, v) for k, v in original if len(k) + len(v or b"") <= _KEPT_HEADER_BYTES]
    headers = dlq_headers(
        short[:_KEPT_HEADERS], topic=topic, partition=partition, offset=offset, letter=letter
    )
    return [
        *headers,
        (ORIGINAL_SIZE_HEADER, str(size).encode()),
        (ORIGINAL_SHA256_HEADER, sha256.encode()),
    ]


_CODEC_VI = {
    "empty_value": "bản ghi không có giá trị",
    "truncated_header": "thiếu phần đầu 5 byte",
    "bad_magic_byte": "byte đầu không phải định dạng Confluent",
    "unknown_schema_id": "mã lược đồ không có trong kho lược đồ",
    "wrong_schema": "bản ghi thuộc lược đồ của bộ dữ liệu khác",
    "truncated_payload": "dữ liệu Avro bị cắt cụt",
    "trailing_bytes": "còn dư byte sau bản ghi",
    "invalid_utf8": "chuỗi không phải UTF-8",
    "invalid_avro": "dữ liệu Avro không hợp lệ",
    "not_avro": "lược đồ không phải Avro",
}


def codec_letter(exc: CodecError) -> DeadLetter:
    return DeadLetter(
        stage="decode",
        reason=exc.reason,
        exception_class=type(exc).__name__,
        message=str(exc),
        message_vi=_CODEC_VI.get(exc.reason, "bản ghi không giải mã được"),
    )
