"""``databus dlq``: look at dead letters and send them back once their cause is fixed.

databus dlq list   [--dataset ID] [--limit N] [--json]
databus dlq show   --dataset ID --offset N [--partition P]
databus dlq replay --dataset ID [--reason R] [--stage S] [--offset N ...] [--partition P]
                   [--dry-run] [--force]

Exit codes: 0 done (also: nothing to replay); 1 ``show`` found no such letter, or
``replay`` could not deliver or record some letters (run it again); 2 bad usage or
settings; 3 the broker or the registry cannot be reached (retriable: try again later).

Topics are read from the beginning until every partition reported its end *and* no
record arrived for a short idle period: the embedded broker's high watermarks are
approximate (DESIGN.md), so what was consumed is what counts.

Replay sends a letter's original key, value and headers (error headers removed, plus
``databus.replay.of = <dlq topic>:<partition>:<offset>``) to the dataset's raw topic
with the idempotent producer, then records the letter on ``control.dlq_replays.v1``
(key = that letter id, value = JSON with its event id, where it went, when, by whom).
A replay skips every letter already recorded there (same letter id and event id), so
running the same replay twice sends nothing the second time; ``--force`` sends again.
The record lives on the bus rather than in a local file so that it holds whichever
machine or operator replays, and it is written only after the raw topic acknowledged
the letter: a crash in between re-sends that letter on the next run, which consumers
absorb (they deduplicate on ``ce_id``), while nothing is ever marked sent that was not.
"""

from __future__ import annotations

import getpass
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import typer
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from rich.markup import escape
from rich.table import Table

from bus.errors import ConfigError, DatabusError, DeliveryError
from bus.kafka_client import broker_error
from bus.settings import Settings
from databus.cli_common import broker_settings_or_exit as _settings
from databus.cli_common import console, exit_code_for, row_progress
from databus.cli_common import fail as _fail
from databus.dlq_inspect import (
    CODEC_REASONS,
    DeadLetterView,
    framing_hint,
    latest,
    mask_personal,
    next_step,
    parse_dead_letter,
    replay_headers,
    select,
    summarize,
)
from schemas.catalog import DATASETS, Dataset, get_dataset
from schemas.dead_letters import ORIGINAL_SHA256_HEADER, REPLAYS_TOPIC

__all__ = ["dlq_app", "read_topics"]

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, show, replay.")

_IDLE_S = 0.5
_MAX_IDLE_S = 10.0  # a partition that never reports its end (should not happen)
_READ_TIMEOUT_S = 300.0
_FLUSH_TIMEOUT_S = 60.0


# ---- errors and settings ----------------------------------------------------


def _exit_code(exc: DatabusError) -> int:
    return exit_code_for(exc, 3 if exc.retriable else 1)


def _dataset(dataset_id: str) -> Dataset:
    try:
        return get_dataset(dataset_id)
    except ConfigError as exc:
        _fail(f"{exc}\nSee `databus catalog list`.", 2)


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
class _Letter:
    view: DeadLetterView
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def _without_bytes(letter: _Letter) -> bool:
    return any(k == ORIGINAL_SHA256_HEADER for k, _ in letter.headers)


def _letters(
    settings: Settings,
    datasets: Sequence[Dataset],
    *,
    start: int = OFFSET_BEGINNING,
    partition: int | None = None,
    limit_per_partition: int | None = None,
) -> list[_Letter]:
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
        out.append(_Letter(view, msg.key(), msg.value(), headers))
    return out


# ---- list ---------------------------------------------------------------------


def _message(v: DeadLetterView) -> str:
    if v.message_vi and v.message_vi != v.message:
        return f"{v.message}\n[dim]{escape(v.message_vi)}[/]"
    return v.message


def _when(v: DeadLetterView) -> str:
    return "—" if v.timestamp is None else v.timestamp.strftime("%Y-%m-%d %H:%M:%S")


@dlq_app.command("list")
def list_letters(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Catalog dataset id (default: all)")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="How many of the latest letters")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
) -> None:
    """Dead letters per dataset: counts by stage and reason, and the latest ones."""
    settings = _settings()
    datasets = [_dataset(dataset)] if dataset else sorted(DATASETS.values(), key=lambda d: d.id)
    try:
        letters = [lt.view for lt in _letters(settings, datasets)]
    except DatabusError as exc:
        _fail(str(exc), _exit_code(exc))
    by_dataset: dict[str, list[DeadLetterView]] = {}
    for v in letters:
        by_dataset.setdefault(v.dataset, []).append(v)
    shown = [ds for ds in datasets if ds.id in by_dataset or dataset is not None]
    if as_json:
        doc = {
            "total": len(letters),
            "datasets": [
                {
                    "dataset": ds.id,
                    "dlq_topic": ds.dlq_topic,
                    "total": len(by_dataset.get(ds.id, [])),
                    "by_stage_reason": [
                        {"stage": r.stage, "reason": r.reason, "count": r.count}
                        for r in summarize(by_dataset.get(ds.id, []))
                    ],
                    "latest": [v.as_json() for v in latest(by_dataset.get(ds.id, []), limit)],
                }
                for ds in shown
            ],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    if not letters:
        where = datasets[0].dlq_topic if dataset else f"the {len(datasets)} DLQ topics"
        console.print(f"[green]✓[/] no dead letters in {where}")
        return
    for ds in shown:
        mine = by_dataset.get(ds.id, [])
        console.print(f"\n[bold]{ds.id}[/]: {len(mine)} dead letter(s) in {ds.dlq_topic}")
        if not mine:
            continue
        counts = Table(title="by stage and reason", title_justify="left")
        for col in ("stage", "reason", "count"):
            counts.add_column(col, justify="right" if col == "count" else "left")
        for row in summarize(mine):
            counts.add_row(row.stage, row.reason, str(row.count))
        console.print(counts)
        recent = Table(title=f"latest {min(limit, len(mine))}", title_justify="left")
        for col in ("partition", "offset", "time (UTC)", "stage", "reason", "field", "message"):
            recent.add_column(col, justify="right" if col in ("partition", "offset") else "left")
        for v in latest(mine, limit):
            recent.add_row(
                str(v.dlq_partition),
                str(v.dlq_offset),
                _when(v),
                v.stage,
                v.reason,
                v.field or "—",
                _message(v),
            )
        console.print(recent)
    console.print(
        "\nOne letter in full: databus dlq show --dataset <id> --partition <p> --offset <n>"
    )


# ---- show ---------------------------------------------------------------------


def _decoded(settings: Settings, ds: Dataset, letter: _Letter) -> None:
    """Print the record with personal fields masked, or why it cannot be decoded."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from bus.errors import CodecError
    from schemas.codec import AvroDeserializer

    console.print("\n[bold]record[/] (personal fields masked)")
    if settings.schema_registry.url is None:
        console.print(
            "[yellow]not decoded[/]: DATABUS_SCHEMA_REGISTRY__URL is not set "
            f"({framing_hint(letter.value)})"
        )
        return
    decode = AvroDeserializer(SchemaRegistryClient(settings.schema_registry.client_config()))
    try:
        record = decode(letter.value)
    except CodecError as exc:
        console.print(
            f"[red]cannot decode the value[/]: {exc.reason}: {escape(str(exc))}\n"
            f"  {framing_hint(letter.value)}"
        )
        return
    masked = mask_personal(record, ds.personal_fields)
    console.print_json(json.dumps(masked, ensure_ascii=False, default=str))


@dlq_app.command("show")
def show(
    dataset: Annotated[str, typer.Option("--dataset", help="Catalog dataset id")],
    offset: Annotated[int, typer.Option(min=0, help="Offset in the DLQ topic")],
    partition: Annotated[
        int | None, typer.Option(min=0, help="Partition of the DLQ topic (when ambiguous)")
    ] = None,
) -> None:
    """One dead letter in full: headers, the record (personal fields masked), next step."""
    settings = _settings()
    ds = _dataset(dataset)
    try:
        found = [
            lt
            for lt in _letters(
                settings, [ds], start=offset, partition=partition, limit_per_partition=1
            )
            if lt.view.dlq_offset == offset
        ]
    except DatabusError as exc:
        _fail(str(exc), _exit_code(exc))
    where = f"{ds.dlq_topic}" + ("" if partition is None else f" partition {partition}")
    if not found:
        _fail(
            f"no dead letter at offset {offset} of {where}; "
            f"see `databus dlq list --dataset {ds.id}` for the letters there",
            1,
        )
    if len(found) > 1:
        parts = ", ".join(str(lt.view.dlq_partition) for lt in found)
        _fail(f"offset {offset} exists in partitions {parts} of {where}: add --partition", 2)
    letter = found[0]
    v = letter.view
    table = Table(title=f"dead letter {v.letter_id}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    key_personal = bool(set(ds.key_fields) & set(ds.personal_fields))
    key = "—" if letter.key is None else letter.key.decode("utf-8", errors="replace")
    rows = [
        ("dataset", v.dataset),
        ("time (UTC)", _when(v)),
        ("refused from", v.original),
        ("stage", v.stage),
        ("reason", v.reason),
        ("field", v.field or "—"),
        ("exception", v.exception_class or "—"),
        ("message", v.message or "—"),
        ("message (vi)", v.message_vi or "—"),
        ("event id", v.event_id or "—"),
        ("key", "***" if key_personal and letter.key is not None else key),
    ]
    if v.replay_of:
        rows.append(("replay of", v.replay_of))
    for name, value in rows:
        table.add_row(name, escape(value))
    console.print(table)
    headers = Table(title="headers", title_justify="left")
    headers.add_column("name")
    headers.add_column("value")
    for name, raw in letter.headers:
        text = "" if raw is None else raw.decode("utf-8", errors="replace")
        headers.add_row(escape(name), escape(text[:200]))
    console.print(headers)
    try:
        _decoded(settings, ds, letter)
    except DatabusError as exc:  # the registry cannot be reached
        _fail(f"cannot decode the value: {exc}", _exit_code(exc))
    console.print(f"\n[bold]next step[/]: {escape(next_step(v))}")


# ---- replay -------------------------------------------------------------------


def _replayed(settings: Settings) -> set[tuple[str, str]]:
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


def _summary(
    chosen: Sequence[_Letter],
    skipped: set[str],
    sent: set[str],
    failed: set[str],
    *,
    dry_run: bool,
) -> Table:
    table = Table(title="replay" + (" (dry run)" if dry_run else ""), title_justify="left")
    cols = ["stage", "reason", "selected", "already replayed"]
    cols += ["would send"] if dry_run else ["sent", "failed"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("stage", "reason") else "right")
    groups: dict[tuple[str, str], list[str]] = {}
    for lt in chosen:
        groups.setdefault((lt.view.stage, lt.view.reason), []).append(lt.view.letter_id)
    for (stage, reason), ids in sorted(groups.items()):
        n_skip = sum(i in skipped for i in ids)
        cells = [stage, reason, str(len(ids)), str(n_skip)]
        if dry_run:
            cells.append(str(len(ids) - n_skip))
        else:
            cells += [str(sum(i in sent for i in ids)), str(sum(i in failed for i in ids))]
        table.add_row(*cells)
    return table


def _marker(letter: _Letter, ds: Dataset, partition: int, offset: int) -> bytes:
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


def _send(
    settings: Settings, ds: Dataset, todo: Sequence[_Letter]
) -> tuple[set[str], dict[str, str], set[str]]:
    """Send ``todo`` to the raw topic, then record each delivered one.

    Returns (sent and recorded, failed -> error, sent but not recorded)."""
    from bus.kafka_client import producer_config
    from bus.topic_admin import TopicSpec, ensure_topics

    ensure_topics(settings, [TopicSpec(REPLAYS_TOPIC, 1)])
    producer = Producer(producer_config(settings))
    delivered: dict[str, tuple[int, int]] = {}
    failed: dict[str, str] = {}
    by_id = {lt.view.letter_id: lt for lt in todo}
    with row_progress(f"replaying to {ds.raw_topic}", len(todo)) as advance:
        for lt in todo:
            on_delivery = _on_delivery(lt.view.letter_id, delivered, failed, advance)
            _produce(
                producer,
                ds.raw_topic,
                key=lt.key,
                value=lt.value,
                headers=replay_headers(lt.headers, lt.view.letter_id),
                on_delivery=on_delivery,
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
            value=_marker(by_id[lid], ds, part, off),
            on_delivery=on_marker,
        )
    producer.flush(_FLUSH_TIMEOUT_S)
    unrecorded |= delivered.keys() - recorded - unrecorded
    return recorded, failed, unrecorded


@dlq_app.command("replay")
def replay(
    dataset: Annotated[str, typer.Option("--dataset", help="Catalog dataset id")],
    reason: Annotated[str | None, typer.Option(help="Only letters with this reason")] = None,
    stage: Annotated[str | None, typer.Option(help="Only letters from this stage")] = None,
    offset: Annotated[
        list[int] | None, typer.Option(help="Only these DLQ offsets (repeat the option)")
    ] = None,
    partition: Annotated[int | None, typer.Option(min=0, help="Only this DLQ partition")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, send nothing")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Send letters already replayed once again")
    ] = False,
) -> None:
    """Send dead letters back to the dataset's raw topic, original bytes and headers."""
    settings = _settings()
    ds = _dataset(dataset)
    offsets = set(offset or [])
    try:
        letters = _letters(settings, [ds])
        by_id = {lt.view.letter_id: lt for lt in letters}
        chosen = [
            by_id[v.letter_id]
            for v in select(
                [lt.view for lt in letters],
                reason=reason,
                stage=stage,
                offsets=offsets,
                partition=partition,
            )
        ]
        missing = offsets - {lt.view.dlq_offset for lt in chosen}
        if missing:
            _fail(
                f"no dead letter matching the filters at offset(s) "
                f"{', '.join(map(str, sorted(missing)))} of {ds.dlq_topic}; "
                f"see `databus dlq list --dataset {ds.id}`",
                2,
            )
        if not chosen:
            console.print(f"nothing to replay: no dead letter in {ds.dlq_topic} matches")
            return
        done = set() if force else _replayed(settings)
        skipped = {
            lt.view.letter_id for lt in chosen if (lt.view.letter_id, lt.view.event_id) in done
        }
        todo = [lt for lt in chosen if lt.view.letter_id not in skipped]
        # A letter too large to keep its bytes holds only their size and digest:
        # sending it would put an empty record on the raw topic.
        bytesless = [lt for lt in todo if _without_bytes(lt)]
        todo = [lt for lt in todo if not _without_bytes(lt)]
        if bytesless:
            console.print(
                f"[yellow]{len(bytesless)} selected letter(s) were kept without their bytes[/] "
                "(the record was too large; only its size and SHA-256 are on the DLQ): "
                "nothing to send — the source system must send a smaller record again."
            )
        broken = sum(lt.view.reason in CODEC_REASONS - {"unknown_schema_id"} for lt in todo)
        if broken:
            console.print(
                f"[yellow]{broken} selected letter(s) have broken bytes[/] (a decode reason): "
                "the processor will dead-letter them again; filter with --reason to leave them."
            )
        if dry_run:
            console.print(_summary(chosen, skipped, set(), set(), dry_run=True))
            for lt in todo:
                console.print(
                    f"  would send {lt.view.letter_id} (event {lt.view.event_id or '?'}) "
                    f"→ {ds.raw_topic}"
                )
            console.print("dry run: nothing was sent")
            return
        sent, failed, unrecorded = _send(settings, ds, todo) if todo else (set(), {}, set())
    except DatabusError as exc:
        _fail(str(exc), _exit_code(exc))
    console.print(_summary(chosen, skipped, sent | unrecorded, set(failed), dry_run=False))
    console.print(
        f"{len(sent | unrecorded)} sent to {ds.raw_topic}, {len(skipped)} already replayed "
        "(skipped; --force sends them again)"
    )
    if failed:
        for lid, err in sorted(failed.items()):
            console.print(f"  [red]not delivered[/] {lid}: {escape(err)}")
        console.print(
            f"[red]{len(failed)} letter(s) were not delivered[/] and are not recorded as "
            "replayed: check the broker, then run the same command again."
        )
    if unrecorded:
        console.print(
            f"[yellow]{len(unrecorded)} letter(s) were sent but not recorded[/] on "
            f"{REPLAYS_TOPIC}: a new run sends them again (consumers deduplicate on ce_id)."
        )
    if failed or unrecorded:
        raise typer.Exit(1)
