"""The producer library: source systems hand pydantic models to a ``Publisher``.

Each change is validated and encoded by the dataset's ``EventEncoder``
(``producers/publisher/encoding.py``) and produced by an idempotent producer with
``acks=all``.

Without a spool (``DATABUS_SPOOL__PATH`` unset), delivery failures are collected
from the delivery reports and raised by ``flush()`` / ``close()``: nothing fails
silently, but events not yet acknowledged die with the process.

With a spool, the design is write-ahead: ``publish()`` returns only once the
encoded event is durable in the spool (``producers.spool``); the producer is fed
from the spool in sequence order by ``producers.spool_pump.SpoolPump`` and a
successful delivery report deletes the row.
A failed delivery is never dropped: the row stays, and once every record in flight
has reported, the Publisher rewinds and produces the whole spool again from its
oldest row, so order per key holds (librdkafka's idempotent producer keeps order
within a partition, and a failure of one record fails those queued behind it on
the same partition). A new Publisher on a non-empty spool (after a crash or a
restart) sends what is there before anything newer. There is no background
thread: the spool is drained from ``publish()``, ``poll()`` and ``flush()``.

Guarantee with a spool: every event ``publish()`` accepted reaches the topic at
least once, in per-key order, across broker outages and publisher crashes, as long
as some Publisher later runs on the same spool file. Duplicates are possible when
the process dies (or a delivery report is lost) between the broker's write and the
spool's delete; acknowledgements are applied after every poll to keep that window
short. Each copy carries the same ``ce_id`` header (= envelope ``event_id``), so
consumers deduplicate on it. A full spool raises ``SpoolFullError``: the event was
not accepted and nothing accepted is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from prometheus_client import Counter
from pydantic import BaseModel

from bus import tracing
from bus.errors import DeliveryError, PublishValidationError
from bus.kafka_client import producer_config, registry_client
from bus.metrics import Metrics
from bus.settings import Settings
from producers.publisher.encoding import Change, EncodedEvent, EventEncoder, Headers
from producers.spool import Spool, SpoolRecord
from producers.spool_pump import SpoolPump
from schemas.catalog import DATASETS, Dataset, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.models.common import Op

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

_RAW_TOPIC_DATASET = {ds.raw_topic: ds.id for ds in DATASETS.values()}


class Publisher:
    def __init__(
        self,
        settings: Settings,
        *,
        source_system: str,
        registry: SchemaRegistryClient | None = None,
        metrics: Metrics | None = None,
        extra_headers: Sequence[tuple[str, bytes]] = (),
        **producer_overrides: Any,
    ) -> None:
        self._source_system = source_system
        # Each event's trace starts in encode: exported when OTEL_EXPORTER_OTLP_ENDPOINT is
        # set (a process that configured tracing already keeps its own name).
        tracing.configure("databus-publisher")
        # added to every event's headers (e.g. the backfill mark, producers/backfill.py)
        self._extra_headers = tuple(extra_headers)
        # A registry client made here is closed with this object; one passed in is the caller's.
        registry, self._owned_registry = registry_client(settings, registry)
        self._registry = registry
        # The spool first: a spool in use elsewhere stops us before any connection opens.
        spool_path = settings.spool.path
        spool = Spool(spool_path, settings.spool.max_bytes) if spool_path is not None else None
        producer_conf = producer_config(settings, **producer_overrides)
        self._max_bytes = int(producer_conf["message.max.bytes"])
        self._metrics = metrics or Metrics()
        # Labelled children looked up once per dataset, not once per delivery report.
        self._produced: dict[str, Counter] = {}
        self._failed: dict[str, Counter] = {}
        self._encoders: dict[str, EventEncoder] = {}
        self._failures: list[tuple[str, KafkaError]] = []
        self._acks: dict[str, int] = {}  # acknowledged since the metric was last updated
        self._closed = False
        self._producer: Producer | None = None
        self._pump: SpoolPump | None = None
        if spool is None:
            # Every report goes to one bound method (with a spool, the pump gives
            # each record its own callback: it must know its spool row).
            producer_conf["on_delivery"] = self._on_delivery
            self._producer = Producer(producer_conf)
        else:
            self._pump = SpoolPump(
                spool,
                producer_conf,
                on_delivered=lambda topic: self._produced_counter(topic).inc(),
                on_failed=lambda topic: self._failed_counter(topic).inc(),
            )

    @property
    def extra_headers(self) -> tuple[tuple[str, bytes], ...]:
        """The headers added to every event (after the CloudEvents ones)."""
        return self._extra_headers

    def encoder(self, dataset: Dataset) -> EventEncoder:
        """The dataset's encoder as this Publisher uses it (its schema registered on
        the first event)."""
        encoder = self._encoders.get(dataset.id)
        if encoder is None:
            serializer = AvroSerializer(
                self._registry, value_subject(dataset.raw_topic), load_schema(dataset.raw_schema)
            )
            encoder = self._encoders[dataset.id] = EventEncoder(
                dataset,
                serializer,
                source_system=self._source_system,
                max_bytes=self._max_bytes,
                extra_headers=self._extra_headers,
            )
        return encoder

    def publish(
        self,
        dataset: Dataset,
        after: BaseModel | None,
        *,
        version: int,
        op: Op = Op.CREATE,
        before: BaseModel | None = None,
        changed_at: datetime | None = None,
        unit: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Validate, encode and enqueue one change event; returns its event id.

        Raises ``PublishValidationError`` (nothing sent) for an invalid model.
        Delivery is asynchronous: ``flush()`` waits for it and raises on failures.
        """
        self._check_open()
        encoder = self._encoders.get(dataset.id) or self.encoder(dataset)
        event = encoder.encode(
            after,
            version=version,
            op=op,
            before=before,
            changed_at=changed_at,
            unit=unit,
            event_id=event_id,
        )
        if self._pump is not None:
            self._pump.append([_spool_record(encoder.topic, event)])
        else:
            self._produce(encoder.topic, event.key, event.value, event.headers)
        return event.event_id

    def publish_many(self, dataset: Dataset, changes: Iterable[Change]) -> list[str]:
        """Validate and encode every change, then enqueue them all; returns their event ids.

        All or nothing at acceptance: an invalid change raises ``PublishValidationError``
        naming its index, and nothing of the batch is sent. With a spool the whole
        batch is kept in one transaction (``SpoolFullError``: none of it was accepted).
        Per-key order is the order of ``changes``.
        """
        self._check_open()
        encoder = self._encoders.get(dataset.id) or self.encoder(dataset)
        encode = encoder.encode
        encoded: list[EncodedEvent] = []
        append = encoded.append
        for index, c in enumerate(changes):
            try:
                append(
                    encode(
                        c.after,
                        version=c.version,
                        op=c.op,
                        before=c.before,
                        changed_at=c.changed_at,
                        unit=c.unit,
                        event_id=c.event_id,
                    )
                )
            except PublishValidationError as exc:
                raise type(exc)(
                    f"change {index} of the batch: {exc}; nothing of the batch was sent"
                ) from None
        if not encoded:
            return []
        topic = encoder.topic
        if self._pump is not None:
            self._pump.append([_spool_record(topic, e) for e in encoded])
        else:
            produce = self._produce
            for key, value, headers, _ in encoded:
                produce(topic, key, value, headers)
        return [e.event_id for e in encoded]

    def _check_open(self) -> None:
        if self._closed:
            raise DeliveryError("publisher is closed", retriable=False)

    @property
    def spool_path(self) -> Path | None:
        """The spool this Publisher writes ahead to (``DATABUS_SPOOL__PATH``), if any."""
        return self._pump.path if self._pump is not None else None

    @property
    def spooled(self) -> int:
        """Events accepted but not yet acknowledged by the broker (0 without a spool)."""
        return len(self._pump) if self._pump is not None else 0

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports and keep the spool draining; call it when idle."""
        if self._pump is not None:
            self._pump.service(timeout)
        elif self._producer is not None and self._producer.poll(timeout):
            self._count_acks()

    def _produced_counter(self, topic: str) -> Counter:
        counter = self._produced.get(topic)
        if counter is None:
            dataset_id = _RAW_TOPIC_DATASET.get(topic, "unknown")
            counter = self._produced[topic] = self._metrics.events_produced.labels(
                dataset_id, "raw"
            )
        return counter

    def _failed_counter(self, topic: str) -> Counter:
        counter = self._failed.get(topic)
        if counter is None:
            dataset_id = _RAW_TOPIC_DATASET.get(topic, "unknown")
            counter = self._failed[topic] = self._metrics.delivery_failures.labels(dataset_id)
        return counter

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Every delivery report without a spool (the producer's default callback).

        One bound method instead of a closure per event; acknowledgements are only
        counted here and added to the metric after each poll that served some.
        """
        topic = msg.topic() or ""
        if err is None:
            acks = self._acks
            acks[topic] = acks.get(topic, 0) + 1
            return
        self._failures.append((self._event_id_of(topic, msg.value()), err))
        self._failed_counter(topic).inc()

    def _event_id_of(self, topic: str, value: bytes | None) -> str:
        """The event id inside a framed value (delivery reports carry no headers)."""
        encoder = next((e for e in self._encoders.values() if e.topic == topic), None)
        found = None if encoder is None else encoder.event_id_of(value)
        return found or "(unknown event)"

    def _count_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, {}
            for topic, n in acks.items():
                self._produced_counter(topic).inc(n)

    def _produce(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        producer = self._producer
        assert producer is not None  # without a spool
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room.
                producer.poll(0.1)
                self._count_acks()
        if producer.poll(0):
            self._count_acks()

    @property
    def failures(self) -> list[tuple[str, KafkaError]]:
        return list(self._failures)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every enqueued event; raise ``DeliveryError`` if any was not acknowledged.

        With a spool, failed deliveries are re-sent until ``timeout``; what is still
        unacknowledged then stays in the spool (nothing is lost) and the error says so.
        """
        if self._pump is not None:
            self._pump.flush(timeout)
            return
        producer = self._producer
        assert producer is not None
        deadline = time.monotonic() + timeout
        while (remaining := producer.flush(max(0.0, deadline - time.monotonic()))) > 0:
            self._count_acks()
            if time.monotonic() >= deadline:
                raise DeliveryError(
                    f"{remaining} events still unacknowledged after {timeout:.0f} s"
                )
        self._count_acks()
        if self._failures:
            failures, self._failures = self._failures, []
            first_id, first_err = failures[0]
            raise DeliveryError(
                f"{len(failures)} events were not delivered (first: {first_id}: {first_err.str()})",
                retriable=first_err.retriable(),
            )

    def close(self, timeout: float = 60.0) -> None:
        """Flush within ``timeout``; with a spool, what is left stays there for next time."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pump is not None:
                self._pump.close(timeout)
                return
            try:
                self.flush(timeout)
            finally:
                # Release the broker connections now, not whenever the object is collected
                # (Producer.close exists from confluent-kafka 2.12).
                close = getattr(self._producer, "close", None)
                if close is not None:
                    close()
        finally:
            if self._owned_registry is not None:
                self._owned_registry.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _spool_record(topic: str, event: EncodedEvent) -> SpoolRecord:
    headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in event.headers]
    return SpoolRecord(topic, event.key, event.value, headers, event.event_id)
