"""A sink's dead-letter topic, ``sink.<name>.dlq.v1``.

It takes what the destination refused for good and what the sink could not decode:
the original key, bytes and headers plus the processor DLQ's error headers
(stage ``sink:<name>``), so ``databus dlq`` and operators read both alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaError, Message, Producer

from bus.errors import CodecError, DeliveryError
from bus.settings import Settings
from bus.topics import ensure_topics, sink_dlq_spec, sink_dlq_topic
from sinks.base import Rejected, SinkRecord
from stream_processors.dlq import DeadLetter, dlq_headers
from stream_processors.pipeline import codec_letter

__all__ = ["SinkDeadLetters", "SinkLetter", "rejected_letter", "undecodable_letter"]

_REJECTED_VI = {
    "http_4xx": "đích từ chối bản ghi (HTTP 4xx), gửi lại sẽ không khác",
    "db_rejected": "cơ sở dữ liệu từ chối bản ghi",
    "malformed": "bản ghi sai định dạng với đích nhận",
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


class SinkDeadLetters:
    """An idempotent producer to one sink's dead-letter topic."""

    def __init__(self, settings: Settings, sink_name: str) -> None:
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
            }
        )
        self._failed: list[KafkaError] = []

    def ensure_topic(self) -> None:
        ensure_topics(self._settings, [sink_dlq_spec(self._settings, self._sink_name)])

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(err)

    def send(self, letters: Sequence[SinkLetter], timeout: float = 30.0) -> None:
        """Produce ``letters`` and wait until the broker acknowledged every one;
        raises a retriable ``DeliveryError`` otherwise."""
        producer = self._producer
        if producer is None:
            raise DeliveryError(f"{self.topic}: the dead-letter producer is closed")
        self._failed.clear()
        for item in letters:
            rec = item.record
            headers: list[tuple[str, str | bytes | None]] = [
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
                        self.topic,
                        value=rec.raw,
                        key=rec.key,
                        headers=headers,
                        on_delivery=self._on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)  # librdkafka's queue is full: let it drain
        remaining = producer.flush(timeout)
        if remaining or self._failed:
            errors = sorted({str(e) for e in self._failed[:5]})
            self._failed.clear()
            raise DeliveryError(f"{self.topic}: {remaining} unsent, delivery errors {errors}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10.0)
            self._producer = None
