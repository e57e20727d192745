"""Declarations: a source states how many events it sent for a dataset, unit and day.

The bus later compares the declared figure with what arrived (``databus.reconcile``).
Declarations go to ``control.declarations.v1``, keyed ``dataset|unit|day`` so every
declaration for a key lands on one partition: the latest one wins, which is how a
source corrects a figure. Each is a CloudEvent (``schemas.headers.cloudevent``): source
``/databus/<system>/<unit>``, type ``vn.gov.databus.control.declaration``, subject the key.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.errors import DeliveryError, ValidationError
from bus.kafka_client import producer_config
from bus.settings import Settings
from schemas.catalog import DATASETS, KEY_SEPARATOR, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.headers import DECLARATIONS_TYPE, cloudevent, dataschema, schema_version
from schemas.topics import DECLARATIONS_SCHEMA, DECLARATIONS_TOPIC

__all__ = ["declaration_key", "declare"]


def declaration_key(dataset_id: str, unit: str, day: date) -> str:
    return KEY_SEPARATOR.join((dataset_id, unit, day.isoformat()))


_MAX_COUNT = 2**63 - 1  # Avro long


def _is_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return False
    return True


def _check(dataset_id: str, unit: str, day: date, count: int, source_system: str) -> None:
    for name, value in (("dataset", dataset_id), ("unit", unit), ("source system", source_system)):
        if not _is_text(value):
            raise ValidationError(f"the {name} must be text (UTF-8), got {type(value).__name__}")
    if dataset_id not in DATASETS:
        raise ValidationError(f"unknown dataset {dataset_id!r}: not in the data catalog")
    if not unit.strip():
        raise ValidationError("a declaration needs the sending unit's code")
    if KEY_SEPARATOR in unit:
        raise ValidationError(f"unit code {unit!r} must not contain {KEY_SEPARATOR!r}")
    if not isinstance(day, date) or isinstance(day, datetime):
        raise ValidationError(f"day must be a date, got {type(day).__name__}")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= _MAX_COUNT:
        raise ValidationError(f"count must be a whole number >= 0 (Avro long), got {count!r}")
    if not source_system.strip():
        raise ValidationError("a declaration needs the source system's name")


def declare(
    settings: Settings,
    dataset_id: str,
    unit: str,
    day: date,
    count: int,
    *,
    source_system: str,
    timeout: float = 30.0,
) -> None:
    """Send one declaration and wait for the broker's acknowledgement.

    Raises ``ValidationError`` (nothing sent) for an unknown dataset, an empty unit
    or a negative count, and ``DeliveryError`` when the broker does not acknowledge.
    """
    _check(dataset_id, unit, day, count, source_system)
    subject = value_subject(DECLARATIONS_TOPIC)
    declared_at = datetime.now(UTC)
    record = {
        "dataset": dataset_id,
        "unit": unit,
        "day": day,
        "count": count,
        "declared_at": declared_at,
        "source_system": source_system,
    }
    with SchemaRegistryClient(settings.schema_registry.client_config()) as registry:
        serializer = AvroSerializer(registry, subject, load_schema(DECLARATIONS_SCHEMA))
        try:
            value = serializer(record)
        except (ValueError, TypeError, OverflowError) as exc:  # does not fit the schema
            raise ValidationError(f"declaration does not fit its schema: {exc}") from exc
        version = schema_version(registry, subject, load_schema(DECLARATIONS_SCHEMA))
    key = declaration_key(dataset_id, unit, day)
    headers: list[tuple[str, str | bytes | None]] = [
        *cloudevent(
            id=str(uuid.uuid4()),
            source=f"/databus/{source_system}/{unit}",
            type=DECLARATIONS_TYPE,
            time_ms=int(declared_at.timestamp() * 1000),
            subject=key,
            schema=dataschema(subject, version),
        )
    ]
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(producer_config(settings))
    producer.produce(
        DECLARATIONS_TOPIC,
        key=key.encode(),
        value=value,
        headers=headers,
        on_delivery=on_delivery,
    )
    if producer.flush(timeout) > 0:
        raise DeliveryError(f"declaration not acknowledged within {timeout:.0f} s")
    if failures:
        raise DeliveryError(f"declaration not delivered: {failures[0].str()}")
