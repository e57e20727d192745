"""publish_many, AsyncPublisher and datasets other than dossiers, on the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import date
from typing import cast

import pytest
from confluent_kafka import Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from test_publisher import consume_until, dossier

from bus.errors import PublishValidationError, RecordTooLargeError
from bus.settings import Settings, load_settings
from bus.topic_admin import ensure_topics
from producers.publisher import AsyncPublisher, Change, Publisher
from schemas.catalog import DATASETS, DOSSIERS, Dataset, load_schema
from schemas.codec import AvroDeserializer
from schemas.models.common import Op
from schemas.models.education import ClassStat
from schemas.models.environment import StationReading, StationType
from schemas.topics import bus_topics

pytestmark = pytest.mark.integration

SOURCE = "batch-test"
CLASS_STATS = DATASETS["education.class_stats"]
READINGS = DATASETS["environment.station_readings"]


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, registry_url: str) -> Settings:
    s = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap}, schema_registry={"url": registry_url}
    )
    ensure_topics(s, bus_topics(s))
    return s


@pytest.fixture(scope="module")
def publisher(settings: Settings) -> Iterator[Publisher]:
    with Publisher(settings, source_system=SOURCE) as pub:
        yield pub


@pytest.fixture(scope="module")
def registry(registry_url: str) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": registry_url}) as client:
        yield client


def positions(bootstrap: str, topic: str) -> list[TopicPartition]:
    from confluent_kafka import Consumer

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        return [
            TopicPartition(topic, p, probe.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
            for p in sorted(parts)
        ]
    finally:
        probe.close()


def headers(msg: Message) -> dict[str, bytes]:
    return {
        k: v for k, v in cast(list[tuple[str, bytes | None]], msg.headers() or []) if v is not None
    }


def test_batch_arrives_complete_in_order_with_headers(
    publisher: Publisher, kafka_bootstrap: str
) -> None:
    ids = [f"HS-BATCH-{uuid.uuid4().hex[:10]}" for _ in range(5)]
    changes = [
        Change(dossier(ids[i % 5]), version=i // 5 + 1, op=Op.CREATE if i < 5 else Op.UPDATE)
        for i in range(50)
    ]
    start = positions(kafka_bootstrap, DOSSIERS.raw_topic)
    event_ids = publisher.publish_many(DOSSIERS, changes)
    publisher.flush(timeout=15)
    assert len(event_ids) == len(set(event_ids)) == 50
    wanted = {i.encode() for i in ids}
    got = [m for m in consume_until(kafka_bootstrap, start, ids[-1].encode()) if m.key() in wanted]
    # the marker is the last key's first record: read on until all 50 are there
    if len(got) < 50:
        got = [
            m
            for m in consume_until(kafka_bootstrap, start, ids[-1].encode(), idle_s=1.0)
            if m.key() in wanted
        ]
    assert sorted(headers(m)["ce_id"].decode() for m in got) == sorted(event_ids)
    for i, key in enumerate(ids):
        mine = [headers(m)["ce_id"].decode() for m in got if m.key() == key.encode()]
        assert mine == event_ids[i::5]  # per-key order is the batch's order
    for m in got:
        h = headers(m)
        assert h["ce_specversion"] == b"1.0"
        assert h["ce_type"] in (
            b"vn.gov.databus.publicservice.dossiers.c",
            b"vn.gov.databus.publicservice.dossiers.u",
        )
        assert h["content-type"] == b"application/avro"


def test_invalid_item_sends_nothing_of_the_batch(
    publisher: Publisher, kafka_bootstrap: str
) -> None:
    good = [dossier() for _ in range(3)]
    bad = dossier().model_copy(update={"applicant_citizen_id": "0" * 30})  # not validated
    batch_keys = {m.dossier_id.encode() for m in [*good, bad]}
    marker = dossier()
    start = positions(kafka_bootstrap, DOSSIERS.raw_topic)
    changes = [Change(good[0], 1), Change(good[1], 1), Change(bad, 1), Change(good[2], 1)]
    with pytest.raises(PublishValidationError) as info:
        publisher.publish_many(DOSSIERS, changes)
    assert "change 2" in str(info.value)
    assert "applicant_citizen_id" in str(info.value)
    assert "0" * 30 not in str(info.value)
    with pytest.raises(PublishValidationError, match="change 1"):
        publisher.publish_many(DOSSIERS, [Change(good[0], 1), Change(None, 1)])
    publisher.publish(DOSSIERS, marker, version=1)
    publisher.flush(timeout=15)
    keys = [m.key() for m in consume_until(kafka_bootstrap, start, marker.dossier_id.encode())]
    assert [k for k in keys if k in batch_keys] == []
    assert keys.count(marker.dossier_id.encode()) == 1


def test_a_batch_with_one_event_over_the_limit_sends_nothing(
    settings: Settings, kafka_bootstrap: str
) -> None:
    """Its first event is encoded (the schema registered); the second is over the
    producer's limit: the Publisher refuses the batch, and none of it arrives."""
    limited = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "message_max_bytes": 1_000},
        schema_registry={"url": settings.schema_registry.url},
    )
    small, large = dossier(), dossier(procedure_name="Đ" * 500)
    marker = dossier()
    start = positions(kafka_bootstrap, DOSSIERS.raw_topic)
    with Publisher(limited, source_system=SOURCE) as pub:
        with pytest.raises(RecordTooLargeError, match="change 1 of the batch") as info:
            pub.publish_many(DOSSIERS, [Change(small, 1), Change(large, 2)])
        assert "Đ" not in str(info.value)
        pub.publish(DOSSIERS, marker, version=1)
        pub.flush(timeout=15)
    keys = [m.key() for m in consume_until(kafka_bootstrap, start, marker.dossier_id.encode())]
    assert small.dossier_id.encode() not in keys
    assert large.dossier_id.encode() not in keys


def test_async_publish_arrives(settings: Settings, kafka_bootstrap: str) -> None:
    models = [dossier() for _ in range(4)]
    start = positions(kafka_bootstrap, DOSSIERS.raw_topic)

    async def main() -> tuple[str, list[str]]:
        async with AsyncPublisher(settings, source_system=SOURCE) as pub:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            task = asyncio.create_task(ticker())
            one = await pub.publish(DOSSIERS, models[0], version=1)
            many = await pub.publish_many(DOSSIERS, (Change(m, 1) for m in models[1:]))
            await pub.flush(timeout=15)
            task.cancel()
            assert ticks > 0  # the loop kept running while we waited
            return one, many

    one, many = asyncio.run(main())
    last = models[-1].dossier_id.encode()
    wanted = {m.dossier_id.encode() for m in models}
    got = [m for m in consume_until(kafka_bootstrap, start, last, idle_s=1.0) if m.key() in wanted]
    assert sorted(headers(m)["ce_id"].decode() for m in got) == sorted([one, *many])


def _decode(registry: SchemaRegistryClient, dataset: Dataset, msg: Message) -> dict[str, object]:
    return AvroDeserializer(registry, load_schema(dataset.raw_schema))(msg.value(), None)


def test_composite_key_dataset(
    publisher: Publisher, kafka_bootstrap: str, registry: SchemaRegistryClient
) -> None:
    school = f"THPT-{uuid.uuid4().hex[:8]}"
    stats = [
        ClassStat(
            school_id=school,
            school_year="2025-2026",
            grade=grade,
            class_count=4,
            student_count=160,
            female_student_count=80,
            ethnic_minority_student_count=3,
            reported_date=date(2025, 9, 30),
        )
        for grade in (10, 11, 12)
    ]
    keys = [CLASS_STATS.key_of(s.model_dump(mode="json")).encode() for s in stats]
    assert keys[0] == f"{school}|2025-2026|10".encode()
    start = positions(kafka_bootstrap, CLASS_STATS.raw_topic)
    ids = publisher.publish_many(CLASS_STATS, [Change(s, 1) for s in stats])
    publisher.flush(timeout=15)
    got = [m for m in consume_until(kafka_bootstrap, start, keys[-1]) if m.key() in keys]
    assert sorted(m.key() or b"" for m in got) == sorted(keys)
    for m in got:
        assert m.topic() == CLASS_STATS.raw_topic
        env = _decode(registry, CLASS_STATS, m)
        assert str(env["event_id"]) in ids
        assert headers(m)["ce_type"] == b"vn.gov.databus.education.class_stats.c"


def test_other_dataset_goes_to_its_own_topic(
    publisher: Publisher, kafka_bootstrap: str, registry: SchemaRegistryClient
) -> None:
    reading = StationReading(
        station_id=f"ST-{uuid.uuid4().hex[:8]}",
        station_type=StationType.AIR,
        reading_time="2025-08-01T08:00:00+07:00",
        latitude=16.05,
        longitude=108.2,
        aqi=42,
        pm25=12.5,
    )
    key = READINGS.key_of(reading.model_dump(mode="json")).encode()
    start = positions(kafka_bootstrap, READINGS.raw_topic)
    event_id = publisher.publish(READINGS, reading, version=1, op=Op.READ)
    publisher.flush(timeout=15)
    got = [m for m in consume_until(kafka_bootstrap, start, key) if m.key() == key]
    assert len(got) == 1
    assert got[0].topic() == READINGS.raw_topic == "environment.station_readings.raw.v1"
    h = headers(got[0])
    assert h["ce_type"] == b"vn.gov.databus.environment.station_readings.r"
    assert h["ce_source"] == f"/databus/{SOURCE}/{READINGS.owner_unit}".encode()
    env = _decode(registry, READINGS, got[0])
    assert str(env["event_id"]) == event_id
    assert env["after"] == reading.model_dump(mode="json")
