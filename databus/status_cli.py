"""``databus status``: the bus at a glance — consumer groups with their members (the
processes) and lag, dead letters per topic, open alerts. Plain tables, or ``--json``.

The computations are pure and tested on their own (``databus.ops_status``); counts come
from reading the topics, not from high watermarks: the embedded broker's are
approximate (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from confluent_kafka import (
    OFFSET_BEGINNING,
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

from bus.errors import DatabusError
from bus.kafka_client import aiokafka_options
from bus.settings import Settings
from databus.cli_common import broker_settings_or_exit as _settings
from databus.cli_common import broker_topics as _topics
from databus.cli_common import console, exit_code_for
from databus.cli_common import fail as _fail
from databus.ops_status import (
    DlqCount,
    GroupStatus,
    Member,
    OpenAlert,
    dlq_counts,
    is_reader_group,
    lag_rows,
    open_alerts_from_records,
    open_alerts_from_store,
    partition_lag,
    shown_groups,
    status_document,
    topic_lags,
)
from schemas.catalog import DATASETS

__all__ = ["status_app"]

status_app = typer.Typer(no_args_is_help=True, help="The bus at a glance.")
# Warnings and notes: stderr, so that --json stays parseable.
_notes = Console(stderr=True)
_LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
_IDLE_S = 0.3  # nothing arrived for this long after every partition's end: done


# ---- status: groups and lag -------------------------------------------------------


def _state(value: object) -> str:
    name = getattr(value, "name", None)
    return str(name if name is not None else value).lower()


def _aio_members(settings: Settings, groups: list[str], timeout: float) -> dict[str, list[Member]]:
    """Members as aiokafka's DescribeGroups reads them. librdkafka drops the members
    the embedded broker describes with an empty assignment; aiokafka keeps them."""
    from aiokafka.admin import AIOKafkaAdminClient

    kafka = settings.kafka
    options = aiokafka_options(kafka)  # the same TLS and SASL as every other client

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
        _fail(f"listing consumer groups: {exc.args[0]}", exit_code_for(exc, 2))
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
    from databus.dlq_replay import read_topics

    rows = dlq_counts(DATASETS.values(), topics, {})
    present = [r.topic for r in rows if r.topic in topics]
    counted = Counter(msg.topic() or "" for msg in read_topics(settings, present, timeout=timeout))
    return dlq_counts(DATASETS.values(), topics, counted)


def _alerts(settings: Settings, timeout: float) -> tuple[str, list[OpenAlert]]:
    """(where the alerts came from, the open ones)."""
    if settings.redis.url is not None:
        import redis

        from sinks.ioc import OPEN_ALERTS_KEY

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

    from databus.reconcile import read_from_start
    from schemas.catalog import ALERTS_TOPIC
    from schemas.codec import AvroDeserializer

    decode = AvroDeserializer(SchemaRegistryClient(settings.schema_registry.client_config()))
    records = (decode(m.value()) for m in read_from_start(settings, ALERTS_TOPIC, timeout))
    return ALERTS_TOPIC, open_alerts_from_records(records)


def _render_status(
    groups: list[GroupStatus],
    dlq: list[DlqCount],
    source: str,
    alerts: list[OpenAlert],
    every_topic: bool = False,
) -> None:
    table = Table(title="processes and lag (records not yet consumed)", title_justify="left")
    for col in ("group", "state", "processes", "topic", "lag"):
        table.add_column(
            col, justify="right" if col in ("processes", "lag") else "left", overflow="fold"
        )
    for row in lag_rows(groups, every_topic):
        table.add_row(*row)
    console.print(table if groups else "[yellow]no consumer group of the bus is running[/]")
    if any(not t.exact for g in groups for t in g.topics):
        console.print("[dim]+ : counting did not finish in time; at least this many[/]")
    members = Table(title="processes", title_justify="left")
    for col in ("group", "member", "host", "partitions"):
        members.add_column(col, justify="right" if col == "partitions" else "left", overflow="fold")
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
            dl.add_column(col, justify="right" if col == "records" else "left", overflow="fold")
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
            at.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
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


@status_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
    every_topic: Annotated[
        bool,
        typer.Option("--all-topics", help="List every topic a group reads, those at lag 0 too"),
    ] = False,
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
    _render_status(groups, dlq, source, alerts, every_topic)


# ---- tail -------------------------------------------------------------------------
