"""Dead-letter records: the original bytes, with headers like Kafka Connect's.

Operators and ``databus dlq`` read these headers to see where a record came
from and why it was refused, in English and Vietnamese.

A dead letter too large to write itself (the record was over the broker's limit) is
written without the original bytes (``omitted_dlq_headers``): an empty value, the
original's coordinates, size (``databus.errors.original.size``) and SHA-256
(``databus.errors.original.sha256``), and only the original's short headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bus.errors import CodecError

__all__ = [
    "HEADER_PREFIX",
    "ORIGINAL_SHA256_HEADER",
    "ORIGINAL_SIZE_HEADER",
    "REPLAYS_TOPIC",
    "REPLAY_HEADER",
    "DeadLetter",
    "codec_letter",
    "dlq_headers",
    "omitted_dlq_headers",
]

HEADER_PREFIX = "databus.errors."
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


def dlq_headers(
    original: Iterable[tuple[str, bytes | None]],
    *,
    topic: str,
    partition: int,
    offset: int,
    letter: DeadLetter,
) -> list[tuple[str, bytes]]:
    """The original headers (minus stale error headers) plus the error context."""
    kept = [(k, v or b"") for k, v in original if not k.startswith(HEADER_PREFIX)]
    context = {
        "topic": topic,
        "partition": str(partition),
        "offset": str(offset),
        "stage": letter.stage,
        "reason": letter.reason,
        "field": letter.field,
        "exception.class.name": letter.exception_class,
        "exception.message": letter.message,
        "exception.message.vi": letter.message_vi,
    }
    return kept + [(HEADER_PREFIX + k, v.encode()) for k, v in context.items()]


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
