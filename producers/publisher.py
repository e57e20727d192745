"""The producer library: source systems hand pydantic models to a ``Publisher``.

A model is validated again right before sending (models can be built with
``model_construct`` or come from elsewhere), wrapped in the Debezium-style
envelope, encoded with the registry, and produced by an idempotent producer
with ``acks=all``.

Without a spool (``DATABUS_SPOOL__PATH`` unset), delivery failures are collected
from the delivery reports and raised by ``flush()`` / ``close()``: nothing fails
silently, but events not yet acknowledged die with the process.

With a spool, the design is write-ahead: ``publish()`` returns only once the
encoded event is durable in the spool (``producers.spool``); the producer is fed
from the spool in sequence order and a successful delivery report deletes the row.
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

import asyncio
import io
import logging
import time
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from enum import Enum
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from uuid import UUID

import fastavro
import pydantic
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from prometheus_client import Counter
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from bus.errors import DeliveryError, PublishValidationError, RecordTooLargeError
from bus.kafka_client import producer_config
from bus.metrics import Metrics
from bus.settings import Settings
from producers.headers import HeaderTemplate, new_ids, new_traceparent
from producers.spool import Spool, SpoolRecord
from schemas.catalog import DATASETS, Dataset, load_schema, value_subject
from schemas.codec.serde import AvroSerializer, frame, unframe
from schemas.models.common import Op

__all__ = ["AsyncPublisher", "Change", "Publisher", "record_size"]

log = logging.getLogger(__name__)

# How many spooled records are handed to librdkafka at once: bounds memory when a
# large spool drains, and how much is re-sent after a rewind.
_IN_FLIGHT_MAX = 10_000
_PEEK_BATCH = 1_000
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
_T = TypeVar("_T")
_RAW_TOPIC_DATASET = {ds.raw_topic: ds.id for ds in DATASETS.values()}


# librdkafka's bound on a v2 record's framing (length, attributes, deltas, counts).
_RECORD_OVERHEAD = 64


def record_size(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, str | bytes | None]]
) -> int:
    """An upper bound of what librdkafka counts against ``message.max.bytes``: key,
    value and headers, each with its length prefix, plus the record's framing."""
    size = _RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, header in headers:
        size += 10 + len(name.encode()) + len(header or b"")
    return size


@dataclass(frozen=True, slots=True)
class Change:
    """One change event for ``Publisher.publish_many``: ``publish``'s arguments."""

    after: BaseModel | None
    version: int
    op: Op = Op.CREATE
    before: BaseModel | None = None
    changed_at: datetime | None = None
    unit: str | None = None
    event_id: str | None = None


# One validated, encoded event: (key, framed value, headers, event id).
_Encoded = tuple[bytes, bytes, list[tuple[str, str | bytes | None]], str]

_PLAIN_TYPES = (
    str,
    int,
    float,
    bool,
    bytes,
    date,
    datetime,
    time_of_day,
    Decimal,
    UUID,
    # pydantic's constrained dates and times validate to plain date/datetime objects
    pydantic.AwareDatetime,
    pydantic.NaiveDatetime,
    pydantic.PastDate,
    pydantic.FutureDate,
    pydantic.PastDatetime,
    pydantic.FutureDatetime,
)


def _plain(annotation: Any) -> bool:
    """A field type whose validated value is what ``model_dump(mode="python")`` gives."""
    if annotation is None or annotation is type(None) or annotation is Any:
        return annotation is not Any
    origin = typing.get_origin(annotation)
    if origin is None:
        return isinstance(annotation, type) and (
            issubclass(annotation, Enum) or annotation in _PLAIN_TYPES
        )
    if origin is typing.Annotated:
        return _plain(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        return all(a is Ellipsis or _plain(a) for a in typing.get_args(annotation))
    return False


def _dict_is_dump(model: type[BaseModel]) -> bool:
    """Whether a validated instance's ``__dict__`` is its python-mode ``model_dump``.

    True for plain models (scalars, enums, dates, lists of them; no nested models,
    serializers, aliases or computed fields): then the dump (~1.5 µs) is skipped.
    """
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers:
        return False
    if model.model_computed_fields or model.model_config.get("extra") == "allow":
        return False
    return all(
        f.alias is None and f.serialization_alias is None and not f.exclude and _plain(f.annotation)
        for f in model.model_fields.values()
    )


class _Coder:
    """What a dataset's events share: validator, encoder, framing, headers, key."""

    __slots__ = (
        "dataset",
        "dict_is_dump",
        "encode",
        "key_field",
        "model",
        "prefix",
        "record_name",
        "serializer",
        "templates",
        "topic",
        "validate",
    )

    def __init__(self, dataset: Dataset, serializer: AvroSerializer) -> None:
        self.dataset = dataset
        self.model = dataset.model
        # The model's own validator, on the instance's field values (one pass, no dump).
        self.validate: Callable[[Any], BaseModel] = (
            self.model.__pydantic_validator__.validate_python
        )
        self.dict_is_dump = _dict_is_dump(self.model)
        self.serializer = serializer
        self.encode = serializer.encode_body
        self.record_name = serializer.union_record_name("after")
        self.topic = dataset.raw_topic
        self.key_field = dataset.key_fields[0] if len(dataset.key_fields) == 1 else None
        self.prefix: bytes | None = None  # the Confluent header, once the schema is registered
        self.templates: dict[tuple[str, str], HeaderTemplate] = {}

    def branch(self, record: dict[str, Any] | None) -> Any:
        # Name the union branch (fastavro's tuple notation) instead of letting the
        # writer find it by checking the record against each branch.
        if record is None or self.record_name is None:
            return record
        return (self.record_name, record)


def _validation_message(model: BaseModel, exc: PydanticValidationError) -> str:
    # Field names and messages only: input values may hold personal data.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(model)'}: {err['msg']}" for err in exc.errors()
    )
    return f"invalid {type(model).__name__}, nothing was sent: {problems}"


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
        # added to every event's headers (e.g. the backfill mark, producers/backfill.py)
        self._extra_headers = list(extra_headers)
        self._header_slack = 4096 + record_size(None, None, self._extra_headers)
        self._registry = registry or SchemaRegistryClient(settings.schema_registry.client_config())
        # The spool first: a spool in use elsewhere stops us before any connection opens.
        spool_path = settings.spool.path
        spool = Spool(spool_path, settings.spool.max_bytes) if spool_path is not None else None
        self._producer_conf = producer_config(settings, **producer_overrides)
        self._max_bytes = int(self._producer_conf["message.max.bytes"])
        if spool is None:
            # Without a spool every report goes to one bound method; with one, each
            # record carries its own callback (it must know its spool row).
            self._producer_conf["on_delivery"] = self._on_delivery
        self._producer = Producer(self._producer_conf)
        self._metrics = metrics or Metrics()
        # Labelled children looked up once per dataset, not once per delivery report.
        self._produced: dict[str, Counter] = {}
        self._failed: dict[str, Counter] = {}
        self._coders: dict[str, _Coder] = {}
        self._failures: list[tuple[str, KafkaError]] = []
        self._acks: dict[str, int] = {}  # acknowledged since the metric was last updated
        self._closed = False
        # Spool state: rows up to `_cursor` were handed to the producer; `_in_flight`
        # of them have not reported yet; `_rewind` is set by a failed delivery.
        self._spool = spool
        self._cursor = 0
        self._in_flight = 0
        self._rewind = False
        self._recreate = False
        self._delivered: list[int] = []
        self._last_error: KafkaError | None = None
        if self._spool is not None:
            if len(self._spool):
                log.info(
                    "spool %s holds %d events from an earlier run; sending them first",
                    self._spool.path,
                    len(self._spool),
                )
            self._service(0)

    def _coder(self, dataset: Dataset) -> _Coder:
        coder = self._coders.get(dataset.id)
        if coder is None:
            ser = AvroSerializer(
                self._registry, value_subject(dataset.raw_topic), load_schema(dataset.raw_schema)
            )
            coder = self._coders[dataset.id] = _Coder(dataset, ser)
        return coder

    def _validated(self, coder: _Coder, model: BaseModel | None) -> dict[str, Any] | None:
        if model is None:
            return None
        if not isinstance(model, coder.model):
            raise PublishValidationError(
                f"dataset {coder.dataset.id} takes {coder.model.__name__}, "
                f"got {type(model).__name__}"
            )
        # Validated again on every event, even an instance pydantic built: nothing on
        # an instance tells a validated one from one built by `model_construct` or
        # changed by `model_copy(update=...)` (neither validates), and the fields-set
        # bookkeeping is the same for all of them. The instance's field values go
        # through the model's validator in one pass (what `model_validate` of its
        # dump did, without the dump); the new instance's fields are then the record.
        try:
            checked = coder.validate(model.__dict__)
        except PydanticValidationError as exc:
            # `from None`: pydantic's error quotes input values, and a logger printing
            # the traceback would print the chained cause with them.
            raise PublishValidationError(_validation_message(model, exc)) from None
        if coder.dict_is_dump:
            return checked.__dict__  # read only: encoded right away, never changed
        # Python mode: Avro timestamp-millis and date fields take datetime/date objects.
        return checked.model_dump(mode="python")

    def _encode(
        self,
        coder: _Coder,
        after: BaseModel | None,
        version: int,
        op: Op,
        before: BaseModel | None,
        changed_at: datetime | None,
        unit: str | None,
        event_id: str | None,
    ) -> _Encoded:
        """Validate and encode one change; nothing is sent. Raises PublishValidationError."""
        after_dict = self._validated(coder, after)
        before_dict = self._validated(coder, before)
        state = after_dict if after_dict is not None else before_dict
        if state is None:
            raise PublishValidationError("an event needs a `before` or an `after` record")
        if (op is Op.DELETE) != (after_dict is None):
            raise PublishValidationError("op 'd' carries only `before`; other ops need `after`")
        dataset = coder.dataset
        now_ms = time.time_ns() // 1_000_000
        if event_id:
            traceparent = new_traceparent().encode()
        else:
            event_id, traceparent = new_ids()
        unit = unit or dataset.owner_unit
        op_code = op.value
        envelope = {
            "event_id": event_id,
            "op": op_code,
            "ts_ms": now_ms,
            "source": {
                "system": self._source_system,
                "unit": unit,
                "dataset": dataset.id,
                "ts_ms": now_ms if changed_at is None else changed_at,
                "version": version,
            },
            "before": coder.branch(before_dict),
            "after": coder.branch(after_dict),
        }
        try:
            body = coder.encode(envelope)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PublishValidationError(f"{dataset.id}: does not fit the schema: {exc}") from exc
        template = coder.templates.get((unit, op_code))
        if template is None:
            template = coder.templates[(unit, op_code)] = HeaderTemplate(
                f"/databus/{self._source_system}/{unit}",
                f"vn.gov.databus.{dataset.id}.{op_code}",
            )
        prefix = coder.prefix
        if prefix is None:
            prefix = coder.prefix = frame(coder.serializer.schema_id, b"")
        key = str(state[coder.key_field]) if coder.key_field is not None else dataset.key_of(state)
        encoded_key, value = key.encode(), prefix + body
        headers = (
            [*template.headers(event_id, now_ms, traceparent), *self._extra_headers]
            if self._extra_headers
            else template.headers(event_id, now_ms, traceparent)
        )
        # Headers are a few hundred bytes: the exact bound only near the limit.
        if len(value) + len(encoded_key) + self._header_slack > self._max_bytes:
            size = record_size(encoded_key, value, headers)
            if size > self._max_bytes:
                raise RecordTooLargeError(
                    f"{dataset.id}: the encoded event is {size:,} bytes, over the limit of "
                    f"{self._max_bytes:,} (DATABUS_KAFKA__MESSAGE_MAX_BYTES); nothing was sent"
                )
        return encoded_key, value, headers, event_id

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
        coder = self._coders.get(dataset.id) or self._coder(dataset)
        encoded = self._encode(coder, after, version, op, before, changed_at, unit, event_id)
        if self._spool is not None:
            self._spool_batch(coder.topic, [encoded])
        else:
            self._produce(coder.topic, encoded[0], encoded[1], encoded[2])
        return encoded[3]

    def publish_many(self, dataset: Dataset, changes: Iterable[Change]) -> list[str]:
        """Validate and encode every change, then enqueue them all; returns their event ids.

        All or nothing at acceptance: an invalid change raises ``PublishValidationError``
        naming its index, and nothing of the batch is sent. With a spool the whole
        batch is kept in one transaction (``SpoolFullError``: none of it was accepted).
        Per-key order is the order of ``changes``.
        """
        self._check_open()
        coder = self._coders.get(dataset.id) or self._coder(dataset)
        encode = self._encode
        encoded: list[_Encoded] = []
        append = encoded.append
        for index, c in enumerate(changes):
            try:
                append(
                    encode(
                        coder, c.after, c.version, c.op, c.before, c.changed_at, c.unit, c.event_id
                    )
                )
            except PublishValidationError as exc:
                raise type(exc)(
                    f"change {index} of the batch: {exc}; nothing of the batch was sent"
                ) from None
        if not encoded:
            return []
        if self._spool is not None:
            self._spool_batch(coder.topic, encoded)
        else:
            produce = self._produce
            topic = coder.topic
            for key, value, headers, _ in encoded:
                produce(topic, key, value, headers)
        return [e[3] for e in encoded]

    def _check_open(self) -> None:
        if self._closed:
            raise DeliveryError("publisher is closed", retriable=False)

    def _spool_batch(self, topic: str, batch: list[_Encoded]) -> None:
        assert self._spool is not None
        records = [
            SpoolRecord(topic, key, value, _bytes_headers(headers), event_id)
            for key, value, headers, event_id in batch
        ]
        self._spool.append(records)  # durable before we return; SpoolFullError if full
        self._service(0)

    @property
    def spooled(self) -> int:
        """Events accepted but not yet acknowledged by the broker (0 without a spool)."""
        return len(self._spool) if self._spool is not None else 0

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports and keep the spool draining; call it when idle."""
        if self._spool is not None:
            self._service(timeout)
        elif self._producer.poll(timeout):
            self._count_acks()

    def _service(self, timeout: float) -> None:
        """One step of the spool's drain: reports, acks, rewind, then produce more."""
        assert self._spool is not None
        self._producer.poll(timeout)
        if self._delivered:
            delivered, self._delivered = self._delivered, []
            self._spool.ack(delivered)
        if self._rewind and self._in_flight == 0:
            # Everything handed over has reported: what is left in the spool failed
            # (or was queued behind a failure). Start again from the oldest row.
            if self._recreate:
                self._recreate = False
                self._close_producer()
                self._producer = Producer(self._producer_conf)
            self._rewind = False
            self._cursor = 0
        if not self._rewind:
            self._pump()

    def _pump(self) -> None:
        assert self._spool is not None
        while self._in_flight < _IN_FLIGHT_MAX:
            rows = self._spool.peek(_PEEK_BATCH, after=self._cursor)
            if not rows:
                return
            for row in rows:
                try:
                    self._producer.produce(
                        row.topic,
                        value=row.value,
                        key=row.key,
                        headers=list(row.headers),
                        on_delivery=self._on_spooled_delivery(row.seq, row.topic),
                    )
                except BufferError:
                    return  # librdkafka's queue is full: the next service step goes on
                except KafkaException as exc:
                    # The row is accepted already: publish() must not fail now. A new
                    # producer takes over once the records in flight have reported.
                    self._rewind = self._recreate = True
                    error = exc.args[0] if exc.args else None
                    self._last_error = error if isinstance(error, KafkaError) else None
                    log.warning("producer failed (%s); it will be replaced", exc)
                    return
                self._cursor = row.seq
                self._in_flight += 1

    def _produced_counter(self, dataset_id: str) -> Counter:
        counter = self._produced.get(dataset_id)
        if counter is None:
            counter = self._produced[dataset_id] = self._metrics.events_produced.labels(
                dataset_id, "raw"
            )
        return counter

    def _failed_counter(self, dataset_id: str) -> Counter:
        counter = self._failed.get(dataset_id)
        if counter is None:
            counter = self._failed[dataset_id] = self._metrics.delivery_failures.labels(dataset_id)
        return counter

    def _on_spooled_delivery(
        self, seq: int, topic: str
    ) -> Callable[[KafkaError | None, Message], None]:
        dataset_id = _RAW_TOPIC_DATASET.get(topic, "unknown")
        produced = self._produced_counter(dataset_id)

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            self._in_flight -= 1
            if err is not None:
                # Not dropped: the row stays in the spool and is sent again after a rewind.
                self._rewind = True
                self._last_error = err
                if err.fatal() or err.code() == KafkaError._FATAL:
                    self._recreate = True  # an idempotent producer is unusable after this
                if err.code() not in _PURGED:  # our own close/recreate, not a failure
                    self._failed_counter(dataset_id).inc()
            else:
                self._delivered.append(seq)
                produced.inc()

        return on_delivery

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
        self._failed_counter(_RAW_TOPIC_DATASET.get(topic, "unknown")).inc()

    def _event_id_of(self, topic: str, value: bytes | None) -> str:
        """The event id inside a framed value (delivery reports carry no headers)."""
        coder = next((c for c in self._coders.values() if c.topic == topic), None)
        if coder is None or value is None:
            return "(unknown event)"
        try:
            envelope = fastavro.schemaless_reader(
                io.BytesIO(unframe(value)[1]), coder.serializer.parsed_schema, None
            )
            return str(cast(dict[str, Any], envelope)["event_id"])
        except Exception:  # a report about a value we wrote: this never fails in practice
            return "(unknown event)"

    def _count_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, {}
            for topic, n in acks.items():
                self._produced_counter(_RAW_TOPIC_DATASET.get(topic, "unknown")).inc(n)

    def _produce(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, str | bytes | None]]
    ) -> None:
        producer = self._producer
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
        if self._spool is not None:
            self._flush_spool(timeout)
            return
        deadline = time.monotonic() + timeout
        while (remaining := self._producer.flush(max(0.0, deadline - time.monotonic()))) > 0:
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

    def _flush_spool(self, timeout: float) -> None:
        assert self._spool is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            self._service(max(0.0, min(0.1, remaining)))
            if not len(self._spool):
                return
            if remaining <= 0:
                last = f" (last error: {self._last_error.str()})" if self._last_error else ""
                raise DeliveryError(
                    f"{len(self._spool)} events still unacknowledged after {timeout:.0f} s; "
                    f"they stay in the spool {self._spool.path} and are sent by the next "
                    f"flush() or the next Publisher on that spool{last}",
                    retriable=True,
                )

    def close(self, timeout: float = 60.0) -> None:
        """Flush within ``timeout``; with a spool, what is left stays there for next time."""
        if not self._closed:
            self._closed = True
            try:
                if self._spool is None:
                    self.flush(timeout)
                else:
                    try:
                        self._flush_spool(timeout)
                    except DeliveryError:
                        log.warning(
                            "closing with %d events unacknowledged; they stay in the spool %s",
                            len(self._spool),
                            self._spool.path,
                        )
            finally:
                self._close_producer()
                if self._spool is not None:
                    self._spool.close()

    def _close_producer(self) -> None:
        # Queued records are not lost when a spool holds them; purge so that closing
        # does not wait for them, and serve the purge reports before closing.
        if self._spool is not None:
            self._producer.purge()
            self._producer.poll(0)
            self._in_flight = 0
            delivered, self._delivered = self._delivered, []
            self._spool.ack(delivered)
        # Release the broker connections now, not whenever the object is collected
        # (Producer.close exists from confluent-kafka 2.12).
        close = getattr(self._producer, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _bytes_headers(headers: list[tuple[str, str | bytes | None]]) -> list[tuple[str, bytes | None]]:
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]


class AsyncPublisher:
    """``Publisher`` for asyncio code: the same guarantees, never blocking the event loop.

    Every call runs on one worker thread that owns the Publisher: the spool's SQLite
    connection and the producer are used from that thread only (a Publisher is not
    thread-safe), and a spool's fsync, a first schema registration or ``flush`` wait
    there instead of in the loop. Calls run in the order they were made. Cancelling
    an awaiting task does not take its event back: it is published all the same.
    The thread hand-off costs tens of µs per call: use ``publish_many`` for volume.

        async with AsyncPublisher(settings, source_system="dvc-portal") as pub:
            event_id = await pub.publish(DOSSIERS, dossier, version=1)
            await pub.flush()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        source_system: str,
        registry: SchemaRegistryClient | None = None,
        metrics: Metrics | None = None,
        **producer_overrides: Any,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="databus-publisher")
        # Built on the worker thread (the spool's connection belongs to its thread).
        self._publisher = self._executor.submit(
            Publisher,
            settings,
            source_system=source_system,
            registry=registry,
            metrics=metrics,
            **producer_overrides,
        )
        self._closed = False

    async def _run(self, fn: Callable[[Publisher], _T]) -> _T:
        if self._closed:
            raise DeliveryError("publisher is closed", retriable=False)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._publisher.result()))

    async def publish(
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
        """``Publisher.publish``: validated and enqueued (spooled) once it returns."""
        return await self._run(
            lambda p: p.publish(
                dataset,
                after,
                version=version,
                op=op,
                before=before,
                changed_at=changed_at,
                unit=unit,
                event_id=event_id,
            )
        )

    async def publish_many(self, dataset: Dataset, changes: Iterable[Change]) -> list[str]:
        """``Publisher.publish_many``: all of the batch or, on a refusal, none of it."""
        batch = list(changes)  # the caller's iterable is consumed here, not on the thread
        return await self._run(lambda p: p.publish_many(dataset, batch))

    async def poll(self, timeout: float = 0.0) -> None:
        await self._run(lambda p: p.poll(timeout))

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait for delivery (``Publisher.flush``) without blocking the event loop."""
        await self._run(lambda p: p.flush(timeout))

    @property
    def spooled(self) -> int:
        return self._publisher.result().spooled if self._publisher.done() else 0

    async def close(self, timeout: float = 60.0) -> None:
        if self._closed:
            return
        try:
            await self._run(lambda p: p.close(timeout))
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        await self._run(lambda p: None)  # construction errors surface here
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
