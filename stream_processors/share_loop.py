"""Publish shared datasets: consume std topics, mask, produce to the shared topics.

One batched confluent-kafka loop for every dataset the access policy shares (group
``settings.access.share_group``). Per batch: decode each std event, build its shared
event (``stream_processors.share``), produce it with the idempotent producer, wait
until the broker acknowledged every record, then commit the std offsets, then append
one ``share.publish`` entry per dataset to the audit log. Each shared record is a
CloudEvent of its own (``schemas.headers.derive``): source ``urn:databus:share``, an id
derived from the std event's, ``ce_originid`` the std event's id. At-least-once: a crash before
the commit publishes the batch again; agencies deduplicate on ``event_id``.

A std record that does not decode (only our processor writes std topics, so a bug) is
logged and skipped: it is never forwarded. A registry or broker outage rewinds the
batch and raises a retriable error; ``run`` waits and tries again.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.audit import AuditLog
from bus.consumers import commit_unless_rebalancing, consumer_config, next_offsets, take
from bus.errors import CodecError, ConfigError, DatabusError, DeliveryError
from bus.kafka_client import registry_client
from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from schemas.access_policy import AccessPolicy
from schemas.codec import AvroDeserializer, AvroSerializer
from schemas.headers import SHARE_SOURCE, dataschema, derive, schema_version
from stream_processors.share import SharePlan, mask_event, share_plan, shared_key

__all__ = ["ShareLoop", "policy_plans"]

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT_S = 30.0


def policy_plans(policy: AccessPolicy) -> list[SharePlan]:
    """The share plan of every dataset the policy shares."""
    return [share_plan(ds, policy.shared[ds.id].join_keys) for ds in policy.shared_datasets()]


class ShareLoop:
    def __init__(
        self,
        settings: Settings,
        plans: Sequence[SharePlan],
        *,
        audit: AuditLog | None = None,
        registry: SchemaRegistryClient | None = None,
        group: str | None = None,
        batch_size: int = 500,
    ) -> None:
        key = settings.access.pseudonym_key
        if key is None and any(p.hashed for p in plans):
            raise ConfigError("DATABUS_ACCESS__PSEUDONYM_KEY must be set to hash join keys")
        # Without join keys the key is never used; an empty key still hashes nothing.
        self._key = key.get_secret_value().encode("utf-8") if key is not None else b""
        self._settings = settings
        self._plans = {p.std_topic: p for p in plans}
        self._audit = audit
        self._batch_size = batch_size
        # A registry client made here is closed with this object; one passed in is the caller's.
        registry, self._owned_registry = registry_client(settings, registry)
        client = registry
        self._decode = AvroDeserializer(client)
        self._encode = {p.std_topic: AvroSerializer(client, p.subject, p.schema_str) for p in plans}
        self._registry = client
        self._dataschema: dict[str, str] = {}
        self._consumer = Consumer(consumer_config(settings, group or settings.access.share_group))
        self._producer = Producer(
            {
                **settings.kafka.client_config(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
            }
        )
        self._started = False
        self.published = 0
        self.skipped = 0

    def start(self) -> None:
        if self._started:
            return
        n = self._settings.kafka.partitions
        ensure_topics(self._settings, [TopicSpec(p.shared_topic, n) for p in self._plans.values()])
        for topic, serializer in self._encode.items():
            _ = serializer.schema_id  # register the shared schemas before any record
            plan = self._plans[topic]
            version = schema_version(self._registry, plan.subject, plan.schema_str)
            self._dataschema[topic] = dataschema(plan.subject, version)
        self._consumer.subscribe(list(self._plans))
        self._started = True

    def run(self, stop: threading.Event | Callable[[], bool], retry_s: float = 2.0) -> None:
        should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
        wait = stop.wait if isinstance(stop, threading.Event) else threading.Event().wait
        try:
            self.start()
            while not should_stop():
                try:
                    self.poll_once()
                except DatabusError as exc:
                    if not exc.retriable:
                        raise
                    log.warning("share: %s; trying again in %.1f s", exc, retry_s)
                    wait(retry_s)
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._consumer.close()
        finally:
            self._producer.flush(_FLUSH_TIMEOUT_S)
            if self._owned_registry is not None:
                self._owned_registry.close()

    def poll_once(self, timeout: float = 0.5) -> int:
        """Consume, mask, publish and commit one batch; returns the records published."""
        self.start()
        messages = []
        for msg in take(self._consumer, self._batch_size, timeout):
            err = msg.error()
            if err is None:
                messages.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("share: consumer error: %s", err)
        if not messages:
            return 0
        try:
            counts = self._publish(messages)
        except BaseException:
            self._rewind(messages)
            raise
        ends = next_offsets(
            (m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages
        )
        offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
        # refused in a rebalance: published all the same; the next owner publishes
        # them again (at least once; subscribers dedupe on the CloudEvents id)
        commit_unless_rebalancing(self._consumer, offsets, "share")
        if self._audit is not None:
            for dataset, count in sorted(counts.items()):
                plan = next(p for p in self._plans.values() if p.dataset.id == dataset)
                self._audit.append(
                    actor="databus-share",
                    action="share.publish",
                    object=plan.shared_topic,
                    outcome="published",
                    detail={"dataset": dataset, "records": count},
                )
        published = sum(counts.values())
        self.published += published
        return published

    def _publish(self, messages: list[Message]) -> Counter[str]:
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        counts: Counter[str] = Counter()
        for msg in messages:
            topic = msg.topic() or ""
            plan = self._plans[topic]
            try:
                event = self._decode(msg.value())
            except CodecError as exc:
                self.skipped += 1
                log.error(
                    "share: undecodable std record %s[%s]@%s skipped: %s",
                    topic,
                    msg.partition(),
                    msg.offset(),
                    exc.reason,
                )
                continue
            value = self._encode[topic](mask_event(plan, event, self._key))
            where = f"{topic}:{msg.partition()}:{msg.offset()}"
            headers: list[tuple[str, str | bytes | None]] = [
                *derive(
                    msg.headers() or [],  # type: ignore[arg-type]
                    stage="share",
                    type=f"vn.gov.databus.{plan.dataset.id}.shared.{event.get('op')}",
                    source=SHARE_SOURCE,
                    fallback_id=str(event.get("event_id") or where),
                    fallback_source=SHARE_SOURCE,
                    time_ms=msg.timestamp()[1],
                    schema=self._dataschema.get(topic),
                )
            ]
            self._producer.produce(
                plan.shared_topic,
                value=value,
                key=shared_key(plan, msg.key(), self._key),
                headers=headers,
                on_delivery=delivered,
            )
            self._producer.poll(0)
            counts[plan.dataset.id] += 1
        left = self._producer.flush(_FLUSH_TIMEOUT_S)
        if left or failures:
            raise DeliveryError(
                f"the broker did not acknowledge {left + len(failures)} shared record(s): "
                f"{failures[:1] or 'timeout'}"
            )
        return counts

    def _rewind(self, messages: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            where = (m.topic() or "", m.partition() or 0)
            first[where] = min(first.get(where, m.offset() or 0), m.offset() or 0)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except Exception as exc:  # revoked meanwhile: the group replays it
                log.warning("share: could not rewind %s[%d]: %s", topic, partition, exc)
