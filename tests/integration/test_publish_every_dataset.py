"""Every catalog dataset's simulated records publish through the Publisher and decode back."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition
from registry_clients import registry_client

from bus.consumers import take
from bus.settings import Settings
from bus.topic_admin import ensure_topics
from producers.publisher import Publisher
from producers.simulators import SIMULATORS, SimSpec, generate_dataset, publish_records
from schemas.catalog import DATASETS
from schemas.codec import AvroDeserializer
from schemas.topics import bus_topics

pytestmark = pytest.mark.integration


def test_every_dataset_publishes_and_decodes(stack_settings: Settings) -> None:
    ensure_topics(stack_settings, bus_topics(stack_settings))
    spec = SimSpec(days=2, per_day=4, seed=5, end=datetime(2026, 11, 20, tzinfo=UTC))
    sent: dict[str, set[str]] = {}
    with Publisher(stack_settings, source_system="sim-all") as publisher:
        for dataset_id in sorted(SIMULATORS):
            records = generate_dataset(dataset_id, spec)[:20]
            assert records, dataset_id
            publish_records(publisher, records)
            sent[dataset_id] = {r.event_id for r in records}
    decode = AvroDeserializer(registry_client(stack_settings.schema_registry.client_config()))
    for dataset_id, ids in sent.items():
        topic = DATASETS[dataset_id].raw_topic
        consumer = Consumer(
            {
                **stack_settings.kafka.client_config(),
                "group.id": f"every-{dataset_id}-{time.monotonic_ns()}",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        seen: set[str] = set()
        eof: set[int] = set()
        while len(eof) < len(parts):
            for msg in take(consumer, 500, 1.0):
                if msg.error():
                    eof.add(msg.partition() or 0)
                else:
                    seen.add(str(decode(msg.value())["event_id"]))
        consumer.close()
        assert ids <= seen, f"{dataset_id}: {len(ids - seen)} events missing"
