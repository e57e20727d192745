"""The producer library: source systems hand pydantic models to a ``Publisher``.

A model is validated again right before sending (models can be built with
``model_construct`` or come from elsewhere), wrapped in the Debezium-style
envelope, encoded with the registry, and produced by an idempotent producer
with ``acks=all``. Delivery failures are collected from the delivery reports
and raised by ``flush()`` / ``close()``: nothing fails silently.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from bus.errors import DeliveryError, PublishValidationError
from bus.metrics import Metrics
from bus.settings import Settings
from producers.headers import cloudevent_headers
from schemas.catalog import Dataset, load_schema, value_subject
from schemas.codec import AvroSerializer, frame
from schemas.models import Op

__all__ = ["Publisher", "producer_config"]


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Producer settings every databus writer uses."""
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        # librdkafka's default partitioner differs from Java's and aiokafka's (Faust):
        # murmur2_random puts a key on the same partition whoever writes it.
        "partitioner": "murmur2_random",
        "linger.ms": 5,
    }
    conf.update(overrides)
    return conf


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
        **producer_overrides: Any,
    ) -> None:
        self._source_system = source_system
        self._registry = registry or SchemaRegistryClient(settings.schema_registry.client_config())
        self._producer = Producer(producer_config(settings, **producer_overrides))
        self._metrics = metrics or Metrics()
        self._serializers: dict[str, AvroSerializer] = {}
        self._failures: list[tuple[str, KafkaError]] = []
        self._closed = False

    def _serializer(self, dataset: Dataset) -> AvroSerializer:
        ser = self._serializers.get(dataset.id)
        if ser is None:
            ser = AvroSerializer(
                self._registry, value_subject(dataset.raw_topic), load_schema(dataset.raw_schema)
            )
            self._serializers[dataset.id] = ser
        return ser

    def _validated(self, dataset: Dataset, model: BaseModel | None) -> dict[str, Any] | None:
        if model is None:
            return None
        if not isinstance(model, dataset.model):
            raise PublishValidationError(
                f"dataset {dataset.id} takes {dataset.model.__name__}, got {type(model).__name__}"
            )
        try:
            # warnings=False: pydantic's serializer warnings quote the input value.
            checked = dataset.model.model_validate(model.model_dump(warnings=False))
        except PydanticValidationError as exc:
            # `from None`: pydantic's error quotes input values, and a logger printing
            # the traceback would print the chained cause with them.
            raise PublishValidationError(_validation_message(model, exc)) from None
        return checked.model_dump(mode="json")

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
        if self._closed:
            raise DeliveryError("publisher is closed", retriable=False)
        after_dict = self._validated(dataset, after)
        before_dict = self._validated(dataset, before)
        state = after_dict if after_dict is not None else before_dict
        if state is None:
            raise PublishValidationError("an event needs a `before` or an `after` record")
        if (op is Op.DELETE) != (after_dict is None):
            raise PublishValidationError("op 'd' carries only `before`; other ops need `after`")
        now = datetime.now(UTC)
        event_id = event_id or str(uuid.uuid4())
        envelope = {
            "event_id": event_id,
            "op": op.value,
            "ts_ms": now,
            "source": {
                "system": self._source_system,
                "unit": unit or dataset.owner_unit,
                "dataset": dataset.id,
                "ts_ms": changed_at or now,
                "version": version,
            },
            "before": before_dict,
            "after": after_dict,
        }
        ser = self._serializer(dataset)
        try:
            body = ser.encode_body(envelope)
        except (ValueError, TypeError) as exc:
            raise PublishValidationError(f"{dataset.id}: does not fit the schema: {exc}") from exc
        value = frame(ser.schema_id, body)
        key = str(state[dataset.key_field]).encode()
        headers = cloudevent_headers(
            event_id=event_id,
            source=f"/databus/{self._source_system}/{unit or dataset.owner_unit}",
            event_type=f"vn.gov.databus.{dataset.id}.{op.value}",
            time=now,
        )
        self._produce(dataset, key, value, headers, event_id)
        return event_id

    def _produce(
        self,
        dataset: Dataset,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]],
        event_id: str,
    ) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._failures.append((event_id, err))
                self._metrics.delivery_failures.labels(dataset.id).inc()
            else:
                self._metrics.events_produced.labels(dataset.id, "raw").inc()

        while True:
            try:
                self._producer.produce(
                    dataset.raw_topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room.
                self._producer.poll(0.1)
        self._producer.poll(0)

    @property
    def failures(self) -> list[tuple[str, KafkaError]]:
        return list(self._failures)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every enqueued event; raise ``DeliveryError`` if any was not acknowledged."""
        deadline = time.monotonic() + timeout
        while (remaining := self._producer.flush(max(0.0, deadline - time.monotonic()))) > 0:
            if time.monotonic() >= deadline:
                raise DeliveryError(
                    f"{remaining} events still unacknowledged after {timeout:.0f} s"
                )
        if self._failures:
            failures, self._failures = self._failures, []
            first_id, first_err = failures[0]
            raise DeliveryError(
                f"{len(failures)} events were not delivered (first: {first_id}: {first_err.str()})",
                retriable=first_err.retriable(),
            )

    def close(self, timeout: float = 60.0) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.flush(timeout)
            finally:
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
