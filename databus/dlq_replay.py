"""Dead-letter replay: read the letters, choose, send them back, record each on the bus.

Reading: ``read_topics`` reads topics from the beginning until every partition
reported its end *and* no record arrived for a short idle period (the embedded
broker's high watermarks are approximate, docs/architecture.md), so what was consumed is what
counts; ``read_letters`` parses each DLQ record into a ``Letter``.

Replay sends a letter's original key, value and headers (error headers removed, plus
``databus.replay.of = <dlq topic>:<partition>:<offset>``) to the dataset's raw topic
with the idempotent producer, then records the letter on ``control.dlq_replays.v1``
(key = that letter id, value = JSON with its event id, where it went, when, by whom).
``plan_replay`` skips every letter already recorded there (same letter id and event
id), so running the same replay twice sends nothing the second time unless forced.
The record lives on the bus rather than in a local file so that it holds whichever
machine or operator replays, and it is written only after the raw topic acknowledged
the letter: a crash in between re-sends that letter on the next run, which consumers
absorb (they deduplicate on ``ce_id``), while nothing is ever marked sent that was not.

No printing here: ``databus dlq`` (``databus/dlq_cli.py``) is the command line over it.
"""

from __future__ import annotations

import getpass
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from bus.errors import DeliveryError
from bus.kafka_client import broker_error, producer_config
from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.dlq_inspect import (
    CODEC_REASONS,
    DeadLetterView,
    parse_dead_letter,
    replay_headers,
    select,
)
from schemas.catalog import Dataset
from schemas.dead_letters import ORIGINAL_SHA256_HEADER, REPLAYS_TOPIC
from schemas.headers import REPLAY_SOURCE, cloudevent, derived_id

__all__ = [
    "Letter",
    "ReplayOutcome",
    "ReplayPlan",
    "choose_letters",
    "plan_replay",
    "read_letters",
    "read_topics",
    "replay_marker",
    "replayed",
    "send_letters",
    "without_bytes",
]

_IDLE_S = 0.5
_MAX_IDLE_S = 10.0  # a partition that never reports its end (should not happen)
_READ_TIMEOUT_S = 300.0
_FLUSH_TIMEOUT_S = 60.0


# ---- reading topics to their end --------------------------------------------


def read_topics(
    settings: Settings,
    topics: Sequence[str],
    *,
    start: int = OFFSET_BEGINNING,
    partition: int | None = None,
    limit_per_partition: int | None = None,
    idle_s: float = _IDLE_S,
    timeout: float = _READ_TIMEOUT_S,
) -> Iterator[Message]:
    """Every record of ``topics`` from ``start`` (each partition, or only ``partition``)
    to the end; topics that do not exist yield nothing (and are not created).

    The end is reached when every partition reported EOF and nothing arrived for
    ``idle_s`` (EOF alone relies on the high watermark). Without a consumer group:
    partitions are assigned, so there is no group join to wait for.
    """
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"databus-dlq-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
            # An explicit start past the end (no such letter) reads nothing, not everything.
            "auto.offset.reset": "earliest" if start == OFFSET_BEGINNING else "latest",
        }
    )
    try:
        try:
            # All topics: asking for one by name may auto-create it.
            meta = consumer.list_topics(timeout=15).topics
        except KafkaException as exc:
            raise broker_error(settings.kafka, exc) from exc
        assigned = [
            TopicPartition(t, p, start)
            for t in topics
            if (tm := meta.get(t)) is not None and tm.error is None
            for p in sorted(tm.partitions)
            if partition is None or p == partition
        ]
        if not assigned:
            return
        consumer.assign(assigned)
        pending = {(tp.topic, tp.partition) for tp in assigned}
        taken: Counter[tuple[str, int]] = Counter()
        last_data = time.monotonic()
        deadline = last_data + timeout
        while True:
            for msg in consumer.consume(500, 0.1):
                where = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(where)
                        continue
                    raise DeliveryError(
                        f"reading {where[0]}: {err.str()}", retriable=err.retriable()
                    )
                if limit_per_partition is not None and taken[where] >= limit_per_partition:
                    continue  # fetched before the pause took effect
                last_data = time.monotonic()
                taken[where] += 1
                yield msg
                if limit_per_partition is not None and taken[where] >= limit_per_partition:
                    pending.discard(where)
                    consumer.pause([TopicPartition(*where)])
            now = time.monotonic()
            quiet = now - last_data
            if limit_per_partition is not None and all(
                taken[w] >= limit_per_partition for w in {(t.topic, t.partition) for t in assigned}
            ):
                return
            if (not pending and quiet >= idle_s) or quiet >= _MAX_IDLE_S:
                return
            if now > deadline:
                raise DeliveryError(f"reading {', '.join(topics)} did not end in {timeout:.0f} s")
    finally:
        consumer.close()


@dataclass(frozen=True)
class Letter:
    """A dead letter: its parsed view and the record's own key, value and headers."""

    view: DeadLetterView
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def without_bytes(letter: Letter) -> bool:
    """Kept without its bytes (the record was too large): only its size and digest."""
    return any(k == ORIGINAL_SHA256_HEADER for k, _ in letter.headers)


def read_letters(
    settings: Settings,
    datasets: Sequence[Dataset],
    *,
    start: int = OFFSET_BEGINNING,
    partition: int | None = None,
    limit_per_partition: int | None = None,
) -> list[Letter]:
    """The dead letters of ``datasets`` (their DLQ topics), in topic order."""
    by_topic = {ds.dlq_topic: ds.id for ds in datasets}
    out = []
    for msg in read_topics(
        settings,
        list(by_topic),
        start=start,
        partition=partition,
        limit_per_partition=limit_per_partition,
    ):
        topic = msg.topic() or ""
        # confluent-kafka's stubs type headers loosely; they are (str, bytes | None) pairs
        headers = cast(list[tuple[str, bytes | None]], list(msg.headers() or []))
        ts_type, ts_ms = msg.timestamp()
        view = parse_dead_letter(
            by_topic[topic],
            topic=topic,
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            headers=headers,
            timestamp_ms=ts_ms if ts_type else None,
        )
        out.append(Letter(view, msg.key(), msg.value(), headers))
    return out


# ---- replay -------------------------------------------------------------------


def replayed(settings: Settings) -> set[tuple[str, str]]:
    """(letter id, event id) of every letter already replayed."""
    done = set()
    for msg in read_topics(settings, [REPLAYS_TOPIC]):
        key = (msg.key() or b"").decode("utf-8", errors="replace")
        try:
            event_id = str(json.loads(msg.value() or b"{}").get("event_id", ""))
        except (ValueError, AttributeError):
            event_id = ""
        done.add((key, event_id))
    return done


def choose_letters(
    letters: Sequence[Letter],
    *,
    reason: str | None = None,
    stage: str | None = None,
    offsets: Collection[int] = (),
    partition: int | None = None,
) -> tuple[list[Letter], set[int]]:
    """(the letters the filters select, the asked-for offsets no selected letter has)."""
    by_id = {lt.view.letter_id: lt for lt in letters}
    chosen = [
        by_id[v.letter_id]
        for v in select(
            [lt.view for lt in letters],
            reason=reason,
            stage=stage,
            offsets=set(offsets),
            partition=partition,
        )
    ]
    return chosen, set(offsets) - {lt.view.dlq_offset for lt in chosen}


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay of ``chosen`` does: ``skipped`` (letter ids) were replayed
    already, ``bytesless`` cannot be sent (kept without their bytes), ``todo`` are
    to send, ``broken`` of them with a decode reason (they will come back)."""

    chosen: list[Letter]
    skipped: set[str]
    bytesless: list[Letter]
    todo: list[Letter]
    broken: int


def plan_replay(chosen: Sequence[Letter], done: Collection[tuple[str, str]]) -> ReplayPlan:
    """Split ``chosen`` letters; ``done`` is ``replayed()`` (empty to send all again)."""
    skipped = {lt.view.letter_id for lt in chosen if (lt.view.letter_id, lt.view.event_id) in done}
    todo = [lt for lt in chosen if lt.view.letter_id not in skipped]
    # A letter too large to keep its bytes holds only their size and digest:
    # sending it would put an empty record on the raw topic.
    bytesless = [lt for lt in todo if without_bytes(lt)]
    todo = [lt for lt in todo if not without_bytes(lt)]
    broken = sum(lt.view.reason in CODEC_REASONS - {"unknown_schema_id"} for lt in todo)
    return ReplayPlan(list(chosen), skipped, bytesless, todo, broken)


@dataclass(frozen=True)
class ReplayOutcome:
    """``sent``: sent and recorded; ``failed``: letter id -> why it was not delivered;
    ``unrecorded``: sent but not recorded (a new run sends them again)."""

    sent: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    unrecorded: set[str] = field(default_factory=set)


def replay_marker(letter: Letter, ds: Dataset, partition: int, offset: int) -> bytes:
    """The value recorded on the replays topic for a letter sent to ``partition``/``offset``."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = ""
    return json.dumps(
        {
            "letter": letter.view.letter_id,
            "event_id": letter.view.event_id,
            "dataset": ds.id,
            "stage": letter.view.stage,
            "reason": letter.view.reason,
            "raw_topic": ds.raw_topic,
            "raw_partition": partition,
            "raw_offset": offset,
            "replayed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "operator": who,
        }
    ).encode()


def _produce(producer: Producer, topic: str, **kwargs: Any) -> None:
    while True:
        try:
            producer.produce(topic, **kwargs)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.5)  # the local queue is full: let deliveries drain it


def _on_delivery(
    lid: str,
    delivered: dict[str, tuple[int, int]],
    failed: dict[str, str],
    advance: Callable[[], None],
) -> Callable[[KafkaError | None, Message], None]:
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            delivered[lid] = (msg.partition() or 0, msg.offset() or 0)
        else:
            failed[lid] = err.str()
        advance()

    return on_delivery


def send_letters(
    settings: Settings,
    ds: Dataset,
    todo: Sequence[Letter],
    *,
    on_delivery: Callable[[], None] = lambda: None,
) -> ReplayOutcome:
    """Send ``todo`` to the raw topic, then record each delivered one on the replays
    topic; ``on_delivery`` is called for each letter's delivery report (progress)."""
    if not todo:
        return ReplayOutcome()
    ensure_topics(settings, [TopicSpec(REPLAYS_TOPIC, 1)])
    producer = Producer(producer_config(settings))
    delivered: dict[str, tuple[int, int]] = {}
    failed: dict[str, str] = {}
    by_id = {lt.view.letter_id: lt for lt in todo}
    for lt in todo:
        _produce(
            producer,
            ds.raw_topic,
            key=lt.key,
            value=lt.value,
            headers=replay_headers(lt.headers, lt.view.letter_id),
            on_delivery=_on_delivery(lt.view.letter_id, delivered, failed, on_delivery),
        )
    producer.flush(_FLUSH_TIMEOUT_S)
    for lid in by_id.keys() - delivered.keys() - failed.keys():
        failed[lid] = f"no acknowledgement in {_FLUSH_TIMEOUT_S:.0f} s"
    recorded: set[str] = set()
    unrecorded: set[str] = set()

    def on_marker(err: KafkaError | None, msg: Message) -> None:
        lid = (msg.key() or b"").decode()
        (unrecorded if err is not None else recorded).add(lid)

    for lid, (part, off) in delivered.items():
        _produce(
            producer,
            REPLAYS_TOPIC,
            key=lid.encode(),
            value=replay_marker(by_id[lid], ds, part, off),
            headers=cloudevent(
                id=derived_id(REPLAY_SOURCE, lid, f"{ds.raw_topic}:{part}:{off}"),
                source=REPLAY_SOURCE,
                type="vn.gov.databus.control.dlq_replay",
                time_ms=time.time_ns() // 1_000_000,
                content_type="application/json",
                subject=lid,
            ),
            on_delivery=on_marker,
        )
    producer.flush(_FLUSH_TIMEOUT_S)
    unrecorded |= delivered.keys() - recorded - unrecorded
    return ReplayOutcome(recorded, failed, unrecorded)
