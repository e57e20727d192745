"""The live terminal summary of `databus up`: pipeline figures and per-unit KPIs.

Figures come from the processes' own ``/metrics`` endpoints and the KPIs are
read back from the IOC store, so what is shown is what the bus really did.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from sinks.ioc import UnitKpis, read_ledger, read_unit_kpis

__all__ = [
    "Figures",
    "dataset_table",
    "kpi_table",
    "ledger_table",
    "process_table",
    "render",
    "scrape",
    "sink_table",
]


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
    """Counters between scrapes, to show rates: events in per second over the last
    ``window_s`` (a slow live feed, a few events a minute, shows as such, not as 0)."""

    started: float = field(default_factory=time.monotonic)
    last: dict[str, float] = field(default_factory=dict)
    last_at: float = field(default_factory=time.monotonic)
    rate_in: float = 0.0
    window_s: float = 30.0
    _seen: deque[tuple[float, float]] = field(default_factory=deque)

    def update(self, now_totals: dict[str, float], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        published = _sum_by(now_totals, "databus_events_produced_total", "stage").get("raw", 0.0)
        self._seen.append((now, published))
        while len(self._seen) > 2 and now - self._seen[1][0] >= self.window_s:
            self._seen.popleft()
        first_at, first = self._seen[0]
        if now > first_at:
            self.rate_in = max(0.0, published - first) / (now - first_at)
        self.last, self.last_at = now_totals, now


def _per_second(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}"


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


def _samples(totals: dict[str, float], metric: str) -> Iterable[tuple[dict[str, str], float]]:
    """Each labelled sample of ``metric`` in a scrape, with its labels."""
    prefix = metric + "{"
    for key, value in totals.items():
        if key.startswith(prefix) and key.endswith("}") and len(key) > len(prefix) + 1:
            labels = dict(p.split("=", 1) for p in key[len(prefix) : -1].split(","))
            yield labels, value


def _sum_by(totals: dict[str, float], metric: str, label: str, **where: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in _samples(totals, metric):
        if all(labels.get(k) == v for k, v in where.items()):
            out[labels.get(label, "?")] += value
    return out


def _reasons(totals: dict[str, float], most: int = 6) -> str:
    """Dead letters by reason over every dataset, the commonest first."""
    by_reason = _sum_by(totals, "databus_events_dead_lettered_total", "reason")
    ranked = sorted(((v, r) for r, v in by_reason.items() if v), reverse=True)
    parts = [f"{reason}: {int(value)}" for value, reason in ranked[:most]]
    if len(ranked) > most:
        parts.append(f"{len(ranked) - most} more reasons")
    return ", ".join(parts) or "none"


def dataset_table(totals: dict[str, float]) -> Table:
    """Per dataset: published, standardized, dead-lettered, dropped, and how many of the
    delivering units are live against the catalog's update obligation."""
    produced = "databus_events_produced_total"
    published = _sum_by(totals, produced, "dataset", stage="raw")
    standardized = _sum_by(totals, produced, "dataset", stage="std")
    dead = _sum_by(totals, "databus_events_dead_lettered_total", "dataset")
    dropped = _sum_by(totals, "databus_events_dropped_total", "dataset")
    live = _sum_by(totals, "databus_dataset_live", "dataset")
    units: dict[str, int] = defaultdict(int)
    for labels, _value in _samples(totals, "databus_dataset_live"):
        units[labels.get("dataset", "?")] += 1
    table = Table(title="Per dataset (processor)", title_justify="left")
    table.add_column("dataset", no_wrap=True, min_width=31)
    for name in ("in", "std", "DLQ", "dup/stale", "live units"):
        table.add_column(name, justify="right")
    for ds in sorted(set(published) | set(standardized) | set(dead)):
        table.add_row(
            ds,
            f"{int(published.get(ds, 0)):,}",
            f"{int(standardized.get(ds, 0)):,}",
            f"{int(dead.get(ds, 0)):,}",
            f"{int(dropped.get(ds, 0)):,}",
            f"{int(live.get(ds, 0))}/{units[ds]}" if units.get(ds) else "–",
        )
    return table


_CIRCUIT = {0: "[green]closed[/]", 1: "[yellow]half-open[/]", 2: "[red]open[/]"}


def sink_table(totals: dict[str, float]) -> Table:
    """Per sink: records written, dead-lettered, retries, circuit state, held records."""
    written = _sum_by(totals, "databus_sink_records_written_total", "sink")
    dead = _sum_by(totals, "databus_sink_dead_lettered_total", "sink")
    retries = _sum_by(totals, "databus_sink_retries_total", "sink")
    circuit = _sum_by(totals, "databus_sink_circuit_state", "sink")
    held = _sum_by(totals, "databus_sink_held_records", "sink")
    table = Table(title="Sinks", title_justify="left")
    table.add_column("sink", no_wrap=True)
    for name in ("written", "sink DLQ", "retries", "circuit", "held"):
        table.add_column(name, justify="right")
    for sink in sorted(set(written) | set(circuit) | set(dead)):
        table.add_row(
            sink,
            f"{int(written.get(sink, 0)):,}",
            f"{int(dead.get(sink, 0)):,}",
            f"{int(retries.get(sink, 0)):,}",
            _CIRCUIT.get(int(circuit.get(sink, 0)), "?"),
            f"{int(held.get(sink, 0)):,}",
        )
    return table


def ledger_table(rows: Sequence[dict[str, object]]) -> Table:
    """The delivery ledger as the IOC store holds it: per owner unit, assigned,
    delivering and live datasets, and the mean quality score."""
    table = Table(
        title="Delivery ledger (IOC store)",
        title_justify="left",
        caption=None if rows else "waiting for the processor's first quality reports …",
    )
    table.add_column("owner unit", no_wrap=True, max_width=34, overflow="ellipsis")
    for name in ("assigned", "delivering", "live", "quality"):
        table.add_column(name, justify="right")
    for row in rows:
        quality = row.get("quality")
        table.add_row(
            f"{row.get('unit')} {row.get('name')}",
            str(row.get("assigned")),
            str(row.get("delivering")),
            str(row.get("live")),
            _pct(quality if isinstance(quality, float) else None),
        )
    return table


ProcessRow = tuple[str, int | None, str, int, str]  # name, pid, state, restarts, last reason


def process_table(rows: Sequence[ProcessRow]) -> Table:
    """Per supervised process: pid, state, restarts and why it was last restarted."""
    table = Table(title="Processes (supervised)", title_justify="left")
    table.add_column("process", no_wrap=True)
    table.add_column("pid", justify="right")
    table.add_column("state")
    table.add_column("restarts", justify="right")
    table.add_column("last restart because", max_width=48, overflow="ellipsis")
    for name, pid, state, restarts, reason in rows:
        shown = state if state == "running" else f"[yellow]{state}[/]"
        table.add_row(
            name,
            str(pid or "–"),
            shown,
            f"[bold red]{restarts}[/]" if restarts else "0",
            reason or "–",
        )
    return table


def render(
    figures: Figures,
    totals: dict[str, float],
    client: redis.Redis,
    elapsed: float,
    processes: Sequence[ProcessRow] = (),
    broker_mb: float | None = None,
) -> Group:
    def total(name: str) -> int:
        return int(totals.get(name, 0))

    def stage(name: str) -> int:
        return int(_sum_by(totals, "databus_events_produced_total", "stage").get(name, 0))

    alerts = _sum_by(totals, "databus_alerts_total", "state")
    pipeline = Table(title=f"databus — running for {elapsed:,.0f} s", title_justify="left")
    pipeline.add_column("figure")
    pipeline.add_column("value", justify="right")
    pipeline.add_row("events in (per second)", _per_second(figures.rate_in))
    pipeline.add_row("events published", f"{stage('raw'):,}")
    pipeline.add_row("events standardized", f"{stage('std'):,}")
    pipeline.add_row(
        "events dead-lettered",
        f"{total('databus_events_dead_lettered_total'):,}  ({_reasons(totals)})",
    )
    pipeline.add_row("duplicates / stale dropped", f"{total('databus_events_dropped_total'):,}")
    pipeline.add_row("alerts raised", f"{int(alerts.get('RAISED', 0)):,}")
    pipeline.add_row("alerts resolved", f"{int(alerts.get('RESOLVED', 0)):,}")
    if broker_mb is not None:
        # Tansu's memory storage keeps every record: this only grows
        # (docs/architecture.md, "The embedded broker").
        pipeline.add_row("embedded broker memory (MB)", f"{broker_mb:,.0f}")
    try:
        kpis = read_unit_kpis(client, datetime.now(UTC))
        ledger = read_ledger(client)
    except redis.RedisError as exc:
        return Group(
            pipeline,
            *([process_table(processes)] if processes else []),
            dataset_table(totals),
            sink_table(totals),
            f"[red]IOC store unreachable: {escape(str(exc))}[/]",
        )
    return Group(
        pipeline,
        *([process_table(processes)] if processes else []),
        dataset_table(totals),
        sink_table(totals),
        ledger_table(ledger),
        kpi_table(kpis),
    )
