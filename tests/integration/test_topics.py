"""Topic creation against the real broker: partitions, retention, idempotence, names."""

from __future__ import annotations

import re
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from schemas.catalog import ALERTS_TOPIC, DATASETS, QUALITY_TOPIC
from schemas.topics import DECLARATIONS_TOPIC, bus_topics, processor_topics

pytestmark = pytest.mark.integration

TOPIC_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.(raw|std|shared|dlq)\.v[1-9][0-9]*")


def partition_counts(settings: Settings) -> dict[str, int]:
    admin = AdminClient(settings.kafka.client_config())
    return {
        name: len(meta.partitions) for name, meta in admin.list_topics(timeout=10).topics.items()
    }


def test_bus_topics_follow_the_naming_convention(stack_settings: Settings) -> None:
    names = [spec.name for spec in bus_topics(stack_settings)]

    assert len(names) == len(set(names))
    assert names.count(ALERTS_TOPIC) == 1 and ALERTS_TOPIC == "alerts.v1"
    # The processor's own topics are internal (prefixed with its group, as Faust's are).
    internal = {spec.name for spec in processor_topics(stack_settings)}
    assert all(name.startswith(stack_settings.processor_group + "-") for name in internal)
    assert len(internal) == len(DATASETS) + 2  # a changelog per dataset, deltas, stats
    for name in set(names) - internal:
        assert name in (ALERTS_TOPIC, QUALITY_TOPIC, DECLARATIONS_TOPIC) or TOPIC_NAME.fullmatch(
            name
        ), name
    for ds in DATASETS.values():
        assert {f"{ds.id}.{stage}.v{ds.major}" for stage in ("raw", "std", "dlq")} <= set(names)
    assert len(names) == 3 * len(DATASETS) + 3 + len(internal)
    assert {spec.partitions for spec in bus_topics(stack_settings)} == {
        stack_settings.kafka.partitions
    }


def test_ensure_topics_creates_the_catalog_once(stack_settings: Settings) -> None:
    # Another test module may have created the catalog topics already: whatever this
    # call creates must have the configured partitions, and afterwards all exist.
    specs = bus_topics(stack_settings)
    created = ensure_topics(stack_settings, specs)

    counts = partition_counts(stack_settings)
    assert {spec.name for spec in specs} <= set(counts)
    for name in created:
        assert counts[name] == stack_settings.kafka.partitions, name
    assert ensure_topics(stack_settings, specs) == []


def test_ensure_topics_uses_each_specs_partitions_and_retention(
    stack_settings: Settings,
) -> None:
    tag = uuid.uuid4().hex[:10]
    specs = [
        TopicSpec(f"test.topics{tag}.raw.v1", 3),
        TopicSpec(f"test.topics{tag}.dlq.v1", 1, retention_ms=3_600_000),
    ]

    assert sorted(ensure_topics(stack_settings, specs)) == sorted(s.name for s in specs)
    assert ensure_topics(stack_settings, specs) == []  # idempotent
    # A mixed list creates only what is missing.
    extra = TopicSpec(f"test.topics{tag}.std.v1", 2)
    assert ensure_topics(stack_settings, [*specs, extra]) == [extra.name]

    counts = partition_counts(stack_settings)
    assert [counts[s.name] for s in [*specs, extra]] == [3, 1, 2]

    admin = AdminClient(stack_settings.kafka.client_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, specs[1].name)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"


def test_a_topic_named_twice_is_created_once_as_first_given(stack_settings: Settings) -> None:
    name = f"test.twice_{uuid.uuid4().hex[:8]}.raw.v1"
    created = ensure_topics(stack_settings, [TopicSpec(name, 2), TopicSpec(name, 5)])
    assert created == [name]
    assert partition_counts(stack_settings)[name] == 2
