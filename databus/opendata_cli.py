"""``databus opendata export``: public datasets to CSV, Parquet and DCAT-AP, once or on a
schedule, from the shared repository."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bus.errors import DatabusError
from databus.cli_common import (
    audit_log,
    console,
    err_console,
    exit_code_for,
    fail,
    settings_or_exit,
    stop_on_signals,
)

__all__ = ["opendata_app"]

opendata_app = typer.Typer(no_args_is_help=True, help="Open-data exports for the portal.")
log = logging.getLogger("databus")


def _report_table(report: object) -> Table:
    from sinks.open_data import ExportReport

    assert isinstance(report, ExportReport)
    table = Table(
        title=f"Open data in {report.out_dir} at {report.exported_at:%Y-%m-%d %H:%M} UTC",
        title_justify="left",
    )
    for col in ("dataset", "rows", "columns", "personal dropped", "cells suppressed", "files"):
        table.add_column(
            col, justify="left" if col in ("dataset", "files") else "right", overflow="fold"
        )
    for d in report.datasets:
        table.add_row(
            d.dataset_id,
            f"{d.rows:,}",
            str(len(d.columns)),
            str(len(d.dropped)),
            (
                f"{d.suppressed_cells}/{d.aggregate_cells} by {d.aggregate_level}"
                if d.aggregate_cells
                else "—"
            ),
            ", ".join(f.name for f in d.files),
        )
    for skipped in report.skipped:
        table.add_row(f"[yellow]{skipped}[/]", "—", "", "", "", "not in the repository yet")
    return table


@opendata_app.command("export")
def export(
    every: Annotated[
        float | None,
        typer.Option(min=1, help="Export again every this many seconds (default: once)"),
    ] = None,
    scheduled: Annotated[
        bool, typer.Option(help="Export on DATABUS_OPEN_DATA__INTERVAL_S's schedule (1 day)")
    ] = False,
) -> None:
    """Export the public datasets (CSV, Parquet, DCAT-AP JSON-LD) from the shared repository."""
    from sinks.open_data import ExportReport, export_from_settings, run_schedule

    settings = settings_or_exit()
    if scheduled and every is None:
        every = settings.open_data.interval_s

    audit = audit_log(settings)
    if settings.open_data.base_uri_is_placeholder:
        # The embedded run may keep it; a portal must not publish links that lead nowhere.
        console.print(
            f"[yellow]DATABUS_OPEN_DATA__BASE_URI is the placeholder "
            f"{escape(settings.open_data.base_uri)}: the catalogue's download URLs and "
            "identifiers lead nowhere until it names where the portal serves the files[/]"
        )
        log.warning("open data: DATABUS_OPEN_DATA__BASE_URI is still the .invalid placeholder")

    def job() -> ExportReport:
        with console.status("exporting public datasets from the shared repository …"):
            report = export_from_settings(settings, now=datetime.now(UTC))
        # Every export is on the audit log: what left for the portal, and its checksums.
        audit.append(
            actor="databus-opendata",
            action="opendata.export",
            object=str(report.out_dir),
            outcome="exported",
            detail={
                "datasets": {d.dataset_id: d.rows for d in report.datasets},
                "files": {f.name: f.sha256 for f in report.files},
            },
        )
        return report

    def show(report: ExportReport) -> None:
        console.print(_report_table(report))
        console.print(f"catalog: {report.catalog.name} ({report.catalog.byte_size:,} bytes)")

    if every is None:
        try:
            show(job())
        except DatabusError as exc:
            fail(f"{exc}\nIs DATABUS_SHARED_REPO__URL right?", exit_code_for(exc, 1))
        return

    def failed(exc: Exception) -> None:
        err_console.print(
            f"[red]export failed: {escape(str(exc))}[/]; trying again in {every:.0f} s"
        )

    # A scheduled export is a long-running process: /metrics, /livez and /readyz like
    # every other one, ready while its own destination's source (the repository) answers.
    from bus.health_checks import sql_check
    from bus.metrics import Metrics, serve_metrics
    from sinks.shared_repo import repo_engine_from_settings

    metrics = Metrics()
    engine = repo_engine_from_settings(settings)
    metrics.readiness.add("shared_repo", sql_check(engine))
    serve_metrics(metrics, settings.metrics.host, settings.metrics.port)
    try:
        run_schedule(job, interval_s=every, stop=stop_on_signals(), on_result=show, on_error=failed)
    finally:
        engine.dispose()
