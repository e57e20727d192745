"""Reconciliation: what a source declared it sent, against what the bus received.

Per (dataset, unit, local day): the declared count (``control.declarations.v1``,
latest declaration per key), the distinct events on the dataset's raw topic
(deduplicated on ``event_id``, so a re-sent event counts once) and the distinct
events on its dead-letter topic. ``reconcile`` is pure; ``count_topics`` reads the
topics from the beginning and counts what it consumes (the embedded broker's high
watermarks are not reliable).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.consumers import take
from bus.errors import CodecError, ConfigError, DeliveryError
from bus.settings import Settings
from schemas.catalog import DATASETS, load_schema
from schemas.codec import AvroDeserializer
from schemas.domain.delivery import Key, latest_declarations, local_day
from schemas.topics import DECLARATIONS_SCHEMA, DECLARATIONS_TOPIC

__all__ = [
    "TopicCounts",
    "count_topics",
    "read_from_start",
]


@dataclass
class TopicCounts:
    """What ``count_topics`` found; ``undecodable`` counts, per topic, the records
    whose bytes are not a valid event (they cannot be attributed to a unit)."""

    declared: dict[Key, int] = field(default_factory=dict)
    received: dict[Key, int] = field(default_factory=dict)
    dead_lettered: dict[Key, int] = field(default_factory=dict)
    undecodable: Counter[str] = field(default_factory=Counter)


def read_from_start(settings: Settings, topic: str, timeout: float) -> Iterator[Message]:
    """Every record of ``topic`` from the beginning; nothing when it does not exist."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"databus-reconcile-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        # All topics, not `list_topics(topic)`: asking for one may auto-create it.
        meta = consumer.list_topics(timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return
        parts = set(meta.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while eof != parts:
            if time.monotonic() > deadline:
                raise DeliveryError(f"reading {topic} did not reach its end in {timeout:.0f} s")
            for msg in take(consumer, 500, 1.0):
                err = msg.error()
                if err is None:
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition() or 0)
                else:
                    raise DeliveryError(f"reading {topic}: {err.str()}", retriable=err.retriable())
    finally:
        consumer.close()


def _event_key(dataset_id: str, event: Mapping[str, Any]) -> tuple[str, Key]:
    """(event id, key) of a decoded raw event; KeyError/TypeError when it lacks them."""
    source = event["source"]
    return str(event["event_id"]), (dataset_id, str(source["unit"]), local_day(source["ts_ms"]))


def _distinct_events(
    settings: Settings,
    decode: AvroDeserializer,
    dataset_id: str,
    topic: str,
    timeout: float,
    undecodable: Counter[str],
) -> dict[str, Key]:
    seen: dict[str, Key] = {}
    for msg in read_from_start(settings, topic, timeout):
        try:
            event_id, key = _event_key(dataset_id, decode(msg.value()))
        except (CodecError, KeyError, TypeError, AttributeError):
            undecodable[topic] += 1
            continue
        seen.setdefault(event_id, key)
    return seen


def count_topics(
    settings: Settings,
    datasets: Iterable[str],
    day_from: date,
    day_to: date,
    *,
    timeout: float = 60.0,
) -> TopicCounts:
    """Declared, received and dead-lettered counts per key, for days in [from, to].

    Raw events are counted once per ``event_id``; so are dead-lettered ones (a
    replay may dead-letter an event twice). DLQ records keep the original bytes,
    which may be anything a source sent: records that do not decode (on either
    topic) are skipped and counted in ``undecodable`` per topic.
    """
    ids = list(datasets)
    unknown = [d for d in ids if d not in DATASETS]
    if unknown:
        raise ConfigError(f"unknown datasets: {', '.join(unknown)}")
    counts = TopicCounts()

    def in_range(key: Key) -> bool:
        return day_from <= key[2] <= day_to

    with SchemaRegistryClient(settings.schema_registry.client_config()) as client:
        decl_decode = AvroDeserializer(client, load_schema(DECLARATIONS_SCHEMA))
        declarations = []
        for msg in read_from_start(settings, DECLARATIONS_TOPIC, timeout):
            try:
                declarations.append(decl_decode(msg.value()))
            except CodecError:
                counts.undecodable[DECLARATIONS_TOPIC] += 1
        counts.declared = {
            k: n
            for k, n in latest_declarations(declarations).items()
            if k[0] in ids and in_range(k)
        }
        decode = AvroDeserializer(client)
        for dataset_id in ids:
            ds = DATASETS[dataset_id]
            for target, topic in (
                (counts.received, ds.raw_topic),
                (counts.dead_lettered, ds.dlq_topic),
            ):
                events = _distinct_events(
                    settings, decode, dataset_id, topic, timeout, counts.undecodable
                )
                for key in events.values():
                    if in_range(key):
                        target[key] = target.get(key, 0) + 1
    return counts
