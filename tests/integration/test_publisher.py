"""The producer library against the real broker and the real schema registry."""

from __future__ import annotations

import re
import socket
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import BaseModel

from bus.errors import DeliveryError, PublishValidationError
from bus.metrics import Metrics
from bus.settings import Settings, load_settings
from bus.topic_admin import ensure_topics
from producers.publisher import Publisher
from schemas.catalog import DOSSIERS
from schemas.codec import AvroDeserializer, unframe
from schemas.models.common import Op
from schemas.models.public_service import Channel, Dossier, DossierStatus
from schemas.topics import bus_topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RAW_AVSC = (ROOT / "schemas/avro/publicservice/dossiers.raw.v1.avsc").read_text(encoding="utf-8")
TOPIC = DOSSIERS.raw_topic
SOURCE = "dvc-portal-test"
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, registry_url: str) -> Settings:
    s = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap}, schema_registry={"url": registry_url}
    )
    ensure_topics(s, bus_topics(s))
    return s


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture(scope="module")
def publisher(settings: Settings, metrics: Metrics) -> Iterator[Publisher]:
    # One producer for the module: each new idempotent producer waits ~1 s for its id.
    with Publisher(settings, source_system=SOURCE, metrics=metrics) as pub:
        yield pub


def produced(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "databus_events_produced_total", {"dataset": DOSSIERS.id, "stage": "raw"}
    )
    return value or 0.0


@pytest.fixture(scope="module")
def registry(registry_url: str) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": registry_url}) as client:
        yield client


def dossier(dossier_id: str | None = None, **changes: Any) -> Dossier:
    fields: dict[str, Any] = {
        "dossier_id": dossier_id or f"HS-PUBTEST-{uuid.uuid4().hex[:10]}",
        "dossier_code": "000.00.12.H19-250801-0012",
        "procedure_code": "1.001612",
        "procedure_name": "Đăng ký thành lập hộ kinh doanh",
        "receiving_unit_code": "DNA.SCT",
        "admin_unit_code": "20194",
        "applicant_citizen_id": "048190000042",
        "applicant_name": "Trần Văn Lộc",
        "applicant_birth_date": "1990-02-01",
        "applicant_sex": "MALE",
        "status": DossierStatus.IN_PROGRESS,
        "channel": Channel.ONLINE,
        "received_at": "2025-08-01T08:30:00+07:00",
        "due_at": "2025-08-06T17:00:00+07:00",
        "completed_at": None,
    }
    fields.update(changes)
    return Dossier(**fields)


def start_positions(bootstrap: str) -> list[TopicPartition]:
    """Where to read from so that everything published afterwards is seen.

    Tansu reports the high watermark as the base offset of the last batch + 1, which
    is never past the true end: starting there may re-read a few old records (the
    tests filter by key) but cannot miss a new one.
    """
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        partitions = probe.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        out = []
        for p in sorted(partitions):
            _low, high = probe.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
            out.append(TopicPartition(TOPIC, p, high))
        return out
    finally:
        probe.close()


def consume_until(
    bootstrap: str, positions: list[TopicPartition], marker: bytes, idle_s: float = 0.3
) -> list[Message]:
    """Every record from ``positions`` until ``marker`` was seen and the topic went quiet."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"pubtest-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign(positions)
    records: list[Message] = []
    deadline = time.monotonic() + 20
    last = time.monotonic()
    seen = False
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                if seen and time.monotonic() - last > idle_s:
                    return records
                continue
            assert msg.error() is None, msg.error()
            records.append(msg)
            last = time.monotonic()
            seen = seen or msg.key() == marker
    finally:
        consumer.close()
    pytest.fail(f"marker {marker!r} not consumed within 20 s ({len(records)} records read)")


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Java's / aiokafka's default partitioner (murmur2, positive, modulo)."""
    m, r, length = 0x5BD1E995, 24, len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    tail = key[length - rest :]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_murmur2_matches_kafka_reference_values() -> None:
    # Values from Kafka's own UtilsTest.testMurmur2.
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    for key, expected in cases.items():
        assert murmur2_partition(key, 2**31) == (expected & 0x7FFFFFFF)


def test_publish_one_valid_dossier(
    publisher: Publisher, metrics: Metrics, kafka_bootstrap: str, registry: SchemaRegistryClient
) -> None:
    model = dossier()
    key = model.dossier_id.encode()
    changed_at = datetime(2025, 8, 1, 2, 0, 0, 250000, tzinfo=UTC)
    positions = start_positions(kafka_bootstrap)
    count_before = produced(metrics)
    before = datetime.now(UTC)
    event_id = publisher.publish(DOSSIERS, model, version=3, op=Op.UPDATE, changed_at=changed_at)
    after = datetime.now(UTC)
    publisher.flush(timeout=15)
    ours = [m for m in consume_until(kafka_bootstrap, positions, key) if m.key() == key]
    assert len(ours) == 1
    msg = ours[0]
    assert msg.topic() == TOPIC
    assert msg.partition() == murmur2_partition(key, len(positions))

    # Confluent framing, with the id the registry knows for the raw schema
    value = msg.value()
    assert value is not None and value[0] == 0
    schema_id, _body = unframe(value)
    assert '"DossierRawEvent"' in (registry.get_schema(schema_id).schema_str or "")
    envelope = AvroDeserializer(registry, RAW_AVSC)(value, None)
    assert str(envelope["event_id"]) == event_id
    assert uuid.UUID(event_id).version == 4
    assert envelope["op"] == "u"
    assert envelope["before"] is None
    assert envelope["after"] == model.model_dump(mode="json")
    assert envelope["source"] == {
        "system": SOURCE,
        "unit": DOSSIERS.owner_unit,
        "dataset": DOSSIERS.id,
        "ts_ms": changed_at,
        "version": 3,
    }
    assert before - timedelta(milliseconds=1) <= envelope["ts_ms"] <= after

    # CloudEvents binary mode
    headers = {k: v for k, v in cast(list[tuple[str, bytes]], msg.headers() or [])}
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == event_id.encode()
    assert headers["ce_source"] == f"/databus/{SOURCE}/{DOSSIERS.owner_unit}".encode()
    assert headers["ce_type"] == b"vn.gov.databus.publicservice.dossiers.u"
    ce_time = datetime.fromisoformat(headers["ce_time"].decode())
    assert ce_time.utcoffset() == timedelta(0)
    assert abs(ce_time - envelope["ts_ms"]) < timedelta(milliseconds=2)
    assert headers["content-type"] == b"application/avro"
    assert TRACEPARENT.fullmatch(headers["traceparent"].decode())

    assert produced(metrics) == count_before + 1


def test_given_event_id_is_kept(publisher: Publisher, kafka_bootstrap: str) -> None:
    model = dossier()
    event_id = str(uuid.uuid4())
    positions = start_positions(kafka_bootstrap)
    assert publisher.publish(DOSSIERS, model, version=1, event_id=event_id) == event_id
    publisher.flush(timeout=15)
    key = model.dossier_id.encode()
    ours = [m for m in consume_until(kafka_bootstrap, positions, key) if m.key() == key]
    assert [dict(m.headers() or [])["ce_id"] for m in ours] == [event_id.encode()]


class NotADossier(BaseModel):
    dossier_id: str
    applicant_citizen_id: str


# Personal values the refusals must never echo (a logger would print them).
SECRET_ID = "079190012345678901234"  # too long for a citizen id
SECRET_INT = 48190012345678  # not even a string


def _bad_models() -> dict[str, tuple[Any, str]]:
    """case -> (model, the personal value that must not appear anywhere)."""
    good = dossier().model_dump()
    valid_id = good["applicant_citizen_id"]
    return {
        "too_long_citizen_id": (
            Dossier.model_construct(**{**good, "applicant_citizen_id": SECRET_ID}),
            SECRET_ID,
        ),
        "citizen_id_not_a_string": (
            Dossier.model_construct(**{**good, "applicant_citizen_id": SECRET_INT}),
            str(SECRET_INT),
        ),
        "bad_status": (Dossier.model_construct(**{**good, "status": "BOGUS"}), valid_id),
        "missing_field": (
            Dossier.model_construct(**{k: v for k, v in good.items() if k != "due_at"}),
            valid_id,
        ),
        "wrong_model_type": (
            NotADossier(dossier_id=good["dossier_id"], applicant_citizen_id=SECRET_ID),
            SECRET_ID,
        ),
    }


@pytest.mark.parametrize("case", sorted(_bad_models()))
def test_invalid_model_is_refused_without_echoing_personal_data(
    publisher: Publisher, case: str
) -> None:
    bad, secret = _bad_models()[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PublishValidationError) as info:
            publisher.publish(DOSSIERS, bad, version=1)
    err = info.value
    assert err.retriable is False
    # neither the message, nor the traceback a logger would print, nor a warning
    printed = "".join(traceback.format_exception(err))
    for text in (str(err), printed, *(str(w.message) for w in caught)):
        assert secret not in text
    if case == "wrong_model_type":
        assert "takes Dossier, got NotADossier" in str(err)
    else:
        assert "nothing was sent" in str(err)


def test_invalid_models_send_nothing(
    publisher: Publisher, metrics: Metrics, kafka_bootstrap: str
) -> None:
    bad_models = [model for model, _ in _bad_models().values()]
    bad_keys = {str(m.dossier_id).encode() for m in bad_models}
    assert len(bad_keys) == 1  # all built from one dossier id
    marker = dossier()
    positions = start_positions(kafka_bootstrap)
    count_before = produced(metrics)
    for bad in bad_models:
        with pytest.raises(PublishValidationError):
            publisher.publish(DOSSIERS, bad, version=1)
    # the marker goes after the refusals; once it is read, nothing else can come
    publisher.publish(DOSSIERS, marker, version=1)
    publisher.flush(timeout=15)
    keys = [m.key() for m in consume_until(kafka_bootstrap, positions, marker.dossier_id.encode())]
    assert [k for k in keys if k in bad_keys] == []
    assert keys.count(marker.dossier_id.encode()) == 1
    assert produced(metrics) == count_before + 1  # the marker only


def test_refusal_names_the_field(publisher: Publisher) -> None:
    bad, _ = _bad_models()["too_long_citizen_id"]
    with pytest.raises(PublishValidationError, match="applicant_citizen_id"):
        publisher.publish(DOSSIERS, bad, version=1)


def test_envelope_shape_is_checked(publisher: Publisher, metrics: Metrics) -> None:
    count_before = produced(metrics)
    with pytest.raises(PublishValidationError):
        publisher.publish(DOSSIERS, None, version=1)
    with pytest.raises(PublishValidationError):
        publisher.publish(DOSSIERS, dossier(), version=2, op=Op.DELETE)
    with pytest.raises(PublishValidationError):
        publisher.publish(DOSSIERS, None, version=2, op=Op.UPDATE, before=dossier())
    publisher.flush(timeout=15)
    assert produced(metrics) == count_before


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_delivery_failure_surfaces_on_flush(registry_url: str) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{_closed_port()}"},
        schema_registry={"url": registry_url},
    )
    metrics = Metrics()
    # mypy matches a **dict against every keyword parameter, not only the client overrides
    pub = Publisher(settings, source_system=SOURCE, metrics=metrics, **{"message.timeout.ms": 1000})  # type: ignore[arg-type]
    event_id = pub.publish(DOSSIERS, dossier(), version=1)  # enqueued: delivery is async
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        pub.flush(timeout=15)
    assert time.monotonic() - started < 10
    assert event_id in str(info.value)
    assert "1 events were not delivered" in str(info.value)
    failures = metrics.registry.get_sample_value(
        "databus_delivery_failures_total", {"dataset": DOSSIERS.id}
    )
    assert failures == 1
    pub.close(timeout=5)  # reported once; closing afterwards is clean
    with pytest.raises(DeliveryError):
        pub.publish(DOSSIERS, dossier(), version=1)


def test_close_releases_the_producer(settings: Settings, kafka_bootstrap: str) -> None:
    # A closed publisher must not keep broker connections open until garbage collection
    # (the embedded broker then waits ~5 s for them at shutdown).
    model = dossier()
    positions = start_positions(kafka_bootstrap)
    pub = Publisher(settings, source_system=SOURCE)
    pub.publish(DOSSIERS, model, version=1)
    pub.close(timeout=15)  # flushes first: the event is delivered
    assert pub._producer is not None
    with pytest.raises(RuntimeError, match="closed"):
        pub._producer.flush(0)
    key = model.dossier_id.encode()
    assert [m.key() for m in consume_until(kafka_bootstrap, positions, key)].count(key) == 1
