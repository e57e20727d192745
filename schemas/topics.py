"""The bus's topics: their names and how each is created (partitions, retention).

Relying on broker auto-creation gives default partition counts and leaves
consumers that subscribed early waiting for a metadata refresh (minutes).
Tansu returns topic configs only when they were set at creation, so
``retention.ms`` is always set explicitly.
"""

from __future__ import annotations

from bus.settings import Settings
from bus.topic_admin import TopicSpec
from schemas.catalog import ALERTS_TOPIC, DATASETS, QUALITY_TOPIC

__all__ = [
    "DECLARATIONS_SCHEMA",
    "DECLARATIONS_TOPIC",
    "TopicSpec",
    "bus_topics",
    "changelog_topic",
    "processor_topics",
    "rule_deltas_topic",
    "sink_dlq_spec",
    "sink_dlq_topic",
    "unit_stats_topic",
]

DECLARATIONS_TOPIC = "control.declarations.v1"
"""What each source declares it sent, per unit and day (reconciliation)."""
DECLARATIONS_SCHEMA = "control/declarations.v1.avsc"

_WEEK_MS = 7 * 24 * 3600 * 1000


def bus_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the catalog implies: raw, std and dlq per dataset, plus alerts and
    the sources' declarations (reconciliation)."""
    n = settings.kafka.partitions
    specs = []
    for ds in DATASETS.values():
        specs += [
            TopicSpec(ds.raw_topic, n),
            TopicSpec(ds.std_topic, n),
            TopicSpec(ds.dlq_topic, n, retention_ms=4 * _WEEK_MS),
        ]
    specs.append(TopicSpec(ALERTS_TOPIC, n))
    specs.append(TopicSpec(QUALITY_TOPIC, n, retention_ms=4 * _WEEK_MS))
    specs.append(TopicSpec(DECLARATIONS_TOPIC, n))
    return specs + processor_topics(settings)


def processor_topics(settings: Settings) -> list[TopicSpec]:
    """The processor's own topics: the entity changelogs (partitioned like the raw
    topics they shadow) and the per-batch aggregates its agents read."""
    n = settings.kafka.partitions
    group = settings.processor_group
    specs = [TopicSpec(changelog_topic(group, ds.id), n, compact=True) for ds in DATASETS.values()]
    specs.append(TopicSpec(rule_deltas_topic(group), n, retention_ms=_WEEK_MS))
    specs.append(TopicSpec(unit_stats_topic(group), n, retention_ms=_WEEK_MS))
    return specs


def changelog_topic(group: str, dataset_id: str) -> str:
    """The processor's entity state for one dataset (dedup and order)."""
    return f"{group}-{dataset_id}-entities-changelog"


def rule_deltas_topic(group: str) -> str:
    return f"{group}-rule-deltas"


def unit_stats_topic(group: str) -> str:
    return f"{group}-unit-stats"


def sink_dlq_topic(sink_name: str) -> str:
    """Where a sink sends the records its destination refused for good."""
    return f"sink.{sink_name}.dlq.v1"


def sink_dlq_spec(settings: Settings, sink_name: str) -> TopicSpec:
    # Kept as long as the processor's DLQs: operators need time to look and replay.
    return TopicSpec(sink_dlq_topic(sink_name), settings.kafka.partitions, 4 * _WEEK_MS)
