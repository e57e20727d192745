"""The Publisher refuses an event over DATABUS_KAFKA__MESSAGE_MAX_BYTES before sending it.

The dataset's ``EventEncoder`` is built as in ``test_publisher_encode`` (a registry
nobody answers, a known schema id) with the Publisher's limit lowered to 1,000 bytes, so
that a model within its own field bounds goes over it. A refusal needs no registry: the
Publisher refuses before registering anything. The batch case, where earlier events of
the batch were encoded (and the schema registered), is in
``tests/integration/test_publisher_batch.py``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.errors import PublishValidationError, RecordTooLargeError
from bus.kafka_client import producer_config
from bus.settings import load_settings
from producers.publisher import EventEncoder, Publisher, record_size
from schemas.catalog import DOSSIERS, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.models.common import Op
from schemas.models.public_service import Channel, Dossier, DossierStatus

LIMIT = 1_000


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def registry() -> Iterator[SchemaRegistryClient]:
    url = f"http://127.0.0.1:{_closed_port()}"
    client = SchemaRegistryClient({"url": url, "max.retries": 0, "retries.wait.ms": 1})
    yield client
    client.close()


@pytest.fixture
def publisher(registry: SchemaRegistryClient) -> Iterator[Publisher]:
    settings = load_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{_closed_port()}", "message_max_bytes": LIMIT},
        schema_registry={"url": f"http://127.0.0.1:{_closed_port()}"},
    )
    pub = Publisher(settings, source_system="unit", registry=registry)
    yield pub
    pub.close(timeout=1)


@pytest.fixture
def encoder(registry: SchemaRegistryClient) -> EventEncoder:
    serializer = AvroSerializer(
        registry, value_subject(DOSSIERS.raw_topic), load_schema(DOSSIERS.raw_schema)
    )
    return EventEncoder(DOSSIERS, serializer, source_system="unit", max_bytes=LIMIT, schema_id=42)


def dossier(name: str = "Đăng ký khai sinh") -> Dossier:
    return Dossier(
        dossier_id="HS-UNIT-1",
        dossier_code="000.00.12.H19-250801-0012",
        procedure_code="1.001612",
        procedure_name=name,
        receiving_unit_code="DNA.SCT",
        admin_unit_code="20194",
        applicant_citizen_id="048190000042",
        applicant_name="Trần Văn Lộc",
        status=DossierStatus.IN_PROGRESS,
        channel=Channel.ONLINE,
        received_at="2025-08-01T08:30:00+07:00",
        due_at="2025-08-06T17:00:00+07:00",
    )


def test_the_limit_is_the_producers_setting() -> None:
    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"})
    assert settings.kafka.message_max_bytes == 1_000_000  # librdkafka's and the broker's
    assert producer_config(settings)["message.max.bytes"] == 1_000_000


def test_an_event_within_the_limit_is_encoded(encoder: EventEncoder) -> None:
    key, value, headers, _ = encoder.encode(dossier(), version=1, op=Op.CREATE)
    assert record_size(key, value, headers) <= LIMIT


def test_an_event_over_the_limit_is_refused_by_the_encoder(encoder: EventEncoder) -> None:
    with pytest.raises(RecordTooLargeError, match="over the limit of 1,000"):
        encoder.encode(dossier("Đ" * 500), version=1)


def test_an_event_over_the_limit_is_refused_before_sending(publisher: Publisher) -> None:
    with pytest.raises(RecordTooLargeError) as info:
        publisher.publish(DOSSIERS, dossier("Đ" * 500), version=1)
    assert isinstance(info.value, PublishValidationError)  # callers that catch it still do
    assert not info.value.retriable
    text = str(info.value)
    assert "DATABUS_KAFKA__MESSAGE_MAX_BYTES" in text and f"{LIMIT:,}" in text
    assert "Đ" not in text  # no field value in the message


def test_record_size_bounds_what_librdkafka_counts() -> None:
    assert record_size(b"k", b"v" * 10, [("h", b"abc")]) >= 1 + 10 + 1 + 3
    assert record_size(None, None, []) > 0
