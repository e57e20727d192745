"""The batched standardize loop, hosted in the Faust worker on a thread of its own.

Why not a Faust agent: Faust's per-event cost (~100 µs of stream machinery before
any work) caps an agent at a few thousand events/s on one core; a confluent-kafka
consumer taking hundreds of records per call does the same stateless work at a
multiple of that. Faust keeps what it is good at — tables, changelog recovery,
timers, the worker — and receives per-batch aggregates from this loop.

Records are taken as they come — a short wait for the first, then whatever else is
already fetched — so a record waits for the work before it, never for a batch to
fill. Each batch, in an order that loses nothing and double-counts nothing:

1. ``BatchCore.process_into``: decode, dedup against the entity state, standardize;
2. produce its std records and dead letters at once;
3. its state changes join a group of batches (sealed after ``state_every_s``, or at
   ``_GROUP_MAX_BATCHES`` batches' worth of records); once the group is sealed and
   all its outputs are acknowledged: produce the group's entity changelog, rule
   deltas and unit stats — one aggregate per entity, subject and unit, so Faust's
   stages see a bounded rate however small the batches are and however fast records
   come;
4. once all of 3 is acknowledged, and every earlier group is committed: commit the
   group's input offsets.

The loop never blocks on the broker: while librdkafka delivers, the next records are
consumed and processed, and the delivery reports move the work forward
(``stream_processors.inflight`` keeps the rules).

A record whose output the broker refuses for good — too large
(``MSG_SIZE_TOO_LARGE``, locally or from the broker) or invalid — is dead-lettered
instead (reason ``record_too_large`` or ``record_refused``): the refusal is noted by its
coordinates, the work in flight is recalled as after any failed write, and the record,
processed again, becomes a dead letter and never enters the entity state. A dead letter
that is itself too large is written without the original bytes: its coordinates, size
and SHA-256 instead. Nothing is committed past a record before its output is
acknowledged; an unexpected error stops the loop without committing the work in flight.

A crash after 2 re-processes the records: std records go out again (sinks are
idempotent on entity version), the entity state has not changed, so nothing is
counted twice. A crash after 3 re-reads records the changelog already holds: they
are recognised as redeliveries (same offset) and only their rule deltas are sent
again, which the rule stage drops by source offset. A failed write, or a registry
outage, rolls back the entity state of every group in flight and processes their
records again. Before partitions are revoked and on stop, the work in flight is
finished and committed.

Entity state lives in one changelog topic per dataset, partitioned like the raw
topic. When partitions are assigned, the loop replays their changelog up to a
marker it writes first — it does not trust high watermarks (the embedded broker
reports them approximately).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any, cast

import orjson
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

from bus import tracing
from bus.consumers import partition_lag, take
from bus.errors import DatabusError, DeliveryError
from bus.kafka_client import producer_config
from bus.logs import record_fields
from bus.metrics import Metrics
from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from schemas.catalog import Dataset
from schemas.dead_letters import DeadLetter, dlq_headers, omitted_dlq_headers
from schemas.topics import changelog_topic, rule_deltas_topic, unit_stats_topic
from stream_processors.batch_core import BatchCore, BatchOutput, RawRecord
from stream_processors.batch_stats import STATS_GROUP, stats_key
from stream_processors.entity_state import Entity
from stream_processors.inflight import Group, Groups, Writes
from stream_processors.state_store import EntityStore

__all__ = [
    "BatchLoop",
    "RestoreWatch",
    "raw_records",
    "snapshot_covered_group",
    "snapshot_index_topic",
    "snapshot_topic",
    "tune_gc_for_batches",
]

log = logging.getLogger(__name__)

_MARKER_KEY = b"\x00databus-restore-marker"
_SNAPSHOT_BEGIN = b"\x00databus-snapshot-begin"
_SNAPSHOT_END = b"\x00databus-snapshot-end"
_RESTORE_PROGRESS_EVERY_S = 10.0  # how often a long restore logs how far it is
_LAG_EVERY_S = 1.0
_APPLY_CHUNK = 20_000  # changelog records per atomic write to the local store in a restore
_FIRST_RECORD_WAIT_S = 0.05  # idle: how long one consume call waits for a record
_ACK_WAIT_S = 0.005  # work in flight, nothing new: how long to wait for reports
_MAX_IN_FLIGHT = 8  # groups written but not committed before the loop stops taking more
# A group is sealed by time (``state_every_s``); this many batches' worth of records
# seals it earlier, which bounds what a failure recalls. Not one batch: under load the
# Faust stages would then get a message per alert subject per batch, with a table
# write each (16,727 rule deltas for 30,000 dossier events instead of ~10,500).
_GROUP_MAX_BATCHES = 20
_FLUSH_TIMEOUT_S = 60.0
_KEPT_KEY_BYTES = 1024  # a digest-only dead letter keeps the original key up to this size
_FETCH_WAIT_MS = 50
_ANY_PARTITION = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the partitioner decides
# Refusals of one record that a retry cannot overcome: the record is dead-lettered.
_TOO_LARGE = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # librdkafka's message.max.bytes, or the broker's
        KafkaError.RECORD_LIST_TOO_LARGE,
    }
)
_REFUSED = _TOO_LARGE | {KafkaError.INVALID_RECORD, KafkaError.POLICY_VIOLATION}


def tune_gc_for_batches() -> None:
    """Collect garbage less often: a batch allocates ~100 containers per event, so the
    default threshold (700) runs a young-generation collection every few events and
    costs ~20 % of the loop; the entity state grows, so older generations are scanned
    again and again. Called once by the processor process (a process-wide setting)."""
    gc.collect()
    gc.freeze()  # what start-up built (reference data, schemas) is never garbage
    gc.set_threshold(50_000, 20, 100)


class RestoreWatch:
    """A restore's progress: stalled when no record came for ``stall_s``; a progress
    line due every ``log_every_s``. No total deadline."""

    def __init__(
        self,
        stall_s: float,
        log_every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_s = stall_s
        self._log_every_s = log_every_s
        self._clock = clock
        self.started = self._progressed = self._logged = clock()
        self.read = 0

    def progress(self, records: int = 1) -> None:
        self.read += records
        self._progressed = self._clock()

    def stalled(self) -> bool:
        return self._clock() - self._progressed > self.stall_s

    def log_due(self) -> bool:
        now = self._clock()
        if now - self._logged < self._log_every_s:
            return False
        self._logged = now
        return True

    def elapsed(self) -> float:
        return self._clock() - self.started

    def check(self, pending: Collection[tuple[str, int]], partitions: int) -> None:
        """Raise when stalled (naming the changelog partitions still pending); log a
        progress line when one is due."""
        if self.stalled():
            raise DeliveryError(
                f"restoring entity state made no progress for {self.stall_s:g} s "
                f"(DATABUS_PROCESSOR_RESTORE_STALL_S) after {self.read:,} records; "
                f"waiting for {sorted(pending)}"
            )
        if self.log_due():
            log.info(
                "restoring entity state: %d records read in %.0f s, "
                "%d of %d changelog partitions done",
                self.read,
                self.elapsed(),
                partitions - len(pending),
                partitions,
            )


class BatchLoop:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        core: BatchCore,
        datasets: Mapping[str, Dataset],  # by raw topic
        *,
        batch_size: int = 500,
        state_every_s: float = 0.5,  # DATABUS_PROCESSOR_STATE_EVERY_MS
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        store: EntityStore | None = None,
    ) -> None:
        self._settings = settings
        # None: every entity in memory, restored from the whole changelog (the old way).
        self._store = store
        self._metrics = metrics
        self._core = core
        self._datasets = datasets
        # Rule deltas keyed "<group>|<subject>", UnitStats keyed "<dataset>|<unit>".
        self._deltas_topic = rule_deltas_topic(settings.processor_group)
        self._stats_topic = unit_stats_topic(settings.processor_group)
        self._batch_size = batch_size
        self._state_every_s = state_every_s
        self._clock_ms = clock_ms
        self._group = settings.processor_group
        self._changelogs = {t: changelog_topic(self._group, ds.id) for t, ds in datasets.items()}
        self._raw_of_changelog = {c: t for t, c in self._changelogs.items()}
        # Changelog records per owned partition since its latest snapshot.
        self._since_snapshot: dict[tuple[str, int], int] = {}
        self._snapshot_every = settings.processor.snapshot_every
        self.snapshots = 0  # snapshots written (tests and benchmarks read it)
        self._hold_intake = False  # a snapshot is overdue: finish the work in flight first
        # The bus's 5 ms linger. 1 ms, tried for latency, gave no better p99 at 2,000
        # events/s (123–199 ms against 104–172 ms, three runs each, bench/processor.py).
        self._producer = Producer(producer_config(settings))
        self._max_bytes = settings.kafka.message_max_bytes
        self._groups = Groups()
        # Records whose full dead letter was refused (too large): written digest-only.
        self._digest_only: set[tuple[str, int, int]] = set()
        self.stop_event = threading.Event()
        # Read by the Faust timer (another thread): when a record was last taken, and
        # whether the last poll came back short (caught up with the input).
        self.last_record_monotonic = 0.0
        self.caught_up = False
        self.batches = 0  # groups retired
        # Records processed (once each, a recalled batch again), when the last batch was
        # and when partitions were last assigned (state restored): the benchmark reads
        # these instead of the metrics registry.
        self.processed = 0
        self.last_batch_monotonic = 0.0
        self.assigned_monotonic = 0.0
        self.last_restore_s = 0.0  # the last assignment's restore, and what it replayed
        self.last_restore_records = 0
        self._restore_read = 0
        self._snapshot_index: dict[str, dict[str, Any]] | None = None
        self.last_snapshot_entities = 0  # entities the last restore took from snapshots
        self._lag_group = f"{self._group}-standardize"
        self.restore_log_every_s = _RESTORE_PROGRESS_EVERY_S
        self._lag_exported: set[tuple[str, int]] = set()
        self._lag_at = 0.0
        self._batch_started_ns = 0

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
                # The broker answers a fetch as soon as it has records: a longer wait
                # costs no latency, only fewer empty fetches. Against the embedded
                # broker, 50 ms instead of 10 took the p99 at 2,000 events/s from
                # 109–186 ms to 88–134 ms (bench/processor.py, six runs each).
                "fetch.wait.max.ms": _FETCH_WAIT_MS,
                "max.poll.interval.ms": 600_000,
                # Incremental: a member keeps (and goes on processing) the partitions it
                # keeps; only the ones that move are revoked, and restored by their new
                # owner (from its local store: the changelog tail only).
                "partition.assignment.strategy": self._settings.processor.assignment,
            }
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        wanted = [(tp.topic, tp.partition) for tp in partitions]
        if self._store is not None:
            replayed = self._restore_store(self._store, wanted)
            for topic, partition in wanted:
                self._core.load(topic, partition, self._store.table(topic, partition))
        else:
            restored = self._restore(wanted)
            for (topic, partition), entities in restored.items():
                self._core.load(topic, partition, entities)
            replayed = self._restore_read
        if wanted:
            self._metrics.processor_assigned.set(time.time())
            self.assigned_monotonic = time.monotonic()
        self.last_restore_s = time.monotonic() - started
        self.last_restore_records = replayed
        log.info(
            "assigned %d partitions; %d changelog records replayed in %.1f s",
            len(wanted),
            replayed,
            self.last_restore_s,
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        for where in [w for w in self._core.refused if w[:2] in revoked]:
            del self._core.refused[where]
        self._digest_only = {w for w in self._digest_only if w[:2] not in revoked}
        for tp in partitions:
            self._core.drop(tp.topic, tp.partition)
            if self._store is not None:
                self._store.release(tp.topic, tp.partition)
            self._since_snapshot.pop((tp.topic, tp.partition), None)
            if (tp.topic, tp.partition) in self._lag_exported:
                self._lag_exported.discard((tp.topic, tp.partition))
                self._metrics.consumer_lag.remove(self._lag_group, tp.topic, str(tp.partition))

    def _restore(self, wanted: list[tuple[str, int]]) -> dict[tuple[str, int], dict[bytes, Entity]]:
        """Each partition's entities, replayed from its changelog up to a fresh marker."""
        out: dict[tuple[str, int], dict[bytes, Entity]] = {w: {} for w in wanted}
        self._restore_read = 0
        if not wanted:
            return out
        marker = uuid.uuid4().hex.encode()
        by_changelog = {(self._changelogs[t], p): (t, p) for t, p in wanted}
        failed: list[KafkaError] = []
        for topic, partition in by_changelog:
            self._producer.produce(
                topic,
                key=_MARKER_KEY,
                value=marker,
                partition=partition,
                on_delivery=lambda err, _m: failed.append(err) if err is not None else None,
            )
        remaining = self._producer.flush(_FLUSH_TIMEOUT_S)
        if remaining or failed:
            raise DeliveryError(f"restore markers: {remaining} unsent, errors {failed[:3]}")
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
        # No total timeout (a big state takes as long as it takes): only a restore that
        # reads nothing for DATABUS_PROCESSOR_RESTORE_STALL_S fails.
        watch = RestoreWatch(
            float(self._settings.processor_restore_stall_s), self.restore_log_every_s
        )
        try:
            while pending:
                watch.check(pending, len(by_changelog))
                for msg in take(reader, 1000, 0.5):
                    if msg.error():
                        continue
                    watch.progress()
                    where = (msg.topic() or "", msg.partition() or 0)
                    key = msg.key() or b""
                    if key == _MARKER_KEY:
                        if msg.value() == marker:
                            pending.discard(where)
                        continue
                    if where in pending:
                        value = msg.value()
                        if value is None:  # a tombstone: the entity was forgotten
                            out[by_changelog[where]].pop(key, None)
                        else:
                            out[by_changelog[where]][key] = Entity.from_json(value)
        finally:
            reader.close()
            self._restore_read = watch.read
        return out

    def _write_markers(self, changelogs: list[tuple[str, int]]) -> tuple[bytes, dict[Any, int]]:
        """A fresh marker at the end of each changelog partition, and its offsets."""
        marker = uuid.uuid4().hex.encode()
        failed: list[KafkaError] = []
        offsets: dict[tuple[str, int], int] = {}

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append(err)
            else:
                offsets[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0

        for topic, partition in changelogs:
            self._producer.produce(
                topic, key=_MARKER_KEY, value=marker, partition=partition, on_delivery=delivered
            )
        remaining = self._producer.flush(_FLUSH_TIMEOUT_S)
        if remaining or failed:
            raise DeliveryError(f"restore markers: {remaining} unsent, errors {failed[:3]}")
        return marker, offsets

    def _restore_store(self, store: EntityStore, wanted: list[tuple[str, int]]) -> int:
        """Bring the local store of each wanted partition up to a fresh marker at the end
        of its changelog, replaying only what follows the store's checkpoint (all of it
        for a partition the store has never held). Applied in atomic chunks with their
        offset: a kill -9 here leaves a store the next restore continues. Returns how
        many changelog records were replayed."""
        if not wanted:
            return 0
        by_changelog = {(self._changelogs[t], p): (t, p) for t, p in wanted}
        self._snapshot_index = None  # read again, once, if a partition needs it
        self.last_snapshot_entities = 0
        marker, ends = self._write_markers(list(by_changelog))
        reader = Consumer(
            {
                **self._settings.kafka.client_config(),
                "group.id": f"{self._group}-restore-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "earliest",
            }
        )
        starts: list[TopicPartition] = []
        pending: set[tuple[str, int]] = set()
        for topic, p in wanted:
            store.release(topic, p)  # nothing of it cached while it is replayed
        try:
            for (changelog, p), (topic, _p) in by_changelog.items():
                applied = store.applied(topic, p)
                end = ends[(changelog, p)]
                low = _low_watermark(reader, changelog, p)
                if applied >= end or (applied >= 0 and low is not None and applied + 1 < low):
                    # Offsets that do not fit this changelog (recreated, or truncated
                    # past the checkpoint): the partition is rebuilt from the beginning.
                    log.warning(
                        "%s[%d]: local state at changelog offset %d does not fit the "
                        "changelog (end %d, start %s); rebuilding it",
                        changelog,
                        p,
                        applied,
                        end,
                        low,
                    )
                    store.forget(topic, p)
                    applied = -1
                if applied < 0:
                    store.forget(topic, p)  # leftovers without a checkpoint
                    applied = self._load_snapshot(store, topic, p, changelog, end)
                    self._since_snapshot[(topic, p)] = 0
                if applied + 1 >= end:
                    continue  # nothing after the checkpoint but our marker
                starts.append(
                    TopicPartition(changelog, p, applied + 1 if applied >= 0 else OFFSET_BEGINNING)
                )
                pending.add((changelog, p))
            if not pending:
                for (changelog, p), (topic, _p) in by_changelog.items():
                    store.apply(topic, p, (), ends[(changelog, p)])
                return 0
            reader.assign(starts)
            watch = RestoreWatch(
                float(self._settings.processor_restore_stall_s), self.restore_log_every_s
            )
            chunks: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
            last: dict[tuple[str, int], int] = {}
            while pending:
                watch.check(pending, len(by_changelog))
                msgs = take(reader, 5000, 0.5)
                for msg in msgs:
                    if msg.error():
                        continue
                    where = (msg.topic() or "", msg.partition() or 0)
                    if where not in pending:
                        continue
                    offset = msg.offset() or 0
                    key = msg.key() or b""
                    last[where] = offset
                    if key == _MARKER_KEY:
                        if msg.value() == marker or offset >= ends[where]:
                            pending.discard(where)
                            topic, p = by_changelog[where]
                            store.apply(topic, p, chunks.pop(where, ()), ends[where], bulk=True)
                        continue
                    raw_where = by_changelog[where]
                    self._since_snapshot[raw_where] = self._since_snapshot.get(raw_where, 0) + 1
                    chunk = chunks.setdefault(where, [])
                    chunk.append((key, msg.value()))
                    if len(chunk) >= _APPLY_CHUNK:
                        topic, p = by_changelog[where]
                        store.apply(topic, p, chunks.pop(where), offset, bulk=True)
                if msgs:
                    watch.progress(len(msgs))
            for (changelog, p), (topic, _p) in by_changelog.items():
                if (changelog, p) not in last:  # nothing to replay: checkpoint the marker
                    store.apply(topic, p, (), ends[(changelog, p)], bulk=True)
        finally:
            reader.close()
            store.flush()  # the bulk writes are on disk before any logged commit
        return watch.read

    # ---- snapshots: restore from an empty disk bounded by entities, not history
    def _snapshot_due(self) -> None:
        """Snapshot every owned partition with ``snapshot_every`` changelog records
        since its latest, with nothing in flight (the store is then the changelog up
        to its checkpoint): when the loop is idle, or, past twice that many, after
        finishing the work in flight (a pause under sustained load)."""
        assert self._store is not None
        every = self._snapshot_every
        due = [w for w, n in self._since_snapshot.items() if n >= every]
        if not due:
            self._hold_intake = False
            return
        if self._groups:
            # Past twice the interval: take no new records until the work in flight
            # is written and committed (the loop goes on advancing it), then snapshot.
            self._hold_intake = any(self._since_snapshot[w] >= 2 * every for w in due)
            return
        self._hold_intake = False
        for where in due:
            if where in self._since_snapshot:
                try:
                    self._snapshot(self._store, *where)
                except DatabusError as exc:
                    log.warning("snapshot of %s[%d] not written (%s)", *where, exc)
                self._since_snapshot[where] = 0

    def _snapshot(self, store: EntityStore, topic: str, partition: int) -> None:
        """Write (topic, partition)'s entities to its snapshot topic between a begin
        and an end record, then index it: ``<group>-snapshot-index`` gets one record
        (snapshot offsets and the changelog offset it stands for)."""
        changelog = self._changelogs[topic]
        snap = snapshot_topic(changelog)
        n = self._settings.kafka.partitions
        ensure_topics(
            self._settings,
            [TopicSpec(snap, n), TopicSpec(snapshot_index_topic(self._group), 1, compact=True)],
        )
        applied = store.applied(topic, partition)
        log.info("snapshot of %s[%d] at changelog offset %d: writing", topic, partition, applied)
        if applied < 0:
            return
        offsets: list[int] = []
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append(err)
            else:
                offsets.append(msg.offset() or 0)

        started = time.monotonic()
        ident = uuid.uuid4().hex
        bound = orjson.dumps({"id": ident, "changelog_offset": applied})
        writes = Writes()
        self._produce(writes, snap, _SNAPSHOT_BEGIN, bound, partition=partition)
        count = 0
        for key, value in store.items(topic, partition):
            self._produce(writes, snap, key, value, partition=partition)
            count += 1
        self._produce(
            writes, snap, _SNAPSHOT_END, bound, partition=partition, on_delivery=delivered
        )
        begin: list[int] = []
        self._producer.flush(_FLUSH_TIMEOUT_S)
        if writes.errors or failed or not offsets:
            raise DeliveryError(f"snapshot writes failed: {(writes.errors + failed)[:3]}")
        end = offsets[0]
        begin.append(end - count - 1)
        index = {
            "id": ident,
            "topic": snap,
            "partition": partition,
            "begin": end - count - 1,
            "end": end,
            "entities": count,
            "changelog_offset": applied,
        }
        self._produce(
            writes,
            snapshot_index_topic(self._group),
            f"{changelog}:{partition}".encode(),
            orjson.dumps(index),
            partition=0,
        )
        if self._producer.flush(_FLUSH_TIMEOUT_S) or writes.errors:
            raise DeliveryError("snapshot index not written")
        self.snapshots += 1
        self._mark_covered(
            [
                TopicPartition(changelog, partition, applied + 1),
                TopicPartition(snap, partition, end - count - 1),
            ]
        )
        log.info(
            "snapshot of %s[%d]: %d entities at changelog offset %d in %.1f s",
            topic,
            partition,
            count,
            applied,
            time.monotonic() - started,
        )

    def _mark_covered(self, positions: list[TopicPartition]) -> None:
        """Commit, in ``<group>-snapshot-covered``, what the latest snapshot makes
        redundant: the changelog before the offset it stands for, and the older
        snapshots before it. Nothing reads this group; a broker storage that trims by
        committed offsets (the embedded one's, ``databus.standins.object_store``)
        uses it to keep the compacted changelog bounded. Best effort: a commit that
        fails only leaves more on disk."""
        committer = Consumer(
            {
                **self._settings.kafka.client_config(),
                "group.id": snapshot_covered_group(self._group),
                "enable.auto.commit": False,
            }
        )
        try:
            committer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            log.warning("snapshot coverage not committed (%s): the changelog is not trimmed", exc)
        finally:
            committer.close()

    def _latest_snapshots(self) -> dict[str, dict[str, Any]]:
        """The snapshot index, latest per changelog partition (read to a marker)."""
        index = snapshot_index_topic(self._group)
        if self._snapshot_index is not None:
            return self._snapshot_index
        latest: dict[str, dict[str, Any]] = {}
        try:
            ensure_topics(self._settings, [TopicSpec(index, 1, compact=True)])
            marker, ends = self._write_markers([(index, 0)])
        except DatabusError as exc:
            log.warning("snapshot index unreadable (%s): restoring from the changelog", exc)
            return latest
        reader = self._reader()
        try:
            reader.assign([TopicPartition(index, 0, OFFSET_BEGINNING)])
            watch = RestoreWatch(float(self._settings.processor_restore_stall_s), 1e9)
            done = False
            while not done:
                if watch.stalled():
                    raise DeliveryError("reading the snapshot index made no progress")
                msgs = take(reader, 1000, 0.5)
                if msgs:
                    watch.progress(len(msgs))
                for msg in msgs:
                    if msg.error():
                        continue
                    if msg.key() == _MARKER_KEY:
                        if msg.value() == marker or (msg.offset() or 0) >= ends[(index, 0)]:
                            done = True
                        continue
                    latest[(msg.key() or b"").decode()] = orjson.loads(msg.value() or b"{}")
        finally:
            reader.close()
        self._snapshot_index = latest
        return latest

    def _load_snapshot(
        self, store: EntityStore, topic: str, partition: int, changelog: str, end: int
    ) -> int:
        """Fill an empty partition from its latest snapshot; returns the changelog
        offset it stands for (-1: none, the whole changelog is replayed)."""
        if not self._snapshot_every:
            return -1
        snap = self._latest_snapshots().get(f"{changelog}:{partition}")
        if not snap or int(snap["changelog_offset"]) >= end:
            return -1
        started = time.monotonic()
        reader = self._reader()
        count = 0
        try:
            reader.assign([TopicPartition(snap["topic"], partition, int(snap["begin"]))])
            watch = RestoreWatch(float(self._settings.processor_restore_stall_s), 1e9)
            chunk: list[tuple[bytes, bytes | None]] = []
            complete = False
            while not complete:
                if watch.stalled():
                    raise DeliveryError(f"reading snapshot {snap['id']} made no progress")
                msgs = take(reader, 5000, 0.5)
                if msgs:
                    watch.progress(len(msgs))
                for msg in msgs:
                    if msg.error():
                        continue
                    offset = msg.offset() or 0
                    if offset >= int(snap["end"]):
                        complete = True
                        break
                    if offset == int(snap["begin"]):
                        continue
                    chunk.append((msg.key() or b"", msg.value()))
                    count += 1
                    if len(chunk) >= _APPLY_CHUNK:
                        store.apply(topic, partition, chunk, None, bulk=True)
                        chunk = []
            store.apply(topic, partition, chunk, int(snap["changelog_offset"]), bulk=True)
        finally:
            reader.close()
        self.last_snapshot_entities += count
        log.info(
            "%s[%d]: %d entities from snapshot %s in %.1f s",
            topic,
            partition,
            count,
            snap["id"],
            time.monotonic() - started,
        )
        return int(snap["changelog_offset"])

    def _reader(self) -> Consumer:
        return Consumer(
            {
                **self._settings.kafka.client_config(),
                "group.id": f"{self._group}-restore-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "earliest",
            }
        )

    # ---- producing
    def _produce(
        self,
        writes: Writes,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int = _ANY_PARTITION,
        source: RawRecord | None = None,
        dead: bool = False,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """One write, counted in ``writes`` (called once per std record: no per-call
        keyword dict). A full librdkafka queue is waited out, not dropped.

        ``source``: the record this output stands for (``dead``: as a dead letter); a
        permanent refusal of the write, now or in its delivery report, is noted
        against it (``_refuse``) and fails the write, so the work is recalled."""
        produce: Callable[..., None] = self._producer.produce
        if on_delivery is None:
            on_delivery = writes.delivered
        if source is not None:

            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                if err is not None and err.code() in _REFUSED:
                    self._refuse(source, err, len(value), dead)
                writes.delivered(err, msg)

        while True:
            try:
                produce(topic, value, key, partition, on_delivery=on_delivery, headers=headers)
                writes.sent()
                return
            except BufferError:
                self._producer.poll(0.05)  # librdkafka's queue is full: let it drain
            except KafkaException as exc:
                err = exc.args[0]
                if source is not None and err.code() in _REFUSED:
                    self._refuse(source, err, len(value), dead)
                    raise DeliveryError(f"{topic}: refused a record ({err.name()})") from exc
                raise DeliveryError(
                    f"{topic}: could not produce ({err.name()}: {err.str()})",
                    retriable=err.retriable(),
                ) from exc

    def _refuse(self, r: RawRecord, err: KafkaError, size: int, dead: bool) -> None:
        """The broker refused ``r``'s output for good: processed again, ``r`` becomes a
        dead letter (or, if its dead letter was refused, one without its bytes)."""
        where = (r.topic, r.partition, r.offset)
        if dead:
            self._digest_only.add(where)
        elif where not in self._core.refused:
            self._core.refused[where] = _refusal(err, size, self._max_bytes)
        log.warning(
            "%s[%d]@%d: its %s was refused for good (%s, %d bytes); dead-lettering it",
            r.topic,
            r.partition,
            r.offset,
            "dead letter" if dead else "standardized record",
            err.name(),
            size,
            extra=record_fields(r.topic, r.headers),
        )

    def _produce_outputs(self, group: Group, writes: Writes) -> None:
        """Step 2, for the batch just added to ``group``: std records and dead letters,
        counted in ``writes`` (the batch's own, within the group's)."""
        out = group.out
        produce = self._produce
        if tracing.enabled():
            self._trace_std(out)
        for (topic, key, value, headers), source in zip(out.std, out.std_from, strict=True):
            produce(writes, topic, key, value, headers, _ANY_PARTITION, source)
        out.std.clear()  # handed over (the dead letters stay: they are counted later)
        out.std_from.clear()
        for dead in out.dead[group.dead_sent :]:
            r = dead.record
            if (r.topic, r.partition, r.offset) in self._digest_only:
                value = r.value or b""
                key, value, headers = (
                    r.key if r.key is None or len(r.key) <= _KEPT_KEY_BYTES else None,
                    b"",
                    omitted_dlq_headers(
                        r.headers,
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        letter=dead.letter,
                        size=len(value),
                        sha256=hashlib.sha256(value).hexdigest(),
                    ),
                )
            else:
                key, value, headers = (
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
            produce(
                writes,
                self._datasets[r.topic].dlq_topic,
                key,
                value,
                headers,
                _ANY_PARTITION,
                r,
                True,
            )
        group.dead_sent = len(out.dead)

    def _trace_std(self, out: BatchOutput) -> None:
        """Tracing on: a ``process`` span per std record, the child of its raw record's
        span (its ``traceparent``), from the batch's start to now; the std record's
        ``traceparent`` names it, so the sinks continue the trace. A record whose trace
        is not sampled costs no span."""
        started = self._batch_started_ns
        for (topic, _key, _value, headers), r in zip(out.std, out.std_from, strict=True):
            span = tracing.start_child(
                f"process {r.topic}", r.headers, kind=tracing.SpanKind.CONSUMER, start_time=started
            )
            if span is None:
                continue  # not sampled: the std record keeps the raw record's traceparent
            if span.is_recording():
                dataset = self._datasets.get(r.topic)
                span.set_attributes(
                    {
                        "messaging.system": "kafka",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": r.topic,
                        "messaging.destination.partition.id": str(r.partition),
                        "messaging.kafka.offset": r.offset,
                        "messaging.message.id": _header(r.headers, "ce_id"),
                        "databus.event_id": _header(r.headers, "ce_id"),
                        "databus.dataset": dataset.id if dataset is not None else "",
                        "databus.std_topic": topic,
                    }
                )
            traceparent = tracing.traceparent_of(span)
            span.end()
            for i, (name, _v) in enumerate(headers):
                if name == tracing.TRACEPARENT:
                    headers[i] = (name, traceparent)
                    break
            else:
                headers.append((tracing.TRACEPARENT, traceparent))

    def _produce_state(self, group: Group) -> None:
        """Step 3, once the group is sealed and its outputs acknowledged: state and
        aggregates."""
        out, writes = group.out, group.state
        on_delivery = None
        if self._store is not None:
            offsets, values = group.changelog_offsets, group.changelog_values
            raw_of = self._raw_of_changelog

            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                if err is None:
                    where = (raw_of[msg.topic() or ""], msg.partition() or 0)
                    offset = msg.offset() or 0
                    if offset > offsets.get(where, -1):
                        offsets[where] = offset
                writes.delivered(err, msg)

        for where, entity in out.entities.items():
            topic, partition, key = where
            value = entity.to_json()
            if on_delivery is not None:
                values[where] = value
            self._produce(
                writes,
                self._changelogs[topic],
                key,
                value,
                partition=partition,
                on_delivery=on_delivery,
            )
        for (group_name, subject), deltas in out.deltas.items():
            payload = {"group": group_name, "key": subject, "deltas": deltas}
            self._produce(
                writes, self._deltas_topic, f"{group_name}|{subject}".encode(), _json(payload)
            )
        for stats in out.stats.values():
            name = stats_key(stats.dataset, stats.unit)
            body = stats.to_json()
            self._produce(writes, self._stats_topic, name.encode(), _json(body))
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
                writes,
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

    def _observe_latency(self, stamps: list[tuple[str, int]]) -> None:
        """End-to-end latency of a batch whose std records the broker just acknowledged:
        from each raw record's Kafka timestamp (the publisher produces it with the
        envelope's ``ts_ms``; reading it costs nothing, unlike parsing ``ce_time``)."""
        now_ms = time.time() * 1000
        histograms: dict[str, Any] = {}
        for topic, ts_ms in stamps:
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
    def _take(self, consumer: Consumer) -> list[Message]:
        """The records to process next: whatever is already fetched, without waiting
        for a batch to fill. With work in flight, never block on the consumer: wait a
        moment for delivery reports instead."""
        n = self._batch_size
        if self._groups:
            msgs = consumer.consume(n, 0)
            if not msgs:
                self._producer.poll(_ACK_WAIT_S)
            return msgs
        return take(consumer, n, _FIRST_RECORD_WAIT_S)

    def _step(self, consumer: Consumer, msgs: list[Message]) -> None:
        """Process ``msgs`` (may be empty) and move the work in flight forward.

        On a retriable failure (a write not acknowledged, the registry down), every
        group in flight is recalled: its entity state rolled back and its records
        processed again, together with ``msgs``, after a backoff.
        """
        records, stamps = raw_records(msgs)
        if records:
            self.last_record_monotonic = time.monotonic()
        delay = 0.2
        while True:
            try:
                if records:
                    started = time.perf_counter()
                    self._batch_started_ns = time.time_ns()  # the batch's process spans
                    group = self._groups.open_group(time.monotonic())
                    self._core.process_into(group.out, records, self._clock_ms())
                    group.records += records
                    group.batches += 1
                    self.processed += len(records)
                    batch = Writes(parent=group.outputs)
                    group.pending.append((batch, stamps))
                    records = []  # in flight now: a failure recalls them from there
                    self._produce_outputs(group, batch)
                    self._metrics.processing_seconds.labels("all", "batch").observe(
                        time.perf_counter() - started
                    )
                    self._metrics.processor_last_batch.set(time.time())
                    self.last_batch_monotonic = time.monotonic()
                self._producer.poll(0)
                self._advance(consumer)
                return
            except DatabusError as exc:
                if not exc.retriable:
                    raise
                records = self._recall() + records
                stamps = []
                log.warning(
                    "batch of %d not written (%s); retrying in %.1f s", len(records), exc, delay
                )
                if self.stop_event.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)

    def _advance(self, consumer: Consumer, *, finishing: bool = False) -> None:
        """Seal the open group when it is due (or ``finishing``), send the state of
        every group ready for it, retire and commit the groups whose state is
        acknowledged. Raises ``DeliveryError`` on a failed write."""
        errors = self._groups.errors()
        if errors:
            raise DeliveryError(f"batch writes: delivery errors {sorted(set(errors))[:5]}")
        now = time.monotonic()
        for group in self._groups:
            if group.pending:
                waiting = []
                for batch in group.pending:
                    if batch[0].outstanding:
                        waiting.append(batch)
                    else:
                        self._observe_latency(batch[1])
                group.pending = waiting
            if not group.sealed and (
                finishing
                or now - group.opened >= self._state_every_s
                or len(group.records) >= self._batch_size * _GROUP_MAX_BATCHES
            ):
                group.sealed = True
                self._core.finish(group.out)
        for group in self._groups.ready_for_state():
            self._produce_state(group)
        done = self._groups.retire()
        if not done:
            return
        for group in done:
            if self._store is not None:
                # Acknowledged in the changelog: now in the local store, with the offsets.
                self._store.commit(
                    group.out.entities, group.changelog_offsets, group.changelog_values
                )
                since = self._since_snapshot
                for topic, partition, _key in group.out.entities:
                    since[(topic, partition)] = since.get((topic, partition), 0) + 1
            self._core.settle(group.batches)
            self._count(group.out)
        if self._core.refused or self._digest_only:
            for where in [(r.topic, r.partition, r.offset) for g in done for r in g.records]:
                self._core.refused.pop(where, None)
                self._digest_only.discard(where)
        self.batches += len(done)
        records = [r for g in done for r in g.records]
        self._commit(consumer, records, asynchronous=not finishing)

    def _recall(self) -> list[RawRecord]:
        """After a failure: let every write report, undo the entity state of every
        group not retired, and return all their records (oldest first)."""
        self._producer.flush(_FLUSH_TIMEOUT_S)
        self._rollback()
        return self._groups.recall()

    def _rollback(self) -> None:
        """Undo the entity state of every batch not retired (in memory; the local store
        holds only acknowledged state)."""
        self._core.rollback()
        if self._store is not None:
            self._store.discard_pending()

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

    def _drain(self, consumer: Consumer) -> None:
        """Finish and commit everything in flight (before a revoke or a stop)."""
        try:
            while self._groups:
                remaining = self._producer.flush(_FLUSH_TIMEOUT_S)
                if remaining:
                    raise DeliveryError(f"{remaining} writes unacknowledged")
                self._advance(consumer, finishing=True)
        except DatabusError as exc:
            log.warning("could not finish the work in flight (%s); it will be redone", exc)
            self._rollback()
            self._groups.recall()

    def run(self) -> None:
        """Consume, process and commit until ``stop_event`` is set."""
        consumer = self._consumer()

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._drain(c)
            self._on_revoke(c, partitions)

        consumer.subscribe(list(self._datasets), on_assign=self._on_assign, on_revoke=on_revoke)
        stopped = False
        try:
            while not self.stop_event.is_set():
                if len(self._groups) >= _MAX_IN_FLIGHT or self._hold_intake:
                    # the broker is behind, or a snapshot waits: let the work in flight end
                    self._producer.poll(_ACK_WAIT_S)
                    msgs: list[Message] = []
                else:
                    msgs = self._take(consumer)
                    self.caught_up = len(msgs) < self._batch_size
                self._step(consumer, msgs)
                self._export_lag(consumer)
                if self._store is not None and self._snapshot_every:
                    self._snapshot_due()
            stopped = True
        finally:
            # Not ``except``: an error a librdkafka callback raised comes out of
            # ``consume`` as a bare KafkaError, which no except clause matches.
            if not stopped:
                # Nothing in flight is trusted: commit none of it, record none of its state.
                self._rollback()
                self._groups.recall()
            try:
                self._drain(consumer)
            finally:
                consumer.close()
                self._producer.flush(30.0)


def snapshot_topic(changelog: str) -> str:
    """Where the entity snapshots of a changelog go (not compacted: each is a range)."""
    return changelog.removesuffix("-changelog") + "-snapshot"


def snapshot_covered_group(group: str) -> str:
    """The consumer group whose committed offsets say what the latest snapshots cover."""
    return f"{group}-snapshot-covered"


def snapshot_index_topic(group: str) -> str:
    """One record per snapshot: where it is and which changelog offset it stands for."""
    return f"{group}-entities-snapshot-index"


def _low_watermark(reader: Consumer, topic: str, partition: int) -> int | None:
    """The changelog partition's first offset, or None if the broker does not say."""
    try:
        low, _high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    except (KafkaException, RuntimeError):
        return None
    return int(low) if low is not None and low >= 0 else None


def raw_records(msgs: list[Message]) -> tuple[list[RawRecord], list[tuple[str, int]]]:
    """The records of ``msgs`` (errors left out) and their topics' Kafka timestamps."""
    records: list[RawRecord] = []
    stamps: list[tuple[str, int]] = []
    for m in msgs:
        if m.error():
            continue
        topic = m.topic() or ""
        headers = m.headers()
        records.append(
            RawRecord(
                topic,
                m.partition() or 0,
                m.offset() or 0,
                m.key(),
                m.value(),
                cast(list[tuple[str, bytes | None]], headers) if headers else [],
            )
        )
        kind, ts_ms = m.timestamp()
        if kind != TIMESTAMP_NOT_AVAILABLE and ts_ms > 0:
            stamps.append((topic, ts_ms))
    return records, stamps


def _header(headers: list[tuple[str, bytes | None]], name: str) -> str:
    for key, value in headers:
        if key == name:
            return (value or b"").decode("utf-8", "replace")
    return ""


def _refusal(err: KafkaError, size: int, limit: int) -> DeadLetter:
    """The dead letter of a record whose standardized output the broker refused."""
    if err.code() in _TOO_LARGE:
        return DeadLetter(
            stage="produce",
            reason="record_too_large",
            exception_class=err.name(),
            message=(
                f"the standardized record is {size:,} bytes, over the limit of {limit:,} "
                "(DATABUS_KAFKA__MESSAGE_MAX_BYTES) or the broker's"
            ),
            message_vi="bản ghi sau chuẩn hoá vượt quá kích thước tối đa cho phép",
        )
    return DeadLetter(
        stage="produce",
        reason="record_refused",
        exception_class=err.name(),
        message=f"the broker refused the standardized record for good: {err.str()}",
        message_vi="máy chủ Kafka từ chối vĩnh viễn bản ghi sau chuẩn hoá",
    )


def _json(value: Any) -> bytes:
    """Compact UTF-8 JSON, as ``json.dumps`` writes it (non-str keys as strings)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
