"""Create the bus's topics up front, with explicit partitions and retention.

Relying on broker auto-creation gives default partition counts and leaves
consumers that subscribed early waiting for a metadata refresh (minutes).
Tansu returns topic configs only when they were set at creation, so
``retention.ms`` is always set explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bus.errors import StackError
from bus.reconcile import DECLARATIONS_TOPIC
from bus.settings import Settings
from schemas.catalog import ALERTS_TOPIC, DATASETS, QUALITY_TOPIC

__all__ = [
    "TopicSpec",
    "bus_topics",
    "changelog_topic",
    "ensure_topics",
    "processor_topics",
    "rule_deltas_topic",
    "sink_dlq_spec",
    "sink_dlq_topic",
    "unit_stats_topic",
]

_WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int = -1
    compact: bool = False

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": "compact" if self.compact else "delete",
        }


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


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    admin = AdminClient(settings.kafka.client_config())
    wanted = list(specs)
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(s.name, s.partitions, settings.kafka.replication_factor, config=s.config())
        for s in wanted
        if s.name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another process won the race: fine
            raise StackError(f"could not create topic {name}: {err}") from exc
    return created
