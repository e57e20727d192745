"""The live terminal summary of `databus up`: pipeline figures and per-unit KPIs.

Figures come from the processes' own ``/metrics`` endpoints and the KPIs are
read back from the IOC store, so what is shown is what the bus really did.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table

from sinks.dossier_kpis import UnitKpis
from sinks.ioc_store import read_unit_kpis

__all__ = ["Figures", "kpi_table", "render", "scrape"]


def scrape(ports: Iterable[int], host: str = "127.0.0.1") -> dict[str, float]:
    """Sum every sample by ``name{label=value,...}`` and by bare name across processes."""
    totals: dict[str, float] = defaultdict(float)
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=1) as resp:
                text = resp.read().decode()
        except OSError:
            continue  # the process is still starting, or gone: show what we have
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                totals[f"{sample.name}{{{labels}}}"] += sample.value
                totals[sample.name] += sample.value
    return dict(totals)


@dataclass
class Figures:
    """Counters between two scrapes, to show rates."""

    started: float = field(default_factory=time.monotonic)
    last: dict[str, float] = field(default_factory=dict)
    last_at: float = field(default_factory=time.monotonic)
    rate_in: float = 0.0

    def update(self, now_totals: dict[str, float]) -> None:
        now = time.monotonic()
        published = now_totals.get(
            "databus_events_produced_total{dataset=publicservice.dossiers,stage=raw}", 0.0
        )
        before = self.last.get(
            "databus_events_produced_total{dataset=publicservice.dossiers,stage=raw}", 0.0
        )
        if now > self.last_at:
            self.rate_in = max(0.0, published - before) / (now - self.last_at)
        self.last, self.last_at = now_totals, now


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def kpi_table(kpis: Sequence[UnitKpis], title: str = "Per-unit dossier KPIs (IOC store)") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("unit", no_wrap=True)
    for col in ("recv", "done", "on time", "late", "overdue now", "overdue %", "on-time %"):
        table.add_column(col, justify="right")
    for k in sorted(kpis, key=lambda k: (-(k.overdue_rate or 0), k.unit_code)):
        rate = _pct(k.overdue_rate)
        if k.overdue_rate is not None and k.overdue_rate > 0.3:
            rate = f"[bold red]{rate}[/]"
        table.add_row(
            k.unit_code,
            str(k.received),
            str(k.completed),
            str(k.completed_on_time),
            str(k.completed_late),
            str(k.open_overdue),
            rate,
            _pct(k.on_time_rate),
        )
    return table


def _reasons(totals: dict[str, float]) -> str:
    prefix = "databus_events_dead_lettered_total{"
    parts = []
    for key, value in sorted(totals.items()):
        if key.startswith(prefix) and value:
            labels = dict(p.split("=", 1) for p in key[len(prefix) : -1].split(","))
            parts.append(f"{labels.get('reason', '?')}: {int(value)}")
    return ", ".join(parts) or "none"


def render(
    figures: Figures, totals: dict[str, float], client: redis.Redis, elapsed: float
) -> Group:
    def total(name: str) -> int:
        return int(totals.get(name, 0))

    pipeline = Table(title=f"databus — running for {elapsed:,.0f} s", title_justify="left")
    pipeline.add_column("figure")
    pipeline.add_column("value", justify="right")
    pipeline.add_row("events in (per second)", f"{figures.rate_in:,.0f}")
    pipeline.add_row(
        "events published",
        f"{total('databus_events_produced_total{dataset=publicservice.dossiers,stage=raw}'):,}",
    )
    pipeline.add_row(
        "events standardized",
        f"{total('databus_events_produced_total{dataset=publicservice.dossiers,stage=std}'):,}",
    )
    pipeline.add_row(
        "events dead-lettered",
        f"{total('databus_events_dead_lettered_total'):,}  ({_reasons(totals)})",
    )
    pipeline.add_row(
        "alerts raised",
        f"{total('databus_alerts_total{rule=dossier_overdue_rate,state=RAISED}'):,}",
    )
    pipeline.add_row(
        "alerts resolved",
        f"{total('databus_alerts_total{rule=dossier_overdue_rate,state=RESOLVED}'):,}",
    )
    pipeline.add_row(
        "records written to the IOC store", f"{total('databus_sink_records_written_total'):,}"
    )
    try:
        kpis = read_unit_kpis(client, datetime.now(UTC))
    except redis.RedisError as exc:
        return Group(pipeline, f"[red]IOC store unreachable: {exc}[/]")
    return Group(pipeline, kpi_table(kpis))
