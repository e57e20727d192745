"""Operator commands: the bus at a glance, its topics, a topic's records, history.

databus topics create [--dry-run]
databus status [--json] [--timeout S]
databus tail TOPIC [--from-beginning] [--limit N] [--follow/--no-follow] [--table]
databus backfill FILE --dataset ID (--time-field F ... | --as-of TIME) [--rejects PATH]

Exit codes: 0 done; 1 ``backfill`` refused some rows (see the reject file); 2 bad usage
or settings, or the broker cannot be reached; 3 the registry or the IOC store failed
mid-way (retriable: try again).

The computations are pure and tested on their own: ``databus.ops_status`` (lag, dead-letter
counts, open alerts), ``databus.tail`` (decoding and masking), ``producers.backfill``.
Counts come from reading the topics, not from high watermarks: the embedded broker's
are approximate (docs/architecture.md).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bus.errors import ConfigError, DatabusError
from bus.kafka_client import is_broker_failure
from bus.settings import Settings
from databus.cli_common import broker_settings_or_exit as _settings
from databus.cli_common import broker_topics as _topics
from databus.cli_common import console, exit_code_for, row_progress, stop_on_signals
from databus.cli_common import fail as _fail
from schemas.catalog import DATASETS

__all__ = ["ops_app", "topics_app"]

ops_app = typer.Typer(no_args_is_help=True, help="Operator commands.")
topics_app = typer.Typer(no_args_is_help=True, help="The bus's topics.")

_LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
# Warnings and notes: stderr, so that --json and tail's JSON lines stay parseable.
_notes = Console(stderr=True)
_IDLE_S = 0.3  # nothing arrived for this long after every partition's end: done


# ---- settings and errors ----------------------------------------------------------


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
    from bus.topic_admin import ensure_topics
    from schemas.topics import bus_topics

    settings = _settings()
    specs = bus_topics(settings)
    existing = _topics(settings, timeout)
    created: set[str] = set()
    if not dry_run:
        try:
            created = set(ensure_topics(settings, specs, timeout))
        except (DatabusError, KafkaException) as exc:
            _fail(f"creating topics: {exc}", exit_code_for(exc, 2))
    title = "topics" + (" (dry run)" if dry_run else "")
    table = Table(title=title, title_justify="left")
    for col in ("topic", "partitions", "retention", "cleanup", "status"):
        table.add_column(col, justify="right" if col == "partitions" else "left", overflow="fold")
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


def _decoder(settings: Settings) -> Callable[[bytes | None], Any | None]:
    """Value -> decoded (Avro through the registry, else JSON), None if neither."""
    from bus.errors import CodecError
    from databus.tail import decode_json_value

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
    from databus.tail import masking_for, tail_record

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
                    _fail(
                        f"reading {topic}: {err.str()}",
                        3 if err.retriable() or is_broker_failure(err) else 2,
                    )
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
    from databus.tail import render_line

    if not as_table:
        for rec in batch:
            print(render_line(rec), flush=True)
        return
    table = Table(show_lines=False)
    for col in ("partition", "offset", "time (UTC)", "key", "value"):
        table.add_column(
            col, justify="right" if col in ("partition", "offset") else "left", overflow="fold"
        )
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

    from databus.file_checks import row_check_for
    from producers.backfill import BackfillPublisher, publish_backfill
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
            row_progress(f"backfilling {file.name}", total) as advance,
        ):
            result = publish_backfill(
                publisher,
                ds,
                file,
                time_fields=fields,
                as_of=fallback,
                check=row_check_for(ds),
                reject_path=rejects,
                on_row=advance,
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
