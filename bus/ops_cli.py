"""Operator commands: the bus at a glance, its topics, a topic's records, history.

databus topics create [--dry-run]
databus status [--json] [--timeout S]
databus tail TOPIC [--from-beginning] [--limit N] [--follow/--no-follow] [--table]
databus backfill FILE --dataset ID (--time-field F ... | --as-of TIME) [--rejects PATH]

Exit codes: 0 done; 1 ``backfill`` refused some rows (see the reject file); 2 bad usage
or settings, or the broker cannot be reached; 3 the registry or the IOC store failed
mid-way (retriable: try again).

The computations are pure and tested on their own: ``bus.ops_status`` (lag, dead-letter
counts, open alerts), ``bus.tail`` (decoding and masking), ``producers.backfill``.
Counts come from reading the topics, not from high watermarks: the embedded broker's
are approximate (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo

import typer
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bus.cli_common import console, stop_on_signals
from bus.errors import ConfigError, DatabusError
from bus.ops_status import (
    DlqCount,
    GroupStatus,
    Member,
    OpenAlert,
    TopicLag,
    dlq_counts,
    is_reader_group,
    open_alerts_from_records,
    open_alerts_from_store,
    partition_lag,
    shown_groups,
    status_document,
    topic_lags,
)
from bus.settings import Settings, load_settings
from schemas.catalog import DATASETS

__all__ = ["ops_app", "topics_app"]

ops_app = typer.Typer(no_args_is_help=True, help="Operator commands.")
topics_app = typer.Typer(no_args_is_help=True, help="The bus's topics.")

_LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
# Warnings and notes: stderr, so that --json and tail's JSON lines stay parseable.
_notes = Console(stderr=True)
_IDLE_S = 0.3  # nothing arrived for this long after every partition's end: done


# ---- settings and errors ----------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    console.print(f"[red]{escape(message)}[/]")
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except DatabusError as exc:
        _fail(f"{exc}\nFix the variable(s) above (see README, 'Settings').", 2)
    if settings.kafka.bootstrap_servers is None:
        _fail(
            "DATABUS_KAFKA__BOOTSTRAP_SERVERS is not set: point it at the bus's Kafka "
            "(ask the data team for the address).",
            2,
        )
    return settings


def _topics(settings: Settings, timeout: float) -> dict[str, int]:
    """Every topic of the broker and its partition count; exit 2 when unreachable."""
    admin = AdminClient(settings.kafka.client_config())
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        _fail(
            f"cannot reach the broker at {settings.kafka.bootstrap_servers} "
            f"in {timeout:.0f} s ({exc.args[0]}); check DATABUS_KAFKA__BOOTSTRAP_SERVERS "
            "and that the broker runs, then try again",
            2,
        )
    return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}


# ---- topics create ----------------------------------------------------------------


def _retention(ms: int) -> str:
    if ms < 0:
        return "forever"
    days, rest = divmod(ms, 86_400_000)
    return f"{days} d" if not rest else f"{ms // 3_600_000} h"


@topics_app.command("create")
def topics_create(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, create nothing")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the broker")] = 15,
) -> None:
    """Create the bus's topics from the catalog, with partitions and retention.

    Raw, std and dlq per dataset, alerts, quality, declarations and the processor's
    own. Existing topics are left as they are: running it again changes nothing."""
    from bus.topics import bus_topics, ensure_topics

    settings = _settings()
    specs = bus_topics(settings)
    existing = _topics(settings, timeout)
    created: set[str] = set()
    if not dry_run:
        try:
            created = set(ensure_topics(settings, specs, timeout))
        except (DatabusError, KafkaException) as exc:
            _fail(f"creating topics: {exc}", 2)
    title = "topics" + (" (dry run)" if dry_run else "")
    table = Table(title=title, title_justify="left")
    for col in ("topic", "partitions", "retention", "cleanup", "status"):
        table.add_column(col, justify="right" if col == "partitions" else "left")
    for spec in specs:
        if spec.name in existing:
            status, parts = "[dim]existing[/]", existing[spec.name]
        elif dry_run:
            status, parts = "[yellow]would create[/]", spec.partitions
        else:
            status = "[green]created[/]" if spec.name in created else "[dim]existing[/]"
            parts = spec.partitions
        table.add_row(
            spec.name,
            str(parts),
            _retention(spec.retention_ms),
            "compact" if spec.compact else "delete",
            status,
        )
    console.print(table)
    missing = sum(s.name not in existing for s in specs)
    if dry_run:
        console.print(f"dry run: {missing} of {len(specs)} topics would be created")
    else:
        console.print(f"{len(created)} created, {len(specs) - len(created)} already existed")


# ---- status: groups and lag -------------------------------------------------------


def _state(value: object) -> str:
    name = getattr(value, "name", None)
    return str(name if name is not None else value).lower()


def _aio_members(settings: Settings, groups: list[str], timeout: float) -> dict[str, list[Member]]:
    """Members as aiokafka's DescribeGroups reads them. librdkafka drops the members
    the embedded broker describes with an empty assignment; aiokafka keeps them."""
    from aiokafka.admin import AIOKafkaAdminClient

    kafka = settings.kafka
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    if "SSL" in kafka.security_protocol:
        from aiokafka.helpers import create_ssl_context

        cafile = str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        options["ssl_context"] = create_ssl_context(cafile=cafile)

    async def describe() -> dict[str, list[Member]]:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=kafka.bootstrap_servers or "",
            request_timeout_ms=int(timeout * 1000),
            **options,
        )
        await admin.start()
        try:
            found: dict[str, list[Member]] = {}
            # One group per request: the embedded broker garbles a multi-group answer.
            for wanted in groups:
                for response in await admin.describe_consumer_groups([wanted]):
                    for group in response.groups:
                        error, name, members = group[0], group[1], group[-1]
                        if error == 0:
                            found[name] = [
                                Member(str(m[0]), str(m[1]), str(m[2]), 0) for m in members
                            ]
            return found
        finally:
            await admin.close()

    try:
        return asyncio.run(asyncio.wait_for(describe(), timeout))
    except Exception:  # best effort: the caller keeps librdkafka's answer
        return {}


def _describe(
    settings: Settings, admin: AdminClient, groups: list[str], timeout: float
) -> dict[str, tuple[str, list[Member]]]:
    """State and members per group."""
    if not groups:
        return {}
    out: dict[str, tuple[str, list[Member]]] = {}
    for group, future in admin.describe_consumer_groups(groups, request_timeout=timeout).items():
        try:
            desc = future.result()
        except KafkaException:
            out[group] = ("unknown", [])
            continue
        members = [
            Member(
                m.member_id,
                m.client_id,
                m.host,
                len(m.assignment.topic_partitions) if m.assignment else 0,
            )
            for m in desc.members
        ]
        out[group] = (_state(desc.state), members)
    quiet = [
        g
        for g, (state, members) in out.items()
        if not members and state not in ("empty", "dead", "unknown")
    ]
    if quiet:
        for group, members in _aio_members(settings, quiet, timeout).items():
            out[group] = (out[group][0], members)
    return out


def _committed(admin: AdminClient, group: str, timeout: float) -> dict[tuple[str, int], int]:
    """The group's committed offsets (one group per request: librdkafka's limit)."""
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
    )
    try:
        result = futures[group].result()
    except KafkaException:
        return {}
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.topic_partitions or []
        if tp.error is None and tp.offset >= 0
    }


def _count_after(
    settings: Settings, starts: Mapping[tuple[str, int], int], deadline: float
) -> tuple[Counter[tuple[str, int]], set[tuple[str, int]]]:
    """Records after each start offset (counted by reading them, to the end or the
    deadline), and the partitions whose end was reached."""
    counted: Counter[tuple[str, int]] = Counter()
    if not starts:
        return counted, set()
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"databus-status-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
            "auto.offset.reset": "earliest",
        }
    )
    done: set[tuple[str, int]] = set()
    try:
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
        last = time.monotonic()
        while time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.1):
                where = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is None:
                    counted[where] += 1
                    last = time.monotonic()
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(where)
            if len(done) == len(starts) and time.monotonic() - last >= _IDLE_S:
                break
        else:
            done.clear()  # out of time: a partition past its EOF may still have had more
    finally:
        consumer.close()
    return counted, done


def _high(settings: Settings, parts: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    consumer = Consumer(
        {**settings.kafka.client_config(), "group.id": f"databus-status-{uuid.uuid4().hex}"}
    )
    try:
        out = {}
        for topic, partition in parts:
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=5
                )
                out[(topic, partition)] = int(high)
            except KafkaException:
                continue
        return out
    finally:
        consumer.close()


def _group_statuses(
    settings: Settings, topics: Mapping[str, int], timeout: float
) -> list[GroupStatus]:
    admin = AdminClient(settings.kafka.client_config())
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout).result()
    except KafkaException as exc:
        _fail(f"listing consumer groups: {exc.args[0]}", 2)
    # The bus's own groups are asked for even when not listed: the embedded broker
    # lists a group only once it has committed an offset.
    known = {
        settings.processor_group,
        f"{settings.processor_group}-standardize",
        settings.sink_group,
        settings.access.share_group,
    }
    ids = sorted({g.group_id for g in listed.valid if not is_reader_group(g.group_id)} | known)
    described = _describe(settings, admin, ids, timeout)
    committed = {g: _committed(admin, g, timeout) for g in ids}
    shown = shown_groups(
        ids,
        {g: len(m) for g, (_s, m) in described.items()},
        {g: len(c) for g, c in committed.items()},
    )
    deadline = time.monotonic() + timeout
    statuses = []
    for group in shown:
        offsets = committed[group]
        consumed = sorted({t for t, _p in offsets} & set(topics))
        starts = {
            (t, p): offsets.get((t, p), OFFSET_BEGINNING)
            for t in consumed
            for p in range(topics[t])
        }
        counted, complete = _count_after(settings, starts, deadline)
        unfinished = [tp for tp in starts if tp not in complete]
        high = _high(settings, unfinished) if unfinished else {}
        lags = [
            partition_lag(
                t,
                p,
                committed=offsets.get((t, p)),
                high=high.get((t, p)),
                counted=counted[(t, p)],
                complete=(t, p) in complete,
            )
            for (t, p) in sorted(starts)
        ]
        state, members = described.get(group, ("unknown", []))
        statuses.append(GroupStatus(group, state, members, topic_lags(lags)))
    return statuses


# ---- status: dead letters and alerts ----------------------------------------------


def _dlq(settings: Settings, topics: Mapping[str, int], timeout: float) -> list[DlqCount]:
    from bus.dlq_cli import read_topics

    rows = dlq_counts(DATASETS.values(), topics, {})
    present = [r.topic for r in rows if r.topic in topics]
    counted = Counter(msg.topic() or "" for msg in read_topics(settings, present, timeout=timeout))
    return dlq_counts(DATASETS.values(), topics, counted)


def _alerts(settings: Settings, timeout: float) -> tuple[str, list[OpenAlert]]:
    """(where the alerts came from, the open ones)."""
    if settings.redis.url is not None:
        import redis

        from sinks.ioc_alerts import OPEN_ALERTS_KEY

        client = redis.Redis.from_url(settings.redis.url, socket_timeout=timeout)
        try:
            return "ioc-store", open_alerts_from_store(client.hgetall(OPEN_ALERTS_KEY))
        except redis.RedisError as exc:
            _notes.print(
                f"[yellow]the IOC store does not answer ({type(exc).__name__}); "
                "reading alerts.v1 instead[/]"
            )
        finally:
            client.close()
    if settings.schema_registry.url is None:
        return "unavailable", []
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from bus.reconcile import read_from_start
    from schemas.catalog import ALERTS_TOPIC
    from schemas.codec import AvroDeserializer

    decode = AvroDeserializer(SchemaRegistryClient(settings.schema_registry.client_config()))
    records = (decode(m.value()) for m in read_from_start(settings, ALERTS_TOPIC, timeout))
    return ALERTS_TOPIC, open_alerts_from_records(records)


def _render_status(
    groups: list[GroupStatus], dlq: list[DlqCount], source: str, alerts: list[OpenAlert]
) -> None:
    table = Table(title="processes and lag (records not yet consumed)", title_justify="left")
    for col in ("group", "state", "processes", "topic", "lag"):
        table.add_column(col, justify="right" if col in ("processes", "lag") else "left")
    for g in groups:
        first = True
        rows: list[TopicLag | None] = [*g.topics] or [None]
        for t in rows:
            lag = "—" if t is None else f"{t.lag}{'' if t.exact else '+'}"
            table.add_row(
                g.group if first else "",
                g.state if first else "",
                str(len(g.members)) if first else "",
                "—" if t is None else t.topic,
                lag,
            )
            first = False
    console.print(table if groups else "[yellow]no consumer group of the bus is running[/]")
    if any(not t.exact for g in groups for t in g.topics):
        console.print("[dim]+ : counting did not finish in time; at least this many[/]")
    members = Table(title="processes", title_justify="left")
    for col in ("group", "member", "host", "partitions"):
        members.add_column(col, justify="right" if col == "partitions" else "left")
    for g in groups:
        for m in g.members:
            members.add_row(g.group, m.member_id, m.host or "—", str(m.partitions or "—"))
    if members.row_count:
        console.print(members)
    letters = [d for d in dlq if d.count]
    total = sum(d.count for d in dlq)
    if letters:
        dl = Table(title=f"dead letters: {total}", title_justify="left")
        for col in ("from", "topic", "records"):
            dl.add_column(col, justify="right" if col == "records" else "left")
        for d in letters:
            dl.add_row(d.source, d.topic, str(d.count))
        console.print(dl)
        console.print("[dim]details: databus dlq list --dataset <id>[/]")
    else:
        console.print(f"[green]✓[/] no dead letters in the {len(dlq)} DLQ topics")
    if source == "unavailable":
        console.print(
            "[yellow]open alerts unknown[/]: neither DATABUS_REDIS__URL nor "
            "DATABUS_SCHEMA_REGISTRY__URL is set"
        )
    elif alerts:
        at = Table(title=f"open alerts: {len(alerts)} (from {source})", title_justify="left")
        for col in ("severity", "rule", "dataset", "subject", "value", "since (local)"):
            at.add_column(col, justify="right" if col == "value" else "left")
        for a in alerts:
            colour = "red" if a.severity == "CRITICAL" else "yellow"
            since = a.since.astimezone(_LOCAL).strftime("%Y-%m-%d %H:%M") if a.since else "—"
            at.add_row(
                f"[{colour}]{a.severity}[/]",
                a.rule,
                a.dataset,
                escape(a.subject),
                f"{a.value:g}",
                since,
            )
        console.print(at)
    else:
        console.print(f"[green]✓[/] no open alerts (from {source})")


@ops_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds each part may take (counting, reading)")
    ] = 30,
) -> None:
    """The bus at a glance: processes, lag, dead letters, open alerts.

    Per consumer group its members (processes) and the records it has not consumed
    yet; dead letters per dataset and sink; open alerts (the IOC store's, else the
    latest state of each alert on alerts.v1)."""
    settings = _settings()
    topics = _topics(settings, min(timeout, 15))
    try:
        groups = _group_statuses(settings, topics, timeout)
        dlq = _dlq(settings, topics, timeout)
        source, alerts = _alerts(settings, timeout)
    except DatabusError as exc:
        _fail(str(exc), 3 if exc.retriable else 2)
    if as_json:
        doc = status_document(groups, dlq, alerts, alerts_from=source, at=datetime.now(UTC))
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    _render_status(groups, dlq, source, alerts)


# ---- tail -------------------------------------------------------------------------


def _decoder(settings: Settings) -> Callable[[bytes | None], Any | None]:
    """Value -> decoded (Avro through the registry, else JSON), None if neither."""
    from bus.errors import CodecError
    from bus.tail import decode_json_value

    avro: Callable[[bytes | None], Any] | None = None
    if settings.schema_registry.url is not None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        from schemas.codec import AvroDeserializer

        avro = AvroDeserializer(SchemaRegistryClient(settings.schema_registry.client_config()))

    def decode(value: bytes | None) -> Any | None:
        if avro is not None and value and value[0] == 0:
            try:
                return avro(value)
            except CodecError:
                return None
        return decode_json_value(value)

    return decode


@ops_app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read, e.g. publicservice.dossiers.std.v1")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many")] = None,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Wait for new records at the end")
    ] = True,
    as_table: Annotated[bool, typer.Option("--table", help="A table, not JSON lines")] = False,
) -> None:
    """Print a topic's records decoded, personal fields masked.

    JSON lines by default (--table for a table). A catalog topic is masked with its
    dataset's personal fields; any other topic has every field named like personal
    data masked. Ctrl-C stops."""
    from bus.tail import masking_for, tail_record

    settings = _settings()
    topics = _topics(settings, 15)
    if topic not in topics:
        _fail(f"no topic {topic!r} on the broker; `databus topics create` makes the bus's", 2)
    masking = masking_for(topic, DATASETS.values())
    catalog_names = {f for ds in DATASETS.values() for f in ds.personal_fields}
    if masking.dataset is None:
        # On stderr: stdout stays pure JSON lines for scripts.
        _notes.print(
            f"[dim]{escape(topic)} is not a catalog topic: every field named like personal "
            "data is masked[/]"
        )
    decode = _decoder(settings)
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"databus-tail-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
        }
    )
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    parts = {(topic, p) for p in range(topics[topic])}
    stop = stop_on_signals()
    shown = 0
    try:
        consumer.assign([TopicPartition(t, p, start) for t, p in parts])
        eof: set[tuple[str, int]] = set()
        last = time.monotonic()
        while not stop.is_set():
            batch = []
            for msg in consumer.consume(500, 0.2):
                err = msg.error()
                where = (msg.topic() or "", msg.partition() or 0)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(where)
                        continue
                    _fail(f"reading {topic}: {err.str()}", 3 if err.retriable() else 2)
                eof.discard(where)
                last = time.monotonic()
                ts_type, ts_ms = msg.timestamp()
                batch.append(
                    tail_record(
                        masking,
                        partition=where[1],
                        offset=msg.offset() or 0,
                        timestamp_ms=ts_ms if ts_type else None,
                        key=msg.key(),
                        headers=list(msg.headers() or []),  # type: ignore[arg-type]
                        decoded=decode(msg.value()),
                        raw_value=msg.value(),
                        catalog_names=catalog_names,
                    )
                )
                if limit is not None and shown + len(batch) >= limit:
                    break
            if batch:
                shown += len(batch)
                _print_tail(batch, as_table)
            if limit is not None and shown >= limit:
                break
            if not follow and eof >= parts and time.monotonic() - last >= _IDLE_S:
                break
    except DatabusError as exc:  # the registry does not answer
        _fail(f"decoding {topic}: {exc}", 3 if exc.retriable else 2)
    finally:
        consumer.close()
    if as_table:
        console.print(f"{shown} record(s) of {escape(topic)}")


def _print_tail(batch: list[Any], as_table: bool) -> None:
    from bus.tail import render_line

    if not as_table:
        for rec in batch:
            print(render_line(rec), flush=True)
        return
    table = Table(show_lines=False)
    for col in ("partition", "offset", "time (UTC)", "key", "value"):
        table.add_column(col, justify="right" if col in ("partition", "offset") else "left")
    for rec in batch:
        value = rec.note or json.dumps(rec.value, ensure_ascii=False, default=str)
        table.add_row(
            str(rec.partition),
            str(rec.offset),
            rec.timestamp.strftime("%Y-%m-%d %H:%M:%S") if rec.timestamp else "—",
            escape(rec.key or "—"),
            escape(value[:400]),
        )
    console.print(table)


# ---- backfill ---------------------------------------------------------------------


def _as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--as-of {text!r}: expected an ISO time, e.g. 2025-07-01 or 2025-07-01T17:00", 2)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_LOCAL)


@ops_app.command()
def backfill(
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines (.jsonl) or Excel (.xlsx)")],
    dataset: Annotated[str, typer.Option("--dataset", help="Catalog dataset id")],
    time_field: Annotated[
        list[str] | None,
        typer.Option(
            "--time-field",
            help="Field holding when the row's change happened (repeat: the newest set one wins)",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="Event time of rows without one (ISO; local time if no offset)"),
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="Reject file (default: <file>.rejects.csv)")
    ] = None,
) -> None:
    """Publish history a unit never sent (a file), marked as backfill.

    Like `databus publish`, but each event carries `databus.backfill: 1` (it raises
    and resolves no alert) and its own event time (so the delivery ledger counts old
    data as late). Exit 1 on rejected rows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from producers.backfill import BackfillPublisher, publish_backfill
    from producers.file_checks import row_check_for
    from producers.file_drop import read_rows
    from schemas.catalog import get_dataset

    fields = list(time_field or [])
    fallback = _as_of(as_of)
    if not fields and fallback is None:
        _fail(
            "a backfill needs each row's event time: name the field(s) holding it with "
            "--time-field (e.g. --time-field completed_at --time-field received_at), "
            "and/or give --as-of for rows without one",
            2,
        )
    settings = _settings()
    if not settings.schema_registry.url:
        _fail("DATABUS_SCHEMA_REGISTRY__URL must be set to publish a file", 2)
    try:
        ds = get_dataset(dataset)
        unknown = [f for f in fields if f not in ds.model.model_fields]
        if unknown:
            raise ConfigError(
                f"--time-field: {ds.id} has no field(s) {', '.join(unknown)}; "
                f"its fields: {', '.join(ds.model.model_fields)}"
            )
        total = sum(1 for _ in read_rows(file, ds.model))
        with (
            BackfillPublisher(settings, source_system="backfill") as publisher,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as progress,
        ):
            task = progress.add_task(f"backfilling {file.name}", total=total)
            result = publish_backfill(
                publisher,
                ds,
                file,
                time_fields=fields,
                as_of=fallback,
                check=row_check_for(ds),
                reject_path=rejects,
                on_row=lambda: progress.advance(task),
            )
    except (DatabusError, OSError, ValueError) as exc:
        _fail(str(exc), 2)
    console.print(
        f"{result.published} of {result.rows} rows published to {ds.raw_topic} as backfill"
    )
    if result.rejects:
        console.print(
            f"[yellow]{len(result.rejects)} rows rejected[/] — see {result.reject_path} "
            "(line, field and reason for each); fix them and submit that file again."
        )
        raise typer.Exit(1)
