"""The agencies' library: subscribe to one shared dataset and handle typed records.

    def handle(event: SharedEvent[Report]) -> None: ...

    sub = Subscriber(settings, "so-xay-dung", "feedback.reports", handle, model=Report)
    sub.run(stop_event)

- The consumer group is the agency's own, ``agency.<agency>.<dataset>`` (the prefix its
  ACLs grant), so each agency keeps its own position; the Kafka user and TLS come from
  ``settings.kafka`` (``client_config()``: SASL SCRAM + CA bundle).
- Values are decoded with the writer schema from the registry (Confluent wire format)
  and validated into ``SharedEvent[model]``; with ``model=None`` the records inside are
  plain dicts. The agency's model may declare only the fields it needs.
- Offsets are committed after the handler returned for every record of a batch. When
  the handler raises, the records it finished are committed, the consumer is rewound to
  the failed one and it is handed over again after a backoff (``retry_s``), for ever:
  the handler decides what is permanent. A record that does not decode or does not fit
  the model stops ``run`` with the error (nothing committed past it): that is a
  contract problem to fix, not something to skip silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import ValidationError as PydanticValidationError

from bus.consumers import consumer_config, next_offsets, take
from bus.errors import CodecError, ValidationError
from bus.kafka_client import registry_client
from bus.settings import Settings
from schemas.access_policy import agency_group
from schemas.catalog import get_dataset
from schemas.codec import AvroDeserializer

__all__ = ["EventSource", "RecordContractError", "SharedEvent", "Subscriber"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class EventSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    system: str
    unit: str
    dataset: str
    ts_ms: datetime
    version: int


class SharedEvent(BaseModel, Generic[T]):
    """One record of a shared topic: the envelope, and the record before/after."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None
    event_id: str
    op: str
    ts_ms: datetime
    source: EventSource
    before: T | None = None
    after: T | None = None

    @field_validator("event_id", mode="before")
    @classmethod
    def _uuid_text(cls, value: object) -> object:
        return str(value) if isinstance(value, UUID) else value


class RecordContractError(ValidationError):
    """A shared record does not decode or does not fit the agency's model (not retried)."""


class Subscriber(Generic[T]):
    def __init__(
        self,
        settings: Settings,
        agency: str,
        dataset: str,
        handler: Callable[[SharedEvent[T]], None],
        *,
        model: type[T] | None = None,
        topic: str | None = None,
        registry: SchemaRegistryClient | None = None,
        batch_size: int = 100,
        retry_s: float = 1.0,
    ) -> None:
        self.topic = topic or get_dataset(dataset).shared_topic
        self.group = agency_group(agency, dataset)
        self._handler = handler
        inner: Any = model if model is not None else dict[str, Any]
        self._event_type: Any = SharedEvent[inner]
        self._consumer = Consumer(consumer_config(settings, self.group))
        # A registry client made here is closed with this object; one passed in is the caller's.
        registry, self._owned_registry = registry_client(settings, registry)
        self._decode = AvroDeserializer(registry)
        self._batch_size = batch_size
        self._retry_s = retry_s
        self._subscribed = False
        self.handled = 0
        self.failures = 0

    def _typed(self, msg: Message) -> SharedEvent[T]:
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        key = msg.key()
        try:
            value = self._decode(msg.value())
            event: SharedEvent[T] = self._event_type.model_validate(
                {
                    **value,
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "key": key.decode("utf-8", "replace") if key is not None else None,
                }
            )
        except CodecError as exc:
            raise RecordContractError(f"{where} does not decode: {exc.reason}") from exc
        except PydanticValidationError as exc:
            raise RecordContractError(
                f"{where} does not fit the model: {exc.error_count()} error(s), first at "
                f"{'.'.join(str(x) for x in exc.errors()[0]['loc'])}"
            ) from exc
        return event

    def poll_once(self, timeout: float = 0.5) -> int:
        """Handle one batch; returns how many records the handler finished."""
        if not self._subscribed:
            self._consumer.subscribe([self.topic])
            self._subscribed = True
        messages = []
        for msg in take(self._consumer, self._batch_size, timeout):
            err = msg.error()
            if err is None:
                messages.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: consumer error: %s", self.group, err)
        done: list[Message] = []
        try:
            for msg in messages:
                self._handler(self._typed(msg))
                done.append(msg)
        except BaseException:
            self._commit(done)
            self._rewind(messages[len(done) :])
            raise
        self._commit(done)
        self.handled += len(done)
        return len(done)

    def run(self, stop: threading.Event | Callable[[], bool]) -> None:
        """Handle records until ``stop``; handler errors are retried after ``retry_s``."""
        should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
        wait = stop.wait if isinstance(stop, threading.Event) else threading.Event().wait
        try:
            while not should_stop():
                try:
                    self.poll_once()
                except RecordContractError:
                    raise
                except Exception as exc:  # the handler's, or a registry outage: retried
                    self._failed(exc)
                    wait(self._retry_s)
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._consumer.close()
        finally:
            if self._owned_registry is not None:
                self._owned_registry.close()

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        log.warning("%s: handler failed (%s: %s); retrying", self.group, type(exc).__name__, exc)

    def _commit(self, messages: list[Message]) -> None:
        if not messages:
            return
        ends = next_offsets(
            (m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages
        )
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False
        )

    def _rewind(self, pending: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in pending:
            where = (m.topic() or "", m.partition() or 0)
            first.setdefault(where, m.offset() or 0)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except Exception as exc:  # revoked meanwhile: its new owner starts at the commit
                log.warning("%s: could not rewind %s[%d]: %s", self.group, topic, partition, exc)
