"""``databus dlq``: look at dead letters and send them back once their cause is fixed.

databus dlq list   [--dataset ID] [--limit N] [--json]
databus dlq show   --dataset ID --offset N [--partition P]
databus dlq replay --dataset ID [--reason R] [--stage S] [--offset N ...] [--partition P]
                   [--dry-run] [--force]

Exit codes: 0 done (also: nothing to replay); 1 ``show`` found no such letter, or
``replay`` could not deliver or record some letters (run it again); 2 bad usage or
settings; 3 the broker or the registry cannot be reached (retriable: try again later).

How letters are read, chosen, sent back and recorded on ``control.dlq_replays.v1``
is ``databus/dlq_replay.py``; this module is the command line over it (arguments,
tables, messages, exit codes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bus.errors import ConfigError, DatabusError
from bus.settings import Settings
from databus.cli_common import broker_settings_or_exit as _settings
from databus.cli_common import console, exit_code_for, row_progress
from databus.cli_common import fail as _fail
from databus.dlq_inspect import (
    DeadLetterView,
    framing_hint,
    latest,
    mask_personal,
    next_step,
    summarize,
)
from databus.dlq_replay import (
    Letter,
    ReplayOutcome,
    choose_letters,
    plan_replay,
    read_letters,
    replayed,
    send_letters,
)
from schemas.catalog import DATASETS, Dataset, get_dataset
from schemas.dead_letters import REPLAYS_TOPIC

__all__ = ["dlq_app"]

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, show, replay.")


# ---- errors and settings ----------------------------------------------------


def _exit_code(exc: DatabusError) -> int:
    return exit_code_for(exc, 3 if exc.retriable else 1)


def _dataset(dataset_id: str) -> Dataset:
    try:
        return get_dataset(dataset_id)
    except ConfigError as exc:
        _fail(f"{exc}\nSee `databus catalog list`.", 2)


# ---- list ---------------------------------------------------------------------


def _message(v: DeadLetterView) -> str:
    if v.message_vi and v.message_vi != v.message:
        return f"{v.message}\n[dim]{escape(v.message_vi)}[/]"
    return v.message


def _when(v: DeadLetterView) -> str:
    return "—" if v.timestamp is None else v.timestamp.strftime("%Y-%m-%d %H:%M:%S")


@dlq_app.command("list")
def listread_letters(
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
        letters = [lt.view for lt in read_letters(settings, datasets)]
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


def _decoded(settings: Settings, ds: Dataset, letter: Letter) -> None:
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
    try:
        with SchemaRegistryClient(settings.schema_registry.client_config()) as registry:
            record = AvroDeserializer(registry)(letter.value)
    except CodecError as exc:
        console.print(
            f"[red]cannot decode the value[/]: {exc.reason}: {escape(str(exc))}\n"
            f"  {framing_hint(letter.value)}"
        )
        return
    masked = mask_personal(record, ds.personal_fields)
    console.print_json(json.dumps(masked, ensure_ascii=False, default=str))


def _newest(dataset: str | None, last: int) -> None:
    """The ``last`` newest dead letters (of one dataset, or of all), newest first."""
    settings = _settings()
    datasets = [_dataset(dataset)] if dataset else sorted(DATASETS.values(), key=lambda d: d.id)
    try:
        newest = latest((lt.view for lt in read_letters(settings, datasets)), last)
    except DatabusError as exc:
        _fail(str(exc), _exit_code(exc))
    where = datasets[0].dlq_topic if dataset else f"the {len(datasets)} DLQ topics"
    if not newest:
        console.print(f"[green]✓[/] no dead letters in {where}")
        return
    console.print(f"[bold]newest {len(newest)} dead letters in {where}[/]")
    # one plain line per letter: what is copied into `dlq show` / `dlq replay` (dataset,
    # partition, offset, reason) is never cut; the message is cut to the width
    for v in newest:
        console.print(
            f"{v.dataset}  --partition {v.dlq_partition} --offset {v.dlq_offset}  "
            f"{_when(v)}  [bold]{escape(v.reason)}[/]",
            soft_wrap=True,
            highlight=False,
        )
        console.print(
            f"    {escape(' '.join(v.message.split()))}",
            no_wrap=True,
            overflow="ellipsis",
            highlight=False,
        )
    console.print("One in full: databus dlq show --dataset <id> --partition <p> --offset <n>")


@dlq_app.command("show")
def show(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Catalog dataset id (default: all)")
    ] = None,
    offset: Annotated[
        int | None,
        typer.Option(min=0, help="Offset in the DLQ topic (default: list the newest letters)"),
    ] = None,
    partition: Annotated[
        int | None, typer.Option(min=0, help="Partition of the DLQ topic (when ambiguous)")
    ] = None,
    last: Annotated[
        int, typer.Option(min=1, help="Without --offset: how many of the newest letters")
    ] = 20,
) -> None:
    """One dead letter in full: headers, the record (personal fields masked), next step.

    Without --offset: the newest dead letters (the last 20), to pick one from."""
    if offset is None:
        _newest(dataset, last)
        return
    if dataset is None:
        _fail("--offset needs --dataset (offsets are per DLQ topic)", 2)
    settings = _settings()
    ds = _dataset(dataset)
    try:
        found = [
            lt
            for lt in read_letters(
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


def _summary(
    chosen: Sequence[Letter],
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
    try:
        chosen, missing = choose_letters(
            read_letters(settings, [ds]),
            reason=reason,
            stage=stage,
            offsets=offset or (),
            partition=partition,
        )
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
        plan = plan_replay(chosen, set() if force else replayed(settings))
        if plan.bytesless:
            console.print(
                f"[yellow]{len(plan.bytesless)} selected letter(s) were kept without their "
                "bytes[/] (the record was too large; only its size and SHA-256 are on the "
                "DLQ): nothing to send — the source system must send a smaller record again."
            )
        if plan.broken:
            console.print(
                f"[yellow]{plan.broken} selected letter(s) have broken bytes[/] (a decode "
                "reason): the processor will dead-letter them again; filter with --reason to "
                "leave them."
            )
        if dry_run:
            console.print(_summary(plan.chosen, plan.skipped, set(), set(), dry_run=True))
            for lt in plan.todo:
                console.print(
                    f"  would send {lt.view.letter_id} (event {lt.view.event_id or '?'}) "
                    f"→ {ds.raw_topic}"
                )
            console.print("dry run: nothing was sent")
            return
        outcome = ReplayOutcome()
        if plan.todo:
            with row_progress(f"replaying to {ds.raw_topic}", len(plan.todo)) as advance:
                outcome = send_letters(settings, ds, plan.todo, on_delivery=advance)
    except DatabusError as exc:
        _fail(str(exc), _exit_code(exc))
    skipped = plan.skipped
    sent, failed, unrecorded = outcome.sent, outcome.failed, outcome.unrecorded
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
