"""The summary of `databus up`: pipeline figures, processes, sinks, datasets, the
delivery ledger and per-unit KPIs.

Figures come from the processes' own ``/metrics`` endpoints and the ledger and KPIs
are read back from the IOC store (``take_snapshot``), so what is shown is what the
bus really did. Three renderings of one ``Snapshot``:

- ``render_compact``: the live screen, fitted to the terminal (100 × 40 at least):
  headline figures first, long tables trimmed with "… N more";
- ``summary_line``: one plain line per interval when stdout is not a terminal;
- ``render_full``: every row, left on stop (piped or not).

While the processor's consumer lag is above ``CATCHING_UP_LAG`` the store-derived
figures (ledger, KPIs) are marked "catching up": they are not final yet. A dataset's
"live" state is the ledger's (``schemas.domain.delivery.dataset_live``), the same
definition ``databus catalog status`` uses.
"""

from __future__ import annotations

import io
import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from bus.errors import SinkError
from databus.cli_common import CATCHING_UP_LAG
from schemas.domain.delivery import delivery_state
from sinks.ioc import UnitKpis, read_ledger, read_unit_kpis

__all__ = [
    "CATCHING_UP_LAG",
    "Figures",
    "Snapshot",
    "dataset_states",
    "dataset_table",
    "kpi_table",
    "ledger_table",
    "pipeline_table",
    "process_table",
    "render_compact",
    "render_full",
    "scrape",
    "sink_table",
    "summary_line",
    "take_snapshot",
]

T = TypeVar("T")


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


def kpi_table(
    kpis: Sequence[UnitKpis],
    title: str = "Per-unit dossier KPIs (IOC store)",
    limit: int | None = None,
) -> Table:
    """Per unit, the most overdue first; at most ``limit`` rows, then "… N more"."""
    table = Table(title=title, title_justify="left")
    table.add_column("unit", no_wrap=True)
    for col in ("recv", "done", "on time", "late", "overdue now", "overdue %", "on-time %"):
        table.add_column(col, justify="right")
    ranked = sorted(kpis, key=lambda k: (-(k.overdue_rate or 0), k.unit_code))
    shown, rest = _trim(ranked, limit)
    for k in shown:
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
    if rest:
        table.add_row(f"[dim]… {rest} more units[/]", *[""] * 7)
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


def dataset_states(ledger: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Per dataset, ``live`` / ``late`` / ``silent`` as the delivery ledger judged it
    (``schemas.domain.delivery.delivery_state``: the one definition of "live")."""
    states: dict[str, str] = {}
    for row in ledger:
        for ds in row.get("datasets") or ():
            delivering, live = bool(ds.get("delivering")), bool(ds.get("live"))
            states[str(ds.get("dataset"))] = delivery_state(delivering, live)
    return states


_STATE_STYLE = {"live": "green", "late": "yellow", "silent": "red"}


def dataset_table(
    totals: dict[str, float],
    states: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> Table:
    """Per dataset: published, standardized, dead-lettered, dropped, and its delivery
    state from the ledger (live / late / silent; "–" before the first ledger). At most
    ``limit`` rows, the busiest first, then "… N more"."""
    produced = "databus_events_produced_total"
    published = _sum_by(totals, produced, "dataset", stage="raw")
    standardized = _sum_by(totals, produced, "dataset", stage="std")
    dead = _sum_by(totals, "databus_events_dead_lettered_total", "dataset")
    dropped = _sum_by(totals, "databus_events_dropped_total", "dataset")
    states = states or {}
    table = Table(title="Per dataset (processor)", title_justify="left")
    table.add_column("dataset", no_wrap=True, min_width=31)
    for name in ("in", "std", "DLQ", "dup/stale", "state"):
        table.add_column(name, justify="right")
    names = sorted(set(published) | set(standardized) | set(dead))
    if limit is not None:
        names = sorted(names, key=lambda d: (-published.get(d, 0), d))
    shown, rest = _trim(names, limit)
    for ds in shown:
        state = states.get(ds)
        table.add_row(
            ds,
            f"{int(published.get(ds, 0)):,}",
            f"{int(standardized.get(ds, 0)):,}",
            f"{int(dead.get(ds, 0)):,}",
            f"{int(dropped.get(ds, 0)):,}",
            f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]" if state else "–",
        )
    if rest:
        table.add_row(f"[dim]… {rest} more[/]", "", "", "", "", "")
    return table


def _trim(items: Sequence[T], limit: int | None) -> tuple[Sequence[T], int]:
    """The first ``limit`` items (all when None) and how many were left out; a
    single left-out item is shown instead of a "… 1 more" row of the same height."""
    if limit is None or len(items) <= limit + 1:
        return items, 0
    return items[: max(0, limit)], len(items) - max(0, limit)


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


def ledger_table(
    rows: Sequence[Mapping[str, object]], limit: int | None = None, note: str = ""
) -> Table:
    """The delivery ledger as the IOC store holds it: per owner unit, assigned,
    delivering and live datasets, and the mean quality score; at most ``limit`` rows
    (the units with the most datasets not live first), then "… N more"."""
    table = Table(
        title=f"Delivery ledger (IOC store){note}",
        title_justify="left",
        caption=None if rows else "waiting for the processor's first quality reports …",
    )
    table.add_column("owner unit", no_wrap=True, max_width=34, overflow="ellipsis")
    for name in ("assigned", "delivering", "live", "quality"):
        table.add_column(name, justify="right")
    ordered = list(rows)
    if limit is not None:
        ordered.sort(
            key=lambda r: (-(_int(r.get("assigned")) - _int(r.get("live"))), str(r.get("unit")))
        )
    shown, rest = _trim(ordered, limit)
    for row in shown:
        quality = row.get("quality")
        table.add_row(
            f"{row.get('unit')} {row.get('name')}",
            str(row.get("assigned")),
            str(row.get("delivering")),
            str(row.get("live")),
            _pct(quality if isinstance(quality, float) else None),
        )
    if rest:
        table.add_row(f"[dim]… {rest} more units[/]", "", "", "", "")
    return table


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


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


@dataclass
class Snapshot:
    """Everything one frame of the summary shows, read once (``take_snapshot``), so
    that rendering it is pure: the full summary, the compact live one, a plain line."""

    totals: dict[str, float]
    elapsed: float
    processes: Sequence[ProcessRow] = ()
    kpis: Sequence[UnitKpis] = ()
    ledger: Sequence[Mapping[str, Any]] = ()
    store_error: str | None = None  # the IOC store could not be read
    broker_mb: float | None = None
    catching_up_lag: int = CATCHING_UP_LAG

    @property
    def lag(self) -> int:
        """Records the processor has still to read (its consumer lag, all partitions)."""
        return int(self.totals.get("databus_consumer_lag", 0))

    @property
    def catching_up(self) -> bool:
        """The processor lags more than ``catching_up_lag``: what the stores show is
        not yet what was published; figures derived from them are provisional. Events
        published before the processor reported any lag count as catching up too."""
        started = "databus_consumer_lag" in self.totals
        return self.lag > self.catching_up_lag or (not started and self.stage("raw") > 0)

    def stage(self, name: str) -> int:
        return int(_sum_by(self.totals, "databus_events_produced_total", "stage").get(name, 0))

    def total(self, name: str) -> int:
        return int(self.totals.get(name, 0))

    def live_count(self) -> tuple[int, int]:
        """(live, assigned) datasets over the whole ledger."""
        live = sum(_int(r.get("live")) for r in self.ledger)
        return live, sum(_int(r.get("assigned")) for r in self.ledger)


def take_snapshot(
    ports: Iterable[int],
    client: redis.Redis,
    elapsed: float,
    processes: Sequence[ProcessRow] = (),
    broker_mb: float | None = None,
    catching_up_lag: int = CATCHING_UP_LAG,
) -> Snapshot:
    """Scrape the processes' metrics and read the IOC store once."""
    snap = Snapshot(
        totals=scrape(ports),
        elapsed=elapsed,
        processes=processes,
        broker_mb=broker_mb,
        catching_up_lag=catching_up_lag,
    )
    try:
        snap.kpis = read_unit_kpis(client, datetime.now(UTC))
        snap.ledger = read_ledger(client)
    except (redis.RedisError, SinkError) as exc:  # the store is down (`up` restarts it)
        snap.store_error = str(exc)
    return snap


def _catching_up_note(snap: Snapshot) -> str:
    if not snap.catching_up:
        return ""
    return f" [yellow]— catching up (lag {snap.lag:,}), not final[/]"


def pipeline_table(figures: Figures, snap: Snapshot) -> Table:
    alerts = _sum_by(snap.totals, "databus_alerts_total", "state")
    pipeline = Table(title=f"databus — running for {snap.elapsed:,.0f} s", title_justify="left")
    pipeline.add_column("figure")
    pipeline.add_column("value", justify="right")
    pipeline.add_row("events in (per second)", _per_second(figures.rate_in))
    pipeline.add_row("events published", f"{snap.stage('raw'):,}")
    pipeline.add_row("events standardized", f"{snap.stage('std'):,}")
    pipeline.add_row(
        "events dead-lettered",
        f"{snap.total('databus_events_dead_lettered_total'):,}  ({_reasons(snap.totals)})",
    )
    pipeline.add_row(
        "duplicates / stale dropped", f"{snap.total('databus_events_dropped_total'):,}"
    )
    pipeline.add_row(
        "processor lag (records)", f"{snap.lag:,}" + (" catching up" if snap.catching_up else "")
    )
    pipeline.add_row("alerts raised", f"{int(alerts.get('RAISED', 0)):,}")
    pipeline.add_row("alerts resolved", f"{int(alerts.get('RESOLVED', 0)):,}")
    if snap.broker_mb is not None:
        # flat with disk storage (records are files, trimmed by retention); with
        # memory storage it only grows (docs/architecture.md, "The embedded broker")
        pipeline.add_row("embedded broker memory (MB)", f"{snap.broker_mb:,.0f}")
    return pipeline


def render_full(figures: Figures, snap: Snapshot) -> Group:
    """The whole summary, every row: what `up` leaves in a log when piped."""
    note = _catching_up_note(snap)
    parts: list[Any] = [pipeline_table(figures, snap)]
    if snap.processes:
        parts.append(process_table(snap.processes))
    parts += [dataset_table(snap.totals, dataset_states(snap.ledger)), sink_table(snap.totals)]
    if snap.store_error is not None:
        parts.append(f"[red]IOC store unreachable: {escape(snap.store_error)}[/]")
    else:
        parts.append(ledger_table(snap.ledger, note=note))
        parts.append(kpi_table(snap.kpis, title=f"Per-unit dossier KPIs (IOC store){note}"))
    return Group(*parts)


def _headline(figures: Figures, snap: Snapshot) -> list[str]:
    """The most important figures, two short lines, first on the screen."""
    alerts = _sum_by(snap.totals, "databus_alerts_total", "state")
    live, assigned = snap.live_count()
    first = (
        f"[bold]databus[/] — {snap.elapsed:,.0f} s · in {_per_second(figures.rate_in)}/s · "
        f"published {snap.stage('raw'):,} · standardized {snap.stage('std'):,} · "
        f"DLQ {snap.total('databus_events_dead_lettered_total'):,}"
    )
    lag = f"lag {snap.lag:,}" + (" [yellow bold]catching up[/]" if snap.catching_up else "")
    second = (
        f"{lag} · alerts {int(alerts.get('RAISED', 0)):,} raised, "
        f"{int(alerts.get('RESOLVED', 0)):,} resolved · "
        f"live {live} of {assigned} datasets"
        + (f" · broker {snap.broker_mb:,.0f} MB" if snap.broker_mb is not None else "")
    )
    return [first, second, f"[dim]DLQ reasons: {escape(_reasons(snap.totals, most=4))}[/]"]


def _process_line(rows: Sequence[ProcessRow]) -> tuple[str, list[ProcessRow]]:
    """One line for the processes, and the rows worth a table (not running, restarted)."""
    running = sum(1 for r in rows if r[2] == "running")
    restarts = sum(r[3] for r in rows)
    odd = [r for r in rows if r[2] != "running" or r[3]]
    return f"processes: {running} of {len(rows)} running, {restarts} restarts", odd


def _sink_line(totals: dict[str, float]) -> str:
    """The sinks in one line: written per sink, then DLQ, retries, open circuits, held."""
    written = _sum_by(totals, "databus_sink_records_written_total", "sink")
    circuit = _sum_by(totals, "databus_sink_circuit_state", "sink")
    names = sorted(set(written) | set(circuit))
    if not names:
        return "sinks: none reported yet"
    per = " · ".join(f"{n} {int(written.get(n, 0)):,}" for n in names)
    odd = [f"{n} {_CIRCUIT.get(int(circuit.get(n, 0)), '?')}" for n in names if circuit.get(n)]
    dead = int(sum(_sum_by(totals, "databus_sink_dead_lettered_total", "sink").values()))
    retries = int(sum(_sum_by(totals, "databus_sink_retries_total", "sink").values()))
    held = int(sum(_sum_by(totals, "databus_sink_held_records", "sink").values()))
    tail = f"sink DLQ {dead:,} · retries {retries:,} · held {held:,}"
    circuits = f" · circuit {', '.join(odd)}" if odd else " · circuits closed"
    return f"sinks written: {per}\n  {tail}{circuits}"


def _compact(table: Table) -> Table:
    """A table drawn with a header rule only: three lines of frame instead of five."""
    table.box = box.SIMPLE_HEAD
    table.show_edge = False
    return table


def render_compact(figures: Figures, snap: Snapshot, width: int = 100, height: int = 40) -> Group:
    """The live summary for a terminal of ``width`` × ``height``: the headline figures
    first, then the processes (a table only for those not running or restarted), sinks,
    datasets, the ledger and the KPIs, the long tables trimmed to fit with "… N more"."""
    from rich.console import Console

    def build(limit: int) -> Group:
        note = _catching_up_note(snap)
        parts: list[Any] = list(_headline(figures, snap))
        if snap.processes:
            line, odd = _process_line(snap.processes)
            parts.append(line)
            if odd:
                parts.append(_compact(process_table(odd[: max(1, limit)])))
        parts.append(_sink_line(snap.totals))
        states = dataset_states(snap.ledger)
        parts.append(_compact(dataset_table(snap.totals, states, limit=limit)))
        if snap.store_error is not None:
            parts.append(f"[red]IOC store unreachable: {escape(snap.store_error)}[/]")
        else:
            parts.append(_compact(ledger_table(snap.ledger, limit=max(1, limit // 2), note=note)))
            kpis = kpi_table(snap.kpis, title=f"Per-unit dossier KPIs{note}", limit=limit)
            parts.append(_compact(kpis))
        return Group(*parts)

    scratch = Console(width=width, height=height, file=io.StringIO(), color_system=None)
    limit = 12
    while True:
        group = build(limit)
        if limit == 0 or len(scratch.render_lines(group, pad=False)) <= height - 1:
            return group
        limit -= 1


def summary_line(figures: Figures, snap: Snapshot) -> str:
    """The summary as one plain line, for a log (`up` with stdout not a terminal)."""
    alerts = _sum_by(snap.totals, "databus_alerts_total", "state")
    live, assigned = snap.live_count()
    written = _sum_by(snap.totals, "databus_sink_records_written_total", "sink")
    restarts = sum(r[3] for r in snap.processes)
    parts = [
        f"t={snap.elapsed:.0f}s",
        f"in={figures.rate_in:.1f}/s",
        f"published={snap.stage('raw')}",
        f"standardized={snap.stage('std')}",
        f"dead_lettered={snap.total('databus_events_dead_lettered_total')}",
        f"lag={snap.lag}" + (" (catching up)" if snap.catching_up else ""),
        f"alerts_raised={int(alerts.get('RAISED', 0))}",
        f"written={int(sum(written.values()))}",
        f"live={live}/{assigned}",
        f"restarts={restarts}",
    ]
    if snap.broker_mb is not None:
        parts.append(f"broker_mb={snap.broker_mb:.0f}")
    if snap.store_error is not None:
        parts.append("ioc_store=unreachable")
    return "databus: " + " ".join(parts)
