"""A sink's dead-letter topic, ``sink.<name>.dlq.v1``.

It takes what the destination refused for good and what the sink could not decode:
the original key, bytes and headers plus the processor DLQ's error headers
(stage ``sink:<name>``), so ``databus dlq`` and operators read both alike.

A letter too large for the topic itself (the producer or the broker refuses it as
``MSG_SIZE_TOO_LARGE``) is sent again without the bytes: no value, of the original
headers only its CloudEvents attributes, the error headers plus
``databus.errors.original.size`` (bytes) and
``databus.errors.original.sha256`` (hex digest of the value), so the record can be
found again at its coordinates (topic, partition, offset) and checked against it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bus.errors import CodecError, DeliveryError
from bus.settings import Settings
from bus.topic_admin import ensure_topics
from schemas.dead_letters import (
    ORIGINAL_SHA256_HEADER,
    ORIGINAL_SIZE_HEADER,
    DeadLetter,
    codec_letter,
    dlq_headers,
)
from schemas.topics import sink_dlq_spec, sink_dlq_topic
from sinks.base import Rejected, SinkRecord

__all__ = [
    "SinkDeadLetters",
    "SinkLetter",
    "digest_headers",
    "rejected_letter",
    "undecodable_letter",
]

log = logging.getLogger(__name__)

# a digest letter's texts are cut to this, so it always fits
_DIGEST_TEXT_MAX = 1000
_DIGEST_KEY_MAX = 1024
_DIGEST_HEADER_MAX = 256  # an original CloudEvents header kept on a digest letter

_REJECTED_VI = {
    "http_4xx": "đích từ chối bản ghi (HTTP 4xx), gửi lại sẽ không khác",
    "db_rejected": "cơ sở dữ liệu từ chối bản ghi",
    "malformed": "bản ghi sai định dạng với đích nhận",
    "sink_crashed": "bản ghi làm sink gặp lỗi không xử lý được",
    "event_id_reused": "mã sự kiện đã có trong lịch sử cho một đối tượng hoặc phiên bản khác",
}
_REJECTED_VI_DEFAULT = "đích nhận từ chối bản ghi vĩnh viễn"


@dataclass(frozen=True, slots=True)
class SinkLetter:
    """A record bound for the dead-letter topic; an undecodable one has an empty value."""

    record: SinkRecord
    letter: DeadLetter
    kind: Literal["rejected", "undecodable"] = "rejected"


def sink_stage(sink_name: str) -> str:
    return f"sink:{sink_name}"


def rejected_letter(sink_name: str, rejected: Rejected) -> DeadLetter:
    return DeadLetter(
        stage=sink_stage(sink_name),
        reason=rejected.reason,
        exception_class=rejected.exception_class or "Rejected",
        message=rejected.message,
        message_vi=_REJECTED_VI.get(rejected.reason, _REJECTED_VI_DEFAULT),
    )


def undecodable_letter(sink_name: str, exc: CodecError) -> DeadLetter:
    """The processor's decode letter (same reason codes and Vietnamese text), at the sink."""
    return dataclasses.replace(codec_letter(exc), stage=sink_stage(sink_name))


def digest_headers(item: SinkLetter) -> list[tuple[str, bytes]]:
    """The headers of a letter sent without its bytes: where the record is, why it
    was refused, and its size and SHA-256; of the original headers only the short
    CloudEvents attributes (the letter is still the original event, without data)."""
    rec = item.record
    letter = dataclasses.replace(
        item.letter,
        message=(
            f"payload omitted ({len(rec.raw)} bytes, too large for the dead-letter topic): "
            f"{item.letter.message}"
        )[:_DIGEST_TEXT_MAX],
        field=item.letter.field[:_DIGEST_TEXT_MAX],
    )
    event = [
        (k, v)
        for k, v in rec.headers
        if (k.startswith("ce_") or k == "content-type") and len(v) <= _DIGEST_HEADER_MAX
    ]
    headers = dlq_headers(
        event, topic=rec.topic, partition=rec.partition, offset=rec.offset, letter=letter
    )
    return [
        *headers,
        (ORIGINAL_SIZE_HEADER, str(len(rec.raw)).encode()),
        (ORIGINAL_SHA256_HEADER, hashlib.sha256(rec.raw).hexdigest().encode()),
    ]


class SinkDeadLetters:
    """An idempotent producer to one sink's dead-letter topic."""

    def __init__(self, settings: Settings, sink_name: str, *, max_bytes: int | None = None) -> None:
        """``max_bytes``: the producer's ``message.max.bytes`` (default librdkafka's,
        1 MB, the broker's default too); a larger letter is sent as its digest."""
        self._settings = settings
        self._sink_name = sink_name
        self.topic = sink_dlq_topic(sink_name)
        self._producer: Producer | None = Producer(
            {
                **settings.kafka.client_config(),
                "acks": "all",
                "enable.idempotence": True,
                # Same partition for a key as Java clients and Faust would pick.
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                **({} if max_bytes is None else {"message.max.bytes": max_bytes}),
            }
        )
        self._failed: list[KafkaError] = []

    def ensure_topic(self) -> None:
        ensure_topics(self._settings, [sink_dlq_spec(self._settings, self._sink_name)])

    def send(self, letters: Sequence[SinkLetter], timeout: float = 30.0) -> None:
        """Produce ``letters`` and wait until the broker acknowledged every one (a
        letter too large for the topic as its digest); raises a retriable
        ``DeliveryError`` otherwise."""
        producer = self._producer
        if producer is None:
            raise DeliveryError(f"{self.topic}: the dead-letter producer is closed")
        self._failed.clear()
        too_large: list[SinkLetter] = []
        for item in letters:
            if not self._produce(producer, item, too_large, digest=False):
                too_large.append(item)
        self._wait(producer, timeout)
        while too_large:
            # refused by the producer or the broker for its size: the digest instead
            retry, too_large = too_large, []
            for item in retry:
                rec = item.record
                log.warning(
                    "%s: letter for %s[%d]@%d too large (%d bytes): sent as its digest",
                    self.topic,
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    len(rec.raw),
                )
                if not self._produce(producer, item, too_large, digest=True):
                    raise DeliveryError(f"{self.topic}: even the digest letter is too large")
            self._wait(producer, timeout)
            if too_large:
                raise DeliveryError(f"{self.topic}: the broker refused a digest letter")

    def _produce(
        self,
        producer: Producer,
        item: SinkLetter,
        too_large: list[SinkLetter],
        *,
        digest: bool,
    ) -> bool:
        """Queue one letter; False when the producer refuses it for its size."""
        rec = item.record

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                return
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and not digest:
                too_large.append(item)
            else:
                self._failed.append(err)

        if digest:
            value: bytes | None = None
            key = rec.key if rec.key is not None and len(rec.key) <= _DIGEST_KEY_MAX else None
            headers: list[tuple[str, str | bytes | None]] = [*digest_headers(item)]
        else:
            value, key = rec.raw, rec.key
            headers = [
                *dlq_headers(
                    rec.headers,
                    topic=rec.topic,
                    partition=rec.partition,
                    offset=rec.offset,
                    letter=item.letter,
                )
            ]
        while True:
            try:
                producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=delivered
                )
                return True
            except BufferError:
                producer.poll(0.05)  # librdkafka's queue is full: let it drain
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    return False
                raise DeliveryError(f"{self.topic}: produce failed: {err}") from exc

    def _wait(self, producer: Producer, timeout: float) -> None:
        remaining = producer.flush(timeout)
        if remaining or self._failed:
            errors = sorted({str(e) for e in self._failed[:5]})
            self._failed.clear()
            raise DeliveryError(f"{self.topic}: {remaining} unsent, delivery errors {errors}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10.0)
            self._producer = None
