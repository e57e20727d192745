"""What every batched consumer of the bus shares — the sink runner, the share loop, the
processor's loop, the agencies' Subscriber and subscription API: its configuration,
the offsets to commit after a batch, the lag it reports, and how to take records
without waiting for a batch to fill."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bus.settings import Settings

__all__ = [
    "REBALANCING",
    "TP",
    "commit_unless_rebalancing",
    "consumer_config",
    "next_offsets",
    "partition_lag",
    "take",
]

TP = tuple[str, int]

log = logging.getLogger(__name__)

# A commit refused because the group is rebalancing (or the member is no longer known,
# e.g. to a broker that restarted), or because there is no coordinator to take it
# right now (the broker is down or restarting): the records were handled, and whoever
# owns the partitions next is given them again (at least once); a later commit covers
# them. A sink killed by such a refusal (exit 1) was seen when the embedded broker
# restarted.
REBALANCING = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._WAIT_COORD,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


def commit_unless_rebalancing(consumer: Consumer, offsets: list[TopicPartition], who: str) -> bool:
    """Commit synchronously; False (logged) when the group refused it in a rebalance.
    Any other commit error is raised."""
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0]
        if not (isinstance(err, KafkaError) and err.code() in REBALANCING):
            raise
        log.warning("%s: commit refused (%s), replay expected", who, err)
        return False
    return True


def consumer_config(settings: Settings, group: str) -> dict[str, object]:
    return {
        **settings.kafka.client_config(),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
        "partition.assignment.strategy": "cooperative-sticky",
        # Notice topics created after subscribing within seconds, not librdkafka's 5 min.
        "topic.metadata.refresh.interval.ms": 5000,
    }


def next_offsets(positions: Iterable[tuple[str, int, int]]) -> dict[TP, int]:
    """The offset to commit per partition: one past the last record seen."""
    out: dict[TP, int] = {}
    for topic, partition, offset in positions:
        out[(topic, partition)] = max(out.get((topic, partition), -1), offset + 1)
    return out


def partition_lag(low: int, high: int, next_offset: int) -> int | None:
    """Records between the next offset to commit and the high watermark; None while
    the watermark is unknown (librdkafka reports -1001 before the first fetch)."""
    if high < 0:
        return None
    start = next_offset if next_offset >= 0 else max(low, 0)
    return max(0, high - start)


def take(consumer: Consumer, n: int, wait: float) -> list[Message]:
    """Up to ``n`` records (or partition events): wait at most ``wait`` seconds for the
    first, then take whatever else is already fetched. confluent-kafka's own
    ``consume(n, wait)`` waits until it has ``n`` or the time is up, which adds the whole
    wait to every read that finds fewer — at a trickle, and at every end of a topic."""
    first: list[Message] = consumer.consume(1, wait)
    if not first or n <= 1:
        return first
    return first + consumer.consume(n - 1, 0)
