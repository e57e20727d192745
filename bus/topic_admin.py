"""Create Kafka topics up front, with explicit partitions and retention.

Relying on broker auto-creation gives default partition counts and leaves
consumers that subscribed early waiting for a metadata refresh (minutes).
Tansu returns topic configs only when they were set at creation, so
``retention.ms`` is always set explicitly. Which topics the bus has is the
contract's business (``schemas.topics``); this module only creates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bus.errors import StackError
from bus.settings import Settings

__all__ = ["TopicSpec", "ensure_topics"]


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


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created. A topic
    named twice is created once, as first given (a request naming a topic twice gets
    the embedded broker's reply to it refused by the client as malformed)."""
    admin = AdminClient(settings.kafka.client_config())
    wanted: dict[str, TopicSpec] = {}
    for spec in specs:
        wanted.setdefault(spec.name, spec)
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(s.name, s.partitions, settings.kafka.replication_factor, config=s.config())
        for s in wanted.values()
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
