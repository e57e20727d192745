"""The batched standardize loop, hosted in the Faust worker on a thread of its own.

Why not a Faust agent: Faust's per-event cost (~100 µs of stream machinery before
any work) caps an agent at a few thousand events/s on one core; a confluent-kafka
consumer taking hundreds of records per call does the same stateless work at a
multiple of that. Faust keeps what it is good at — tables, changelog recovery,
timers, the worker — and receives per-batch aggregates from this loop.

One batch, in an order that loses nothing and double-counts nothing:

1. ``BatchCore.process``: decode, dedup against the entity state, standardize;
2. produce std records and dead letters, flush — every one acknowledged;
3. produce the entity changelog, the rule deltas and the unit stats, flush;
4. commit the input offsets.

Steps 3 and 4 of one batch ride on the next batch's flush (or on an idle poll), so a
cycle costs one flush, and commits are asynchronous. A crash after 2 re-processes
the batch: std records go out again (sinks are idempotent on entity version), the
entity state has not changed, so nothing is counted twice. A crash after 3 re-reads
records the changelog already holds: they are recognised as redeliveries (same
offset) and only their rule deltas are sent again, which the rule stage drops by
source offset. A failed write rolls the entity state of the unfinished batches back
and processes their records again; so does a registry outage. Before partitions are
revoked and on stop, the pending batch is finished and committed.

Entity state lives in one changelog topic per dataset, partitioned like the raw
topic. When partitions are assigned, the loop replays their changelog up to a
marker it writes first — it does not trust high watermarks (the embedded broker
reports them approximately).
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from bus.consumers import partition_lag
from bus.errors import DatabusError, DeliveryError
from bus.metrics import Metrics
from bus.settings import Settings
from bus.topics import changelog_topic, rule_deltas_topic, unit_stats_topic
from producers.publisher import producer_config
from schemas.catalog import Dataset
from stream_processors.batch_core import BatchCore, BatchOutput, RawRecord
from stream_processors.batch_stats import STATS_GROUP, stats_key
from stream_processors.dlq import dlq_headers
from stream_processors.entity_state import Entity

__all__ = ["BatchLoop", "tune_gc_for_batches"]

log = logging.getLogger(__name__)

_MARKER_KEY = b"\x00databus-restore-marker"
_RESTORE_TIMEOUT_S = 120.0
_LAG_EVERY_S = 1.0


def tune_gc_for_batches() -> None:
    """Collect garbage less often: a batch allocates ~100 containers per event, so the
    default threshold (700) runs a young-generation collection every few events and
    costs ~20 % of the loop; the entity state grows, so older generations are scanned
    again and again. Called once by the processor process (a process-wide setting)."""
    gc.collect()
    gc.freeze()  # what start-up built (reference data, schemas) is never garbage
    gc.set_threshold(50_000, 20, 100)


class BatchLoop:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        core: BatchCore,
        datasets: Mapping[str, Dataset],  # by raw topic
        *,
        batch_size: int = 500,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._core = core
        self._datasets = datasets
        # Rule deltas keyed "<group>|<subject>", UnitStats keyed "<dataset>|<unit>".
        self._deltas_topic = rule_deltas_topic(settings.processor_group)
        self._stats_topic = unit_stats_topic(settings.processor_group)
        self._batch_size = batch_size
        self._clock_ms = clock_ms
        self._group = settings.processor_group
        self._changelogs = {t: changelog_topic(self._group, ds.id) for t, ds in datasets.items()}
        self._producer = Producer(producer_config(settings))
        self._failed: list[KafkaError] = []
        self.stop_event = threading.Event()
        # Read by the Faust timer (another thread): when a record was last taken, and
        # whether the last poll came back short (caught up with the input).
        self.last_record_monotonic = 0.0
        self.caught_up = False
        self.batches = 0
        self._pending: _Pending | None = None
        self._lag_group = f"{self._group}-standardize"
        self._lag_exported: set[tuple[str, int]] = set()
        self._lag_at = 0.0

    # ---- consumer wiring
    def _consumer(self) -> Consumer:
        kafka = self._settings.kafka
        return Consumer(
            {
                **kafka.client_config(),
                "group.id": self._lag_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": kafka.session_timeout_ms,
                "fetch.wait.max.ms": 10,
                "max.poll.interval.ms": 600_000,
            }
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        wanted = [(tp.topic, tp.partition) for tp in partitions]
        restored = self._restore(wanted)
        for (topic, partition), entities in restored.items():
            self._core.load(topic, partition, entities)
        log.info(
            "assigned %d partitions; %d entities restored in %.1f s",
            len(wanted),
            sum(len(e) for e in restored.values()),
            time.monotonic() - started,
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._core.drop(tp.topic, tp.partition)
            if (tp.topic, tp.partition) in self._lag_exported:
                self._lag_exported.discard((tp.topic, tp.partition))
                self._metrics.consumer_lag.remove(self._lag_group, tp.topic, str(tp.partition))

    def _restore(self, wanted: list[tuple[str, int]]) -> dict[tuple[str, int], dict[bytes, Entity]]:
        """Each partition's entities, replayed from its changelog up to a fresh marker."""
        out: dict[tuple[str, int], dict[bytes, Entity]] = {w: {} for w in wanted}
        if not wanted:
            return out
        marker = uuid.uuid4().hex.encode()
        by_changelog = {(self._changelogs[t], p): (t, p) for t, p in wanted}
        for topic, partition in by_changelog:
            self._producer.produce(topic, key=_MARKER_KEY, value=marker, partition=partition)
        self._flush_checked("restore markers")
        reader = Consumer(
            {
                **self._settings.kafka.client_config(),
                "group.id": f"{self._group}-restore-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in by_changelog])
        pending = set(by_changelog)
        deadline = time.monotonic() + _RESTORE_TIMEOUT_S
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise DeliveryError(f"restoring entity state timed out: {sorted(pending)}")
                for msg in reader.consume(1000, 0.5):
                    if msg.error():
                        continue
                    where = (msg.topic() or "", msg.partition() or 0)
                    key = msg.key() or b""
                    if key == _MARKER_KEY:
                        if msg.value() == marker:
                            pending.discard(where)
                        continue
                    if where in pending:
                        out[by_changelog[where]][key] = Entity.from_json(msg.value() or b"")
        finally:
            reader.close()
        return out

    # ---- producing
    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(err)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # librdkafka's queue is full: let it drain

    def _flush_checked(self, what: str) -> None:
        remaining = self._producer.flush(60.0)
        if remaining or self._failed:
            errors = {str(e) for e in self._failed[:5]}
            self._failed.clear()
            raise DeliveryError(f"{what}: {remaining} unsent, delivery errors {sorted(errors)}")

    def _produce_outputs(self, out: BatchOutput) -> None:
        """Phase 1 of a batch: std records and dead letters."""
        for topic, key, value, headers in out.std:
            self._produce(topic, key, value, headers)
        for dead in out.dead:
            r = dead.record
            self._produce(
                self._datasets[r.topic].dlq_topic,
                r.key,
                r.value or b"",
                dlq_headers(
                    r.headers,
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    letter=dead.letter,
                ),
            )

    def _produce_state(self, out: BatchOutput) -> None:
        """Phase 2 of a batch, once its phase 1 is acknowledged: state and aggregates."""
        for (topic, partition, key), entity in out.entities.items():
            self._produce(self._changelogs[topic], key, entity.to_json(), partition=partition)
        for (group, subject), deltas in out.deltas.items():
            payload = {"group": group, "key": subject, "deltas": deltas}
            self._produce(self._deltas_topic, f"{group}|{subject}".encode(), _json(payload))
        for stats in out.stats.values():
            name = stats_key(stats.dataset, stats.unit)
            body = stats.to_json()
            self._produce(self._stats_topic, name.encode(), _json(body))
            # The stats also feed the rules on delivery (silence, dead-letter share);
            # offset -1: a stats delta is applied as it comes, never filtered.
            delta = {
                "sign": 1,
                "payload": body,
                "event_ms": stats.last_event_ms,
                "src": "",
                "offset": -1,
            }
            self._produce(
                self._deltas_topic,
                f"{STATS_GROUP}|{name}".encode(),
                _json({"group": STATS_GROUP, "key": name, "deltas": [delta]}),
            )

    def _count(self, out: BatchOutput) -> None:
        """Metrics of a batch, once it is fully written (a retried batch counts once)."""
        m = self._metrics
        for (dataset, _unit), stats in out.stats.items():
            m.events_consumed.labels(dataset, "raw").inc(stats.received)
            if stats.valid:
                m.events_produced.labels(dataset, "std").inc(stats.valid)
            if stats.last_event_ms:
                m.last_event_timestamp.labels(dataset, "std").set(stats.last_event_ms / 1000)
        for dead in out.dead:
            m.events_dead_lettered.labels(dead.dataset, dead.letter.stage, dead.letter.reason).inc()
        for (dataset, verdict), n in out.dropped.items():
            m.events_dropped.labels(dataset, verdict).inc(n)

    def _observe_latency(self, msgs: list[Message]) -> None:
        """End-to-end latency of a batch whose std records the broker just acknowledged:
        from each raw record's Kafka timestamp (the publisher produces it with the
        envelope's ``ts_ms``; reading it costs nothing, unlike parsing ``ce_time``)."""
        now_ms = time.time() * 1000
        histograms: dict[str, Any] = {}
        for m in msgs:
            if m.error():
                continue
            kind, ts_ms = m.timestamp()
            if kind == TIMESTAMP_NOT_AVAILABLE or ts_ms <= 0:
                continue
            topic = m.topic() or ""
            child = histograms.get(topic)
            if child is None:
                dataset = self._datasets.get(topic)
                if dataset is None:
                    continue
                child = histograms[topic] = self._metrics.end_to_end_latency.labels(dataset.id)
            child.observe(max(0.0, now_ms - ts_ms) / 1000)

    def _export_lag(self, consumer: Consumer) -> None:
        """Lag per owned partition, at most once a second: local calls only (position and
        cached watermarks). The embedded broker (Tansu) reports the high watermark
        approximately, so there this lag is approximate (low, never negative)."""
        now = time.monotonic()
        if now - self._lag_at < _LAG_EVERY_S:
            return
        self._lag_at = now
        try:
            positions = consumer.position(consumer.assignment())
        except (KafkaException, RuntimeError):
            return
        for tp in positions:
            try:
                low, high = consumer.get_watermark_offsets(tp, cached=True)
            except (KafkaException, RuntimeError):
                continue
            lag = partition_lag(low, high, tp.offset)
            if lag is not None:
                self._metrics.consumer_lag.labels(self._lag_group, tp.topic, str(tp.partition)).set(
                    lag
                )
                self._lag_exported.add((tp.topic, tp.partition))

    # ---- the loop
    def _cycle(self, consumer: Consumer, records: list[RawRecord], *, sync: bool = False) -> None:
        """Process ``records`` (may be empty) and finish the pending batch, in one flush.

        The pending batch's phase 1 was acknowledged in the previous cycle, so its
        phase 2 can go out together with this batch's phase 1. Once the flush is
        acknowledged, the pending batch is complete: its offsets are committed. On a
        failure, both batches' entity state is rolled back and all their records are
        processed again as one batch (their std records may go out twice).
        """
        delay = 0.2
        while True:
            started = time.perf_counter()
            pending = self._pending
            out: BatchOutput | None = None
            try:
                if records:
                    out = self._core.process(records, self._clock_ms())
                    self._produce_outputs(out)
                if pending is not None:
                    self._produce_state(pending.out)
                self._flush_checked("batch outputs")
            except DatabusError as exc:
                if not exc.retriable:
                    raise
                self._core.rollback()
                if pending is not None:
                    records = pending.records + records
                    self._pending = None
                log.warning(
                    "batch of %d not written (%s); retrying in %.1f s", len(records), exc, delay
                )
                if self.stop_event.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)
                continue
            if pending is not None:
                self._core.settle()
                self._count(pending.out)
                self._commit(consumer, pending.records, asynchronous=not sync)
                self.batches += 1
            self._pending = _Pending(records, out) if out is not None else None
            self._metrics.processing_seconds.labels("all", "batch").observe(
                time.perf_counter() - started
            )
            return

    def _commit(self, consumer: Consumer, records: list[RawRecord], *, asynchronous: bool) -> None:
        ends: dict[tuple[str, int], int] = {}
        for r in records:
            ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), -1), r.offset)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in ends.items()]
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # a rebalance took the partitions: the new owner redoes it
            log.warning("offset commit failed (%s); the batch may be processed again", exc)

    def _finish_pending(self, consumer: Consumer) -> None:
        """Write the pending batch's phase 2 and commit it (before a revoke or a stop)."""
        if self._pending is None:
            return
        try:
            self._cycle(consumer, [], sync=True)
        except DatabusError as exc:
            log.warning("could not finish the last batch (%s); it will be processed again", exc)
            self._core.rollback()
            self._pending = None

    def run(self) -> None:
        """Consume, process and commit until ``stop_event`` is set."""
        consumer = self._consumer()

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._finish_pending(c)
            self._on_revoke(c, partitions)

        consumer.subscribe(list(self._datasets), on_assign=self._on_assign, on_revoke=on_revoke)
        try:
            while not self.stop_event.is_set():
                msgs = consumer.consume(self._batch_size, 0.05)
                self.caught_up = len(msgs) < self._batch_size
                records = [_record(m) for m in msgs if not m.error()]
                if records:
                    self.last_record_monotonic = time.monotonic()
                    self._cycle(consumer, records)
                    self._observe_latency(msgs)
                elif self._pending is not None:
                    self._cycle(consumer, [])  # idle: complete the last batch now
                self._export_lag(consumer)
        finally:
            try:
                self._finish_pending(consumer)
            finally:
                consumer.close()
                self._producer.flush(30.0)


@dataclass(frozen=True)
class _Pending:
    """A batch whose std records and dead letters are written; its state is not yet."""

    records: list[RawRecord]
    out: BatchOutput


def _record(m: Message) -> RawRecord:
    return RawRecord(
        m.topic() or "",
        m.partition() or 0,
        m.offset() or 0,
        m.key(),
        m.value(),
        cast(list[tuple[str, bytes | None]], list(m.headers() or [])),
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
