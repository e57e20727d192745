"""Consume topics in batches, hand them to a sink, commit only after a durable write.

At-least-once: a crash between the write and the commit replays the batch, and
every sink is idempotent, so a replay changes nothing.

While the destination (or the schema registry) is down, the runner holds the
batch in memory, pauses its partitions and keeps polling: the group keeps it as a
member, the backlog waits in Kafka, and no call blocks longer than one poll, so
one sink's outage never slows another. The held batch is tried again at
tenacity's backoff times, behind a circuit breaker.

Records the destination refuses for good, and records that do not decode, go to
the sink's dead-letter topic; that write is acknowledged before any offset of
their batch is committed.

A sink that tracks the offsets its destination applied (``TracksOffsets``, the IOC
store) is checked on every assignment and every ``store_check_s`` seconds: where
the destination is behind the group's committed offsets (it lost its data, came
back from an older snapshot, is a new replica), the partitions are rewound to what
it holds and replayed; every rebuild is logged and counted
(``databus_sink_store_rebuilds_total{sink,reason}``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus import tracing
from bus.consumers import (
    TP,
    commit_unless_rebalancing,
    consumer_config,
    next_offsets,
    partition_lag,
    take,
)
from bus.errors import CodecError, DatabusError, SinkError
from bus.kafka_client import registry_client
from bus.logs import record_fields
from bus.metrics import Metrics
from bus.settings import Settings
from schemas.codec import AvroDeserializer
from sinks.base import Rejected, Sink, SinkRecord, TracksOffsets
from sinks.circuit import CIRCUIT_STATE_VALUES, Circuit, CircuitOpenError, CircuitState, backoff
from sinks.replay import FROM_START, Rewind, rewind_plan
from sinks.sink_dlq import SinkDeadLetters, SinkLetter, rejected_letter, undecodable_letter

__all__ = ["SinkRunner"]

_ID_HEADERS = frozenset({"ce_id", "ce_originid"})
log = logging.getLogger(__name__)


def _where(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed (non-error) message."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def _tp(msg: Message) -> TP:
    topic, partition, _ = _where(msg)
    return topic, partition


def _headers(msg: Message) -> tuple[tuple[str, bytes], ...]:
    got = msg.headers() or []
    # A consumed message has a list of (name, bytes | None); the stub allows more.
    pairs = list(got.items()) if isinstance(got, dict) else got
    return tuple((k, v.encode() if isinstance(v, str) else v or b"") for k, v in pairs)


def _dataset(topic: str) -> str:
    return topic.rsplit(".", 2)[0]


def _trace_written(
    sink: str, batch: list[SinkRecord], rejected: list[Rejected], started_ns: int
) -> None:
    """Tracing on: a ``sink`` span per record of a written batch (the child of the span
    its ``traceparent`` names), from the write's start to its end; a rejected record's
    span fails with the rejection's reason."""
    reasons = {(r.record.topic, r.record.partition, r.record.offset): r.reason for r in rejected}
    for rec in batch:
        span = tracing.start_child(
            f"sink {sink} {rec.topic}",
            rec.headers,
            kind=tracing.SpanKind.CONSUMER,
            start_time=started_ns,
        )
        if span is None or not span.is_recording():
            continue  # not sampled
        ids = {k: v.decode("utf-8", "replace") for k, v in rec.headers if k in _ID_HEADERS}
        span.set_attributes(
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": rec.topic,
                "messaging.destination.partition.id": str(rec.partition),
                "messaging.kafka.offset": rec.offset,
                "messaging.message.id": ids.get("ce_id", ""),
                # the source's event id (a derived record's origin): one id per hop
                "databus.event_id": ids.get("ce_originid") or ids.get("ce_id", ""),
                "databus.dataset": _dataset(rec.topic),
                "databus.sink": sink,
            }
        )
        reason = reasons.get((rec.topic, rec.partition, rec.offset))
        if reason is not None:
            span.set_status(tracing.Status(tracing.StatusCode.ERROR, reason))
        span.end()


@dataclass
class _Batch:
    """One consumed batch and how far it got; a retry resumes at the first step not done."""

    messages: list[Message]
    records: list[SinkRecord] | None = None  # None until the registry answered
    letters: list[SinkLetter] = field(default_factory=list)
    written: bool = False
    dead_lettered: bool = False
    failures: int = 0
    retry_at: float = 0.0

    def drop(self, revoked: set[TP]) -> None:
        """Forget the records of partitions the group took away: their new owner
        replays them from the committed offset."""
        self.messages = [m for m in self.messages if _tp(m) not in revoked]
        if self.records is not None:
            self.records = [r for r in self.records if (r.topic, r.partition) not in revoked]
        self.letters = [
            x for x in self.letters if (x.record.topic, x.record.partition) not in revoked
        ]


class SinkRunner:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        *,
        name: str,
        topics: Sequence[str],
        group: str,
        metrics: Metrics | None = None,
        registry: SchemaRegistryClient | None = None,
        batch_size: int | None = None,
        dead_letters: SinkDeadLetters | None = None,
        store_check_s: float = 5.0,
        rewind_all: bool = False,
    ) -> None:
        """``store_check_s``: how often a sink that tracks offsets is compared with
        the committed offsets (besides every assignment); ``rewind_all``: replay
        every assigned partition from its start (``databus sink ioc --rebuild``)."""
        conf = settings.sink
        self._sink = sink
        self._name = name
        self._topics = list(topics)
        self._metrics = metrics or Metrics()
        self._batch_size = batch_size or conf.batch_size
        self._consumer = Consumer(consumer_config(settings, group))
        # A registry client made here is closed with this object; one passed in is the caller's.
        registry, self._owned_registry = registry_client(settings, registry)
        self._decode = AvroDeserializer(registry)
        self._dlq = dead_letters or SinkDeadLetters(settings, name)
        self._backoff = backoff(conf.backoff_initial_s, conf.backoff_max_s)
        self._circuit = Circuit(
            fail_max=conf.breaker_fail_max,
            reset_timeout_s=conf.breaker_reset_timeout_s,
            on_change=self._circuit_changed,
        )
        self._metrics.sink_circuit_state.labels(name).set(0)
        # Failures, retries and writes at 0 from the start: the first failure is a step
        # from 0 to 1 the alert rules see (deploy/prometheus/rules).
        self._metrics.init_sink(name, sorted({_dataset(t) for t in self._topics}))
        self._held: _Batch | None = None
        # Per owned partition: the next offset to commit, for the lag gauge.
        self._next: dict[TP, int] = {}
        # Per owned partition, where the next batch continues from, when known (the
        # committed offset, the end of the last batch, a rewind): the destination of a
        # sink that tracks offsets records none where it lacks what came before.
        self._from: dict[TP, int] = {}
        self.records_written = 0
        self._started = False
        self._tracker = sink if isinstance(sink, TracksOffsets) else None
        self._store_check_s = store_check_s
        self._rewind_all = rewind_all
        self._check_at = 0.0
        self._known_store: str | None = None
        self.rebuilds = 0

    # ---- lifecycle
    def start(self) -> None:
        """Set the sink up and subscribe; ``run`` and the first ``poll_once`` call it."""
        if self._started:
            return
        self._dlq.ensure_topic()
        self._sink.setup()
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._started = True

    def run(self, stop: threading.Event | Callable[[], bool]) -> None:
        should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
        self.start()
        try:
            while not should_stop():
                self.poll_once()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._consumer.close()  # revokes: a held batch is dropped, Kafka keeps it
        finally:
            self._held = None
            self._set_held_gauges(0)
            try:
                self._dlq.close()
            finally:
                try:
                    self._sink.close()
                finally:
                    if self._owned_registry is not None:
                        self._owned_registry.close()

    def check_circuit(self) -> None:
        """A readiness check: raises while the circuit in front of the destination is
        open (half-open passes: a probe is on its way)."""
        if self._circuit.state == "open":
            raise SinkError(
                f"{self._name}: circuit open, next probe in {self._circuit.probe_in():.0f} s",
                retriable=True,
            )

    def positions(self) -> dict[TP, int]:
        """Per owned partition, the next offset to commit (negative: from the start)."""
        return dict(self._next)

    def assigned(self) -> list[TP]:
        return [(tp.topic, tp.partition) for tp in self._consumer_assignment()]

    @property
    def holding(self) -> bool:
        """True while a batch waits for the destination (its partitions paused)."""
        return self._held is not None

    # ---- the loop
    def poll_once(self, timeout: float = 0.5) -> int:
        """Consume, write and commit one batch, or, while holding one, poll (paused)
        and try it again when its backoff time has come. Returns the records written;
        never blocks much longer than ``timeout`` on a destination outage."""
        self.start()
        try:
            if self._held is not None:
                return self._poll_held(timeout)
            if self._tracker is not None and time.monotonic() >= self._check_at:
                self._check_store()
            messages = take(self._consumer, self._batch_size, timeout)
            good = []
            for msg in messages:
                err = msg.error()
                if err is None:
                    good.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error: %s", self._name, err)
            if not good:
                return 0
            for msg in good:
                self._next.setdefault(_tp(msg), _where(msg)[2])
            return self._attempt(_Batch(good))
        finally:
            self._export_lag()

    def _poll_held(self, timeout: float) -> int:
        held = self._held
        assert held is not None
        # Paused partitions return nothing, but the poll keeps the group membership
        # alive and runs the rebalance callbacks.
        msg = self._consumer.poll(max(0.0, min(timeout, held.retry_at - time.monotonic())))
        if msg is not None and msg.error() is None:
            self._put_back(msg)
        if not held.messages:  # every partition of the batch was revoked meanwhile
            self._release()
            return 0
        if time.monotonic() < held.retry_at:
            return 0
        self._metrics.sink_retries.labels(self._name).inc()
        return self._attempt(held)

    def _attempt(self, batch: _Batch) -> int:
        try:
            written = self._deliver(batch)
        except DatabusError as exc:
            if exc.retriable:
                self._hold(batch, exc)
                return 0
            if isinstance(exc, SinkError):
                self._metrics.sink_failures.labels(self._name, "permanent").inc()
            self._give_up(batch)
            raise
        except BaseException:
            self._give_up(batch)
            raise
        if self._held is batch:
            self._release()
        return written

    def _deliver(self, batch: _Batch) -> int:
        """Decode, write, dead-letter, commit: each step once, in that order."""
        if batch.records is None:
            batch.records, batch.letters = self._decoded(batch.messages)
        records = batch.records
        if not batch.written:
            tracker = self._tracker
            if tracker is not None:
                tps = {_tp(m) for m in batch.messages}
                tracker.expect_from({tp: n for tp, n in self._from.items() if tp in tps})
            if records:
                rejected = self._circuit.call(lambda: self._write(records))
                batch.letters += [
                    SinkLetter(r.record, rejected_letter(self._name, r)) for r in rejected
                ]
            if tracker is not None and batch.letters:
                # records the destination never took (undecodable, or that made the
                # sink raise): dead-lettered, so behind us for the store too
                tracker.mark_applied(next_offsets(_where(m) for m in batch.messages))
            if tracker is not None and tracker.behind():
                self._check_at = 0.0  # the destination lacks records before this batch
            batch.written = True
        if batch.letters and not batch.dead_lettered:
            # A retry after a partial failure may send some letters twice: at-least-once.
            self._dlq.send(batch.letters)
            batch.dead_lettered = True
        self._commit(batch.messages)
        return self._count(batch)

    def _decoded(self, messages: list[Message]) -> tuple[list[SinkRecord], list[SinkLetter]]:
        """Decoded records, and letters for those that do not decode; a registry
        outage raises (retriable) and the whole batch is decoded again later."""
        records: list[SinkRecord] = []
        letters: list[SinkLetter] = []
        for msg in messages:
            topic, partition, offset = _where(msg)
            raw = msg.value() or b""
            headers = _headers(msg)
            try:
                value = self._decode(msg.value())
            except CodecError as exc:
                # Only our processor writes these topics: this is a bug upstream, kept
                # with its bytes on the sink's DLQ so the partition moves on.
                log.error(
                    "%s: undecodable record at %s[%d]@%d: %s",
                    self._name,
                    topic,
                    partition,
                    offset,
                    exc.reason,
                    extra=record_fields(topic, headers),
                )
                bare = SinkRecord(topic, partition, offset, msg.key(), {}, raw, headers)
                letter = undecodable_letter(self._name, exc)
                letters.append(SinkLetter(bare, letter, "undecodable"))
                continue
            records.append(SinkRecord(topic, partition, offset, msg.key(), value, raw, headers))
        return records, letters

    def _write(self, batch: list[SinkRecord]) -> list[Rejected]:
        started = time.perf_counter()
        started_ns = time.time_ns() if tracing.enabled() else 0
        try:
            rejected = self._write_isolating(batch)
        except SinkError as exc:
            if exc.retriable:
                self._metrics.sink_failures.labels(self._name, "retriable").inc()
            raise
        self._metrics.sink_batch_seconds.labels(self._name).observe(time.perf_counter() - started)
        if started_ns:
            _trace_written(self._name, batch, rejected, started_ns)
        return rejected

    def _write_once(self, batch: Sequence[SinkRecord]) -> list[Rejected]:
        # Sinks written before write() returned rejections return None.
        rejected = list(self._sink.write(batch) or ())
        self._sink.flush()
        return rejected

    def _write_isolating(self, batch: list[SinkRecord]) -> list[Rejected]:
        """Write; when the sink raises something that is not the project's error (a
        record its code cannot handle), find the records that make it raise by
        halving the batch, and return them as ``sink_crashed``. When every record
        makes it raise, the sink itself is broken: the error goes up."""
        try:
            return self._write_once(batch)
        except DatabusError:
            raise
        except Exception as exc:
            # where, not the message: it may quote a record's values
            tb = traceback.extract_tb(exc.__traceback__)[-1:]
            log.error(
                "%s: the sink raised %s at %s on a batch of %d; isolating the records",
                self._name,
                type(exc).__name__,
                ", ".join(f"{f.filename}:{f.lineno}" for f in tb),
                len(batch),
            )
            # one record alone: no telling a record the sink cannot handle from a
            # broken sink; the batch comes again, with others, after the restart
            if len(batch) == 1 or len(rejected := self._bisect(batch)) == len(batch):
                raise SinkError(
                    f"{self._name}: the sink raises on every record ({type(exc).__name__})",
                    retriable=False,
                ) from exc
            return rejected

    def _bisect(self, batch: Sequence[SinkRecord]) -> list[Rejected]:
        try:
            return self._write_once(batch)
        except DatabusError:
            raise
        except Exception as exc:
            if len(batch) == 1:
                (record,) = batch
                log.error(
                    "%s: %s[%d]@%d makes the sink raise %s: dead-lettered",
                    self._name,
                    record.topic,
                    record.partition,
                    record.offset,
                    type(exc).__name__,
                    extra=record_fields(record.topic, record.headers),
                )
                # the class only: an exception's text may quote the record's values
                return [
                    Rejected(
                        record,
                        "sink_crashed",
                        f"the sink raised {type(exc).__name__} on this record",
                        type(exc).__name__,
                    )
                ]
            half = len(batch) // 2
            return self._bisect(batch[:half]) + self._bisect(batch[half:])

    def _commit(self, messages: list[Message]) -> None:
        ends = next_offsets(_where(m) for m in messages)
        offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
        if not commit_unless_rebalancing(self._consumer, offsets, self._name):
            return
        self._next.update(ends)
        self._from.update(ends)

    def _count(self, batch: _Batch) -> int:
        m, name = self._metrics, self._name
        refused = {(x.record.topic, x.record.partition, x.record.offset) for x in batch.letters}
        written = 0
        for rec in batch.records or ():
            if (rec.topic, rec.partition, rec.offset) not in refused:
                m.sink_records_written.labels(name, _dataset(rec.topic)).inc()
                written += 1
        for x in batch.letters:
            m.sink_failures.labels(name, x.kind).inc()
            m.sink_dead_lettered.labels(name, _dataset(x.record.topic), x.letter.reason).inc()
        self.records_written += written
        return written

    # ---- holding a batch while the destination is down
    def _hold(self, batch: _Batch, exc: DatabusError) -> None:
        if not isinstance(exc, (SinkError, CircuitOpenError)):
            # The registry or the dead-letter topic: not counted by _write.
            self._metrics.sink_failures.labels(self._name, "retriable").inc()
        batch.failures += 1
        delay = max(self._backoff(batch.failures), self._circuit.probe_in())
        batch.retry_at = time.monotonic() + delay
        if self._held is None:
            self._held = batch
            self._consumer.pause(self._consumer.assignment())
        self._set_held_gauges(len(batch.messages))
        log.warning(
            "%s: %s (%s); holding %d records, next attempt in %.2f s",
            self._name,
            type(exc).__name__,
            exc,
            len(batch.messages),
            delay,
        )

    def _release(self) -> None:
        self._held = None
        self._consumer.resume(self._consumer.assignment())
        self._set_held_gauges(0)

    def _give_up(self, batch: _Batch) -> None:
        """Put the consumer back before a batch that failed for good, so whoever
        polls next gets it again instead of committing past it."""
        if self._held is batch:
            self._release()
        first: dict[TP, int] = {}
        for msg in batch.messages:
            topic, partition, offset = _where(msg)
            first[(topic, partition)] = min(first.get((topic, partition), offset), offset)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # partition revoked meanwhile: the group replays it
                log.warning("%s: could not rewind %s[%d]: %s", self._name, topic, partition, exc)

    def _put_back(self, msg: Message) -> None:
        """A record polled while holding (a partition assigned unpaused): pause its
        partition and rewind it, so it comes again after the held batch."""
        topic, partition, offset = _where(msg)
        log.info("%s: %s[%d] came unpaused while holding: paused", self._name, topic, partition)
        tp = TopicPartition(topic, partition, offset)
        self._consumer.pause([tp])
        self._consumer.seek(tp)

    def _set_held_gauges(self, records: int) -> None:
        self._metrics.sink_held_records.labels(self._name).set(records)
        paused = len(self._consumer_assignment()) if records else 0
        self._metrics.sink_paused_partitions.labels(self._name).set(paused)

    def _consumer_assignment(self) -> list[TopicPartition]:
        try:
            return list(self._consumer.assignment())
        except RuntimeError:  # closed
            return []

    # ---- a destination that lost data: rewind and replay
    def _check_store(self) -> None:
        """Between batches (everything consumed is written and committed): rewind the
        owned partitions the destination lacks."""
        self._check_at = time.monotonic() + self._store_check_s
        owned = set(self.assigned())
        expected = {tp: n for tp, n in self._next.items() if tp in owned}
        rewind = self._plan(expected)
        if rewind is None:
            return
        for (topic, partition), offset in rewind.seek.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its next owner checks
                log.warning("%s: could not rewind %s[%d]: %s", self._name, topic, partition, exc)
                continue
            self._next[(topic, partition)] = offset
            self._from[(topic, partition)] = offset

    def _plan(self, expected: dict[TP, int], *, everything: bool = False) -> Rewind | None:
        """The rewind the destination needs (all of ``expected`` from the start when
        ``everything``); counted and logged. None when the destination cannot be read
        now: the next check tries again."""
        assert self._tracker is not None
        if everything:
            rewind: Rewind | None = Rewind("requested", dict.fromkeys(expected, FROM_START), 0)
        else:
            try:
                applied = self._tracker.applied()
            except DatabusError as exc:
                if not exc.retriable:
                    raise
                log.warning("%s: cannot read the store's offsets (%s)", self._name, exc)
                self._check_at = 0.0
                return None
            rewind = rewind_plan(applied, expected, self._known_store)
            if applied.store_id is not None and applied.store_id != self._known_store:
                if self._known_store is not None:
                    log.warning("%s: the store's identity changed", self._name)
                self._known_store = applied.store_id
        if rewind is None or not rewind.seek:
            return None
        self.rebuilds += 1
        self._metrics.sink_store_rebuilds.labels(self._name, rewind.reason).inc()
        from_start = sum(1 for o in rewind.seek.values() if o == FROM_START)
        log.warning(
            "%s: rebuilding the store (%s): replaying %d partition(s) from Kafka, "
            "%d of them from their start, %d record(s) known behind",
            self._name,
            rewind.reason,
            len(rewind.seek),
            from_start,
            rewind.records,
        )
        return rewind

    def _rewind_assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> bool:
        """On assignment: start from the committed offsets, or from what the
        destination holds where it is behind. True when an offset was changed."""
        try:
            committed = consumer.committed(partitions, timeout=10.0)
        except KafkaException as exc:
            log.warning("%s: committed offsets unavailable (%s)", self._name, exc)
            self._check_at = 0.0
            return False
        expected: dict[TP, int] = {}
        for tp in committed:
            if tp.offset >= 0:
                expected[(tp.topic, tp.partition)] = tp.offset
                self._next[(tp.topic, tp.partition)] = tp.offset
                self._from[(tp.topic, tp.partition)] = tp.offset
        if self._rewind_all:
            expected = {(tp.topic, tp.partition): max(tp.offset, 1) for tp in committed}
        rewind = self._plan(expected, everything=self._rewind_all)
        self._check_at = time.monotonic() + self._store_check_s
        if rewind is None:
            return False
        for tp in partitions:
            target = rewind.seek.get((tp.topic, tp.partition))
            if target is not None:
                tp.offset = target
                self._next[(tp.topic, tp.partition)] = target
                self._from[(tp.topic, tp.partition)] = target
        return True

    # ---- rebalance callbacks (run inside poll/consume/close)
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        rewound = (
            self._tracker is not None
            and bool(partitions)
            and self._rewind_assigned(consumer, partitions)
        )
        if rewound and self._held is None:
            consumer.incremental_assign(partitions)
        if self._held is not None and partitions:
            # New partitions must wait behind the held batch like the others.
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
            log.info(
                "%s: %d partitions assigned while holding: paused", self._name, len(partitions)
            )
            self._set_held_gauges(len(self._held.messages))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        if self._held is not None:
            self._held.drop(revoked)
        for topic, partition in revoked:
            self._from.pop((topic, partition), None)
            if self._next.pop((topic, partition), None) is not None:
                self._remove_lag(topic, partition)

    # ---- metrics
    def _circuit_changed(self, state: CircuitState) -> None:
        self._metrics.sink_circuit_state.labels(self._name).set(CIRCUIT_STATE_VALUES[state])
        self._metrics.sink_circuit_transitions.labels(self._name, state).inc()
        # A probe half-opens it at every backoff step: only opening and closing are news.
        level = {"open": logging.WARNING, "closed": logging.INFO}.get(state, logging.DEBUG)
        log.log(level, "%s: circuit %s", self._name, state)

    def _export_lag(self) -> None:
        # Cached watermarks cost no request; they move only with fetches, so they go
        # stale while paused. Tansu reports the high watermark as the base offset of
        # the last batch + 1: there this lag is approximate (low, never negative).
        for (topic, partition), nxt in self._next.items():
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except (KafkaException, RuntimeError):
                continue
            lag = partition_lag(low, high, nxt)
            if lag is not None:
                self._metrics.sink_consumer_lag.labels(self._name, topic, str(partition)).set(lag)

    def _remove_lag(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):  # never exported
            self._metrics.sink_consumer_lag.remove(self._name, topic, str(partition))
