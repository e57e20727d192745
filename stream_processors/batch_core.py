"""The processor's hot path for one batch of raw records, without any Kafka I/O.

``BatchCore.process`` takes records from any catalog raw topic and returns what to
write: standardized records, dead letters, per-entity state changes (for the
changelog), rule deltas grouped by alert subject, and per (dataset, unit) stats.
The I/O loop (``stream_processors.batch_loop``) writes them in a safe order and
commits the input offsets only after everything is acknowledged.

The entity state is changed in place while the batch is processed (later records
of the batch must see earlier ones). Each batch keeps an undo segment until its
outputs are all written: ``rollback`` undoes every unsettled batch (the loop then
processes their records again), ``settle`` forgets the oldest once written.

Backfilled records (header ``databus.backfill: 1``, ``databus backfill``) are history
sent late: they are deduplicated, standardized, written to std and counted in the
stats (their old event time makes the dataset late in the ledger), but they move no
alert rule. The rule: an entity's ``contributions`` are always what its last *live*
change contributed. A backfilled change records its version, event id, digest and
offset (a later live change is compared with it) and carries the contributions over
unchanged; an entity only backfilled in a batch sends no delta, and the redelivery of
a backfilled record re-sends its batch's delta only when a live change in that batch
moved the contributions (``previous != contributions``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from schemas.catalog import Dataset
from schemas.dead_letters import DeadLetter
from schemas.headers import BACKFILL_HEADER
from stream_processors.alerts.facts import Contribution
from stream_processors.batch_stats import UnitStats
from stream_processors.entity_state import (
    Entity,
    EntityTable,
    Verdict,
    classify,
    content_digest,
)
from stream_processors.event_ids import DEFAULT_WINDOW, RecentEventIds
from stream_processors.pipeline import DatasetPipeline, Output

__all__ = [
    "BatchCore",
    "BatchOutput",
    "RawRecord",
    "TopicPartitionKey",
    "is_backfill",
]

Contributions = Callable[[str, Mapping[str, Any]], list[Contribution]]
Presence = Callable[[Dataset, Mapping[str, Any]], tuple[int, int, int, int]]
TopicPartitionKey = tuple[str, int]
UNKNOWN_UNIT = "unknown"


_BACKFILL = (BACKFILL_HEADER, b"1")


def is_backfill(headers: list[tuple[str, bytes | None]]) -> bool:
    """The record carries ``databus.backfill: 1``: history, not a live change."""
    return _BACKFILL in headers  # a list of (name, value) tuples: compared in C


class RawRecord(NamedTuple):
    """One consumed record (a tuple: made for every record, it must be cheap)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


class Taken(NamedTuple):
    """What the first pass reads of a decoded record: deduplication's inputs."""

    raw: dict[str, Any]
    source: Mapping[str, Any]
    event_id: str
    version: int
    digest: str
    key: bytes | None


@dataclass(slots=True)
class DeadOut:
    record: RawRecord
    dataset: str
    letter: DeadLetter


@dataclass(slots=True)
class BatchOutput:
    std: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = field(
        default_factory=list
    )
    std_from: list[RawRecord] = field(default_factory=list)  # the record of each std[i]
    dead: list[DeadOut] = field(default_factory=list)
    # (raw topic, partition, entity key) -> its newest state in this batch
    entities: dict[tuple[str, int, bytes], Entity] = field(default_factory=dict)
    deltas: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    stats: dict[tuple[str, str], UnitStats] = field(default_factory=dict)
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, verdict)
    flags: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, flag)
    # Entities this batch changed by backfilled records only: they send no delta.
    backfilled: set[tuple[str, int, bytes]] = field(default_factory=set)

    def unit_stats(self, dataset: str, unit: str) -> UnitStats:
        found = self.stats.get((dataset, unit))
        if found is None:
            found = self.stats[(dataset, unit)] = UnitStats(dataset, unit)
        return found

    def add_deltas(
        self,
        old: list[Any],
        new: list[Any],
        *,
        event_ms: int,
        src: str,
        offset: int,
    ) -> None:
        for sign, contributions in ((-1, old), (1, new)):
            for group, key, payload in contributions:
                self.deltas.setdefault((group, key), []).append(
                    {
                        "sign": sign,
                        "payload": payload,
                        "event_ms": event_ms,
                        "src": src,
                        "offset": offset,
                    }
                )


def _ms(value: object) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int):
        return value
    return 0


def unit_from_headers(headers: list[tuple[str, bytes | None]]) -> str | None:
    """The unit of an undecodable record, from ``ce_source`` (/databus/<system>/<unit>)."""
    for name, value in headers:
        if name == "ce_source" and value:
            parts = value.decode("utf-8", "replace").rsplit("/", 1)
            return parts[-1] if len(parts) == 2 else None
    return None


class BatchCore:
    def __init__(
        self,
        pipelines: Mapping[str, DatasetPipeline],
        units: frozenset[str],
        *,
        contributions: Contributions,
        presence: Presence,
        event_id_window: int = DEFAULT_WINDOW,
    ) -> None:
        self._pipelines = pipelines  # by raw topic
        self._units = units
        self._contributions = contributions
        self._presence = presence
        self._entities: dict[TopicPartitionKey, EntityTable] = {}
        self._undo: list[list[tuple[EntityTable, bytes, Entity | None]]] = []
        # Records whose output the broker refused for good, by (topic, partition,
        # offset): the loop fills it, and they are dead-lettered when processed again.
        self.refused: dict[tuple[str, int, int], DeadLetter] = {}
        # An event id another entity of the dataset used recently (event_ids.py).
        self._recent_ids = RecentEventIds(event_id_window)
        self._now_ms = 0  # the batch's processing time: entity state retention

    # ---- partition ownership
    def load(self, topic: str, partition: int, entities: EntityTable) -> None:
        self._entities[(topic, partition)] = entities

    def drop(self, topic: str, partition: int) -> None:
        self._entities.pop((topic, partition), None)

    def entity_count(self) -> int:
        """Entities held in memory (a disk-backed table counts its pending changes)."""
        return sum(len(t) for t in self._entities.values() if isinstance(t, dict))

    # ---- batch bookkeeping: one undo segment per batch not yet fully written
    def rollback(self) -> None:
        """Undo every batch not settled yet (newest first)."""
        for segment in reversed(self._undo):
            for table, key, previous in reversed(segment):
                if previous is None:
                    table.pop(key, None)
                else:
                    table[key] = previous
        self._undo.clear()

    def settle(self, batches: int = 1) -> None:
        """Forget the undo log of the oldest ``batches`` batches: they are written."""
        del self._undo[:batches]

    @property
    def unsettled(self) -> int:
        return len(self._undo)

    def _unit(self, unit: object) -> str:
        return unit if isinstance(unit, str) and unit in self._units else UNKNOWN_UNIT

    def process(self, records: list[RawRecord], now_ms: int) -> BatchOutput:
        """One batch on its own: ``process_into`` a fresh output, then ``finish`` it."""
        out = BatchOutput()
        self.process_into(out, records, now_ms)
        self.finish(out)
        return out

    def process_into(self, out: BatchOutput, records: list[RawRecord], now_ms: int) -> None:
        """Add ``records`` to ``out``, which may already hold earlier batches: state
        changes, stats and counts accumulate, so that several small batches send one
        state (an entity changed in several of them sends one net delta). Each call
        is one undo segment. Raises ``RegistryError`` (retriable) after undoing every
        unsettled batch.

        In three passes over the batch rather than one per record: decode every
        record, standardize every record that is new against the state before the
        batch, then decide and account record by record, in order (a record sees the
        earlier ones' state changes). Each pass keeps its own code and data hot in
        the CPU caches; one record at a time through all the stages was ~20 % slower
        (``bench/processor.py``). The last pass standardizes what the second skipped
        if it turns out new after all."""
        self._undo.append([])
        self._now_ms = now_ms
        try:
            taken = [self._take(r) for r in records]
            results = [self._standardize_if_new(r, t) for r, t in zip(records, taken, strict=True)]
            for r, t, result in zip(records, taken, results, strict=True):
                self._one(r, t, result, out, now_ms)
        except BaseException:
            self.rollback()
            raise

    def finish(self, out: BatchOutput) -> None:
        """Add each changed entity's net rule delta to ``out``: its state is complete."""
        for where, entity in out.entities.items():
            topic, partition, _key = where
            if where in out.backfilled:
                continue  # contributions carried over unchanged: nothing to send
            if entity.previous or entity.contributions:
                out.add_deltas(
                    entity.previous,
                    entity.contributions,
                    event_ms=entity.event_ms,
                    src=f"{topic}:{partition}",
                    offset=entity.offset,
                )

    def _take(self, r: RawRecord) -> Taken | DeadLetter:
        """Pass 1: decode ``r`` and read what deduplication needs."""
        if self.refused and (r.topic, r.partition, r.offset) in self.refused:
            return self.refused[(r.topic, r.partition, r.offset)]
        pipeline = self._pipelines[r.topic]
        raw = pipeline.decode(r.value)
        if isinstance(raw, DeadLetter):
            return raw
        source = raw.get("source") or {}
        return Taken(
            raw,
            source,
            str(raw.get("event_id")),
            int(source.get("version") or 0),
            content_digest(r.value or b""),
            r.key or _record_key(pipeline.dataset, raw),
        )

    def _verdict(self, r: RawRecord, t: Taken) -> tuple[EntityTable, Entity | None, Verdict]:
        table = self._entities.get((r.topic, r.partition))
        if table is None:
            table = self._entities[(r.topic, r.partition)] = {}
        previous = table.get(t.key) if t.key is not None else None
        if previous is not None and previous.final_ms:
            retention = self._pipelines[r.topic].dataset.state_retention
            if retention is not None and previous.expired(self._now_ms, retention.ms):
                previous = None  # past the dataset's state retention: forgotten
        verdict = classify(
            previous, event_id=t.event_id, version=t.version, digest=t.digest, offset=r.offset
        )
        return table, previous, verdict

    def _standardize_if_new(
        self, r: RawRecord, t: Taken | DeadLetter
    ) -> Output | DeadLetter | None:
        """Pass 2: the standardized record, if ``r`` is new against the state before
        the batch (None: not standardized)."""
        if isinstance(t, DeadLetter) or self._verdict(r, t)[2] is not Verdict.NEW:
            return None
        return self._pipelines[r.topic].standardize(t.raw, r.headers)

    def _one(
        self,
        r: RawRecord,
        t: Taken | DeadLetter,
        result: Output | DeadLetter | None,
        out: BatchOutput,
        now_ms: int,
    ) -> None:
        """Pass 3: decide what ``r`` is against the state so far, and account for it."""
        pipeline = self._pipelines[r.topic]
        ds = pipeline.dataset
        if isinstance(t, DeadLetter):
            stats = out.unit_stats(ds.id, self._unit(unit_from_headers(r.headers)))
            stats.received += 1
            stats.dead_lettered += 1
            stats.last_seen_ms = now_ms
            out.dead.append(DeadOut(r, ds.id, t))
            return
        source = t.source
        stats = out.unit_stats(ds.id, self._unit(source.get("unit")))
        event_id, version, digest, key = t.event_id, t.version, t.digest, t.key
        table, previous, verdict = self._verdict(r, t)
        backfill = is_backfill(r.headers)
        retention = ds.state_retention
        if (
            retention is not None
            and previous is None
            and not backfill
            and 0 < _ms(source.get("ts_ms")) < now_ms - retention.ms
        ):
            # An entity this worker does not know, changed longer ago than the state
            # retention (e.g. a forgotten one re-sent): history, as if backfilled.
            backfill = True
        if verdict is Verdict.REDELIVERY:
            assert previous is not None
            if backfill and previous.previous == previous.contributions:
                return  # its batch sent no delta for this entity (or a net-zero one)
            out.add_deltas(
                previous.previous,
                previous.contributions,
                event_ms=_ms(source.get("ts_ms")),
                src=f"{r.topic}:{r.partition}",
                offset=r.offset,
            )
            return  # counted when it was first processed
        stats.received += 1
        stats.last_seen_ms = now_ms
        if verdict is not Verdict.NEW:
            if verdict is Verdict.CONFLICT:
                stats.conflicts += 1
                stats.dead_lettered += 1
                out.dead.append(DeadOut(r, ds.id, _conflict(previous, event_id)))
                return
            if verdict is Verdict.DUPLICATE:
                stats.duplicates += 1
            else:
                stats.stale += 1
            out.dropped[(ds.id, verdict.value)] = out.dropped.get((ds.id, verdict.value), 0) + 1
            return
        if result is None:  # not new before the batch, new after an earlier record of it
            result = pipeline.standardize(t.raw, r.headers)
        if isinstance(result, DeadLetter):
            stats.dead_lettered += 1
            out.dead.append(DeadOut(r, ds.id, result))
            return
        if key is not None and self._recent_ids.claim(event_id, pipeline.std_topic, key):
            stats.conflicts += 1
            stats.dead_lettered += 1
            out.dead.append(DeadOut(r, ds.id, _reused(event_id)))
            return
        event = result.event
        stats.valid += 1
        event_ms = _ms((event.get("source") or {}).get("ts_ms"))
        stats.last_event_ms = max(stats.last_event_ms, event_ms)
        image = event.get("after") or event.get("before")
        if isinstance(image, dict):
            rp, rc, ep, ec = self._presence(ds, image)
            stats.required_present += rp
            stats.required_checked += rc
            stats.expected_present += ep
            stats.expected_checked += ec
        for flag in result.flags:
            out.flags[(ds.id, flag)] = out.flags.get((ds.id, flag), 0) + 1
        out.std.append((pipeline.std_topic, key, result.value, result.headers))
        out.std_from.append(r)
        if key is None:
            return  # no entity to track: nothing to deduplicate against or contribute
        where = (r.topic, r.partition, key)
        earlier = out.entities.get(where)
        if backfill:
            # History moves no rule: keep what the last live change contributed.
            contributions = list(previous.contributions) if previous is not None else []
            if earlier is None:
                out.backfilled.add(where)
        else:
            contributions = self._contributions(ds.id, event)
            out.backfilled.discard(where)
        # `previous` of the stored state = the contributions before this batch: an entity
        # changed several times in a batch sends one net delta, so a redelivery after a
        # crash re-sends exactly what the lost batch would have (see entity_state.py).
        if earlier is not None:
            before_batch = earlier.previous
        else:
            before_batch = previous.contributions if previous is not None else []
        entity = Entity(version, event_id, digest, r.offset, contributions, before_batch)
        if retention is not None and retention.is_final(
            t.raw.get("op"), t.raw.get("after") or t.raw.get("before")
        ):
            entity.final_ms = previous.final_ms if previous and previous.final_ms else now_ms
        entity.event_ms = event_ms
        self._undo[-1].append((table, key, previous))
        table[key] = entity
        out.entities[where] = entity


def _record_key(ds: Dataset, raw: Mapping[str, Any]) -> bytes | None:
    image = raw.get("after") or raw.get("before")
    if not isinstance(image, Mapping):
        return None
    try:
        return ds.key_of(image).encode()
    except (KeyError, TypeError, ValueError):
        return None


def _conflict(previous: Entity | None, event_id: str) -> DeadLetter:
    same_id = previous is not None and previous.event_id == event_id
    reason = "event_id_conflict" if same_id else "version_conflict"
    what = "event id" if same_id else "source version"
    return DeadLetter(
        stage="dedup",
        reason=reason,
        exception_class="Conflict",
        message=f"the same {what} was accepted before with different content",
        message_vi=(
            "mã sự kiện đã nhận trước đó với nội dung khác"
            if same_id
            else "phiên bản nguồn đã nhận trước đó với nội dung khác"
        ),
    )


def _reused(event_id: str) -> DeadLetter:
    return DeadLetter(
        stage="dedup",
        reason="event_id_reused",
        exception_class="Conflict",
        message=f"event id {event_id} was accepted recently for another entity of the dataset",
        message_vi="mã sự kiện vừa được dùng cho một đối tượng khác của bộ dữ liệu",
        field="event_id",
    )
