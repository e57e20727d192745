"""Consume topics in batches, hand them to a sink, commit only after a durable write.

At-least-once: a crash between the write and the commit replays the batch, and
every sink is idempotent, so a replay changes nothing. A retriable failure
(the destination restarting) is retried with exponential backoff and jitter
while the backlog waits in Kafka; nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from tenacity import Retrying, retry_if_exception, stop_never, wait_exponential_jitter

from bus.errors import CodecError, DatabusError, SinkError
from bus.metrics import Metrics
from bus.settings import Settings
from schemas.codec import AvroDeserializer
from sinks.base import Sink, SinkRecord

__all__ = ["SinkRunner", "consumer_config"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def consumer_config(settings: Settings, group: str) -> dict[str, object]:
    return {
        **settings.kafka.client_config(),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
        "partition.assignment.strategy": "cooperative-sticky",
        # Notice topics created after subscribing within seconds, not librdkafka's 5 min.
        "topic.metadata.refresh.interval.ms": 5000,
    }


def _where(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed (non-error) message."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, DatabusError) and exc.retriable


def _retrying(fn: Callable[[], T]) -> T:
    """Call ``fn`` until it succeeds or fails for good: an outage of the destination
    or of the registry makes the backlog wait in Kafka, it never skips records."""
    for attempt in Retrying(
        retry=retry_if_exception(_retriable),
        wait=wait_exponential_jitter(initial=0.2, max=15),
        stop=stop_never,
        reraise=True,
    ):
        with attempt:
            return fn()
    raise AssertionError("unreachable: tenacity re-raises")


class SinkRunner:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        *,
        name: str,
        topics: Sequence[str],
        group: str,
        metrics: Metrics | None = None,
        registry: SchemaRegistryClient | None = None,
        batch_size: int = 500,
    ) -> None:
        self._sink = sink
        self._name = name
        self._topics = list(topics)
        self._metrics = metrics or Metrics()
        self._batch_size = batch_size
        self._consumer = Consumer(consumer_config(settings, group))
        self._decode = AvroDeserializer(
            registry or SchemaRegistryClient(settings.schema_registry.client_config())
        )
        self.records_written = 0
        self._started = False

    def start(self) -> None:
        """Set the sink up and subscribe; ``run`` and the first ``poll_once`` call it."""
        if self._started:
            return
        self._sink.setup()
        self._consumer.subscribe(self._topics)
        self._started = True

    def _decoded(self, messages: list[Message]) -> list[SinkRecord]:
        batch = []
        for msg in messages:
            try:
                value = self._decode(msg.value())
            except CodecError as exc:
                # Only our own processor writes these topics: a bad record here is
                # a bug upstream; count it loudly and keep the partition moving.
                log.error(
                    "%s: undecodable record at %s[%d]@%d: %s",
                    self._name,
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    exc.reason,
                )
                self._metrics.sink_failures.labels(self._name, "undecodable").inc()
                continue
            topic, partition, offset = _where(msg)
            batch.append(SinkRecord(topic, partition, offset, msg.key(), value))
        return batch

    def _write(self, batch: list[SinkRecord]) -> None:
        def attempt() -> None:
            started = time.perf_counter()
            try:
                self._sink.write(batch)
                self._sink.flush()
            except SinkError as exc:
                self._metrics.sink_failures.labels(
                    self._name, "retriable" if exc.retriable else "permanent"
                ).inc()
                log.warning(
                    "%s: write failed (%s)%s",
                    self._name,
                    exc,
                    ", retrying" if exc.retriable else "",
                )
                raise
            self._metrics.sink_batch_seconds.labels(self._name).observe(
                time.perf_counter() - started
            )

        _retrying(attempt)

    def _rewind(self, messages: list[Message]) -> None:
        """Put the consumer back before a batch that was not written, so whoever
        polls next gets it again instead of committing past it."""
        first: dict[tuple[str, int], int] = {}
        for msg in messages:
            topic, partition, offset = _where(msg)
            first[(topic, partition)] = min(first.get((topic, partition), offset), offset)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # partition revoked meanwhile: the group replays it
                log.warning("%s: could not rewind %s[%d]: %s", self._name, topic, partition, exc)

    def _commit(self, messages: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for msg in messages:
            topic, partition, offset = _where(msg)
            last[(topic, partition)] = max(last.get((topic, partition), -1), offset)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        self._consumer.commit(offsets=offsets, asynchronous=False)

    def poll_once(self, timeout: float = 0.5) -> int:
        """Consume, write and commit one batch; returns how many records it wrote."""
        self.start()
        messages = self._consumer.consume(self._batch_size, timeout)
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: consumer error: %s", self._name, err)
        if not good:
            return 0
        try:
            batch = _retrying(lambda: self._decoded(good))
            if batch:
                self._write(batch)
        except BaseException:
            self._rewind(good)
            raise
        if batch:
            for rec in batch:
                dataset = rec.topic.rsplit(".", 2)[0]
                self._metrics.sink_records_written.labels(self._name, dataset).inc()
        self._commit(good)
        self.records_written += len(batch)
        return len(batch)

    def run(self, stop: threading.Event | Callable[[], bool]) -> None:
        should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
        self.start()
        try:
            while not should_stop():
                self.poll_once()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._consumer.close()
        finally:
            self._sink.close()
