"""``databus catalog …``: the dataset catalog, and the delivery ledger against it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bus.errors import DatabusError
from databus.cli_common import (
    broker_or_exit,
    console,
    exit_code_for,
    fail,
    settings_or_exit,
)

__all__ = ["catalog_app"]

catalog_app = typer.Typer(no_args_is_help=True, help="The dataset catalog.")


@catalog_app.command("validate")
def catalog_validate(
    file: Annotated[
        Path | None, typer.Option(help="Catalog file (default: the shipped one)")
    ] = None,
) -> None:
    """Check the catalog: schemas parse, keys and personal fields exist, topic names,
    schema history is BACKWARD_TRANSITIVE."""
    from schemas.catalog import CATALOG_FILE, read_catalog
    from schemas.catalog_check import validate_catalog

    path = file or CATALOG_FILE
    try:
        datasets = read_catalog(path)
    except DatabusError as exc:
        fail(str(exc), exit_code_for(exc, 1))
    problems = validate_catalog(datasets)
    for problem in problems:
        console.print(f"[red]✗[/] {escape(str(problem))}")  # the report: stdout
    if problems:
        console.print(f"{len(problems)} problem(s) in {path}; fix them and run this again.")
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {len(datasets)} datasets in {path} are valid")


@catalog_app.command("list")
def catalog_list() -> None:
    """The datasets, their owner units, classification and update obligation."""
    from schemas.catalog import DATASETS

    table = Table(title="Dataset catalog", title_justify="left")
    for col in ("dataset", "owner unit", "class", "update", "key", "personal fields"):
        table.add_column(col, overflow="fold")
    for ds in sorted(DATASETS.values(), key=lambda d: d.id):
        table.add_row(
            ds.id,
            ds.owner_unit,
            ds.classification,
            ds.update.describe(),
            ", ".join(ds.key_fields),
            str(len(ds.personal_fields)),
        )
    console.print(table)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


@catalog_app.command("status")
def catalog_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    days: Annotated[
        int, typer.Option(min=0, help="Reconcile declarations over this many local days (0: skip)")
    ] = 1,
    datasets: Annotated[
        bool, typer.Option("--datasets", help="Also list every dataset under its unit")
    ] = False,
) -> None:
    """The delivery ledger: per owner unit, datasets assigned, delivering and live,
    quality, and declared vs received."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from databus.ledger import read_quality_rows
    from databus.reconcile import count_topics
    from schemas.catalog import DATASETS
    from schemas.codec import AvroDeserializer
    from schemas.domain.delivery import ReconRow, build_ledger, local_day, reconcile
    from schemas.domain.reference import load_reference

    settings = settings_or_exit()
    broker_or_exit(settings)
    now = datetime.now(UTC)
    try:
        with SchemaRegistryClient(settings.schema_registry.client_config()) as registry:
            rows = read_quality_rows(settings, AvroDeserializer(registry))
        recon: list[ReconRow] = []
        if days:
            last: date = local_day(now)
            counts = count_topics(settings, sorted(DATASETS), last - timedelta(days=days - 1), last)
            recon = reconcile(counts.declared, counts.received, counts.dead_lettered)
    except DatabusError as exc:
        fail(f"{exc}\nIs the bus running? (`make run` starts it.)", exit_code_for(exc, 2))
    names = {u.code: u.name for u in load_reference().receiving_units.values()}
    ledger = build_ledger(DATASETS.values(), rows, now, recon=recon, unit_names=names)
    if as_json:
        doc = {"at": now.isoformat(), "days": days, "units": [u.as_json() for u in ledger]}
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"Delivery ledger at {now:%Y-%m-%d %H:%M} UTC", title_justify="left")
    table.add_column("owner unit", overflow="fold")
    for col in (
        "assigned",
        "delivering",
        "live",
        "late",
        "quality",
        "declared",
        "received",
        "missing",
    ):
        table.add_column(col, justify="right", overflow="fold")
    for u in ledger:
        table.add_row(
            f"{escape(u.name)} ({u.unit})",
            str(u.assigned),
            f"[{'green' if u.delivering == u.assigned else 'red'}]{u.delivering}[/]",
            f"[{'green' if u.live == u.assigned else 'yellow'}]{u.live}[/]",
            str(u.late),
            _pct(u.quality),
            "—" if u.declared is None else f"{u.declared:,}",
            f"{u.received:,}",
            f"[{'red' if u.missing else 'green'}]{u.missing:,}[/]",
        )
        if datasets:
            for d in u.datasets:
                state = d.state
                table.add_row(
                    f"  [dim]{d.dataset}[/] {state}", "", "", "", "", _pct(d.quality), "", "", ""
                )
    console.print(table)
    for u in ledger:
        console.print(f"  {escape(u.summary())}")
    total = sum(u.assigned for u in ledger)
    delivering = sum(u.delivering for u in ledger)
    console.print(f"{delivering} of {total} datasets delivered, {sum(u.live for u in ledger)} live")
