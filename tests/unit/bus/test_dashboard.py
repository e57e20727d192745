"""The `databus up` summary: the KPI table's order and blanks, and the /metrics scrape."""

from __future__ import annotations

import io
import re

from rich.console import Console

from bus.metrics import Metrics, serve_metrics
from databus.dashboard import _reasons, dataset_table, kpi_table, scrape
from databus.local_stack import free_port
from sinks.ioc.dossier_kpis import UnitKpis


def _kpis(unit: str, overdue: float | None, on_time: float | None) -> UnitKpis:
    return UnitKpis(
        unit_code=unit,
        received=10,
        completed=4,
        completed_on_time=3,
        completed_late=1,
        open_overdue=2,
        overdue_rate=overdue,
        on_time_rate=on_time,
    )


def _text(renderable: object) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_kpi_table_sorts_by_overdue_rate_and_blanks_missing_rates() -> None:
    text = _text(
        kpi_table(
            [
                _kpis("DNA.B", 0.10, 0.9),
                _kpis("DNA.NONE", None, None),
                _kpis("DNA.WORST", 0.75, 0.25),
                _kpis("DNA.A", 0.10, 0.9),
                _kpis("DNA.MID", 0.40, 0.6),
            ]
        )
    )
    assert "Per-unit dossier KPIs (IOC store)" in text
    rows = [line for line in text.splitlines() if "DNA." in line]
    # Highest overdue rate first; ties by unit code; no denominator counts as 0.
    assert [re.search(r"DNA\.\w+", r).group() for r in rows] == [  # type: ignore[union-attr]
        "DNA.WORST",
        "DNA.MID",
        "DNA.A",
        "DNA.B",
        "DNA.NONE",
    ]
    worst = rows[0].split("│")
    assert worst[-3].strip() == "75%"  # the markup for a high rate does not leak as text
    assert worst[-2].strip() == "25%"
    none = rows[-1].split("│")
    assert none[-3].strip() == "—"
    assert none[-2].strip() == "—"
    assert [c.strip() for c in none[2:7]] == ["10", "4", "3", "1", "2"]


def test_kpi_table_without_units_has_only_the_header() -> None:
    text = _text(kpi_table([], title="empty"))
    assert "empty" in text
    assert "overdue %" in text
    assert "DNA." not in text


def test_scrape_sums_labelled_samples_across_processes() -> None:
    metrics = Metrics()
    port = serve_metrics(metrics)
    metrics.events_produced.labels("x", "raw").inc(3)
    metrics.events_produced.labels("x", "std").inc(2)
    metrics.events_dead_lettered.labels("x", "standardize", "bad_id").inc()
    other = Metrics()
    other_port = serve_metrics(other)
    other.events_produced.labels("x", "raw").inc(4)

    totals = scrape([port, other_port])

    assert totals["databus_events_produced_total{dataset=x,stage=raw}"] == 7
    assert totals["databus_events_produced_total{dataset=x,stage=std}"] == 2
    assert totals["databus_events_produced_total"] == 9
    key = "databus_events_dead_lettered_total{dataset=x,reason=bad_id,stage=standardize}"
    assert totals[key] == 1
    assert totals["databus_events_dead_lettered_total"] == 1
    assert "databus_alerts_total" not in totals  # no label set used yet: no sample


def test_scrape_of_a_closed_port_is_empty() -> None:
    assert scrape([free_port()]) == {}


def test_scrape_keeps_what_answers_when_one_port_is_closed() -> None:
    metrics = Metrics()
    port = serve_metrics(metrics)
    metrics.alerts.labels("dossier_overdue_rate", "RAISED").inc()
    totals = scrape([free_port(), port])
    assert totals["databus_alerts_total{rule=dossier_overdue_rate,state=RAISED}"] == 1


def test_dataset_table_and_reasons_sum_the_scrape_per_dataset() -> None:
    totals: dict[str, float] = {
        "databus_events_produced_total{dataset=a.x,stage=raw}": 10,
        "databus_events_produced_total{dataset=a.x,stage=std}": 7,
        "databus_events_produced_total{dataset=b.y,stage=std}": 4,
        "databus_events_dead_lettered_total{dataset=a.x,reason=bad_date,stage=standardize}": 2,
        "databus_events_dead_lettered_total{dataset=b.y,reason=bad_date,stage=standardize}": 1,
        "databus_events_dead_lettered_total{dataset=a.x,reason=empty_value,stage=decode}": 1,
        "databus_events_dead_lettered_total": 4,
        "databus_events_dropped_total{dataset=a.x,reason=duplicate}": 3,
        "databus_dataset_live{dataset=a.x,unit=U1}": 1,
        "databus_dataset_live{dataset=a.x,unit=U2}": 0,
    }
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in _text(dataset_table(totals, {"a.x": "late"})).splitlines()
        if line.startswith("│")
    }
    # The state is the delivery ledger's (one definition of "live"), not a gauge's.
    assert rows["a.x"] == ["10", "7", "3", "3", "late"]
    assert rows["b.y"] == ["0", "4", "1", "0", "–"]
    # Reasons summed over datasets, the commonest first.
    assert _reasons(totals) == "bad_date: 3, empty_value: 1"


def test_ledger_table_fits_a_terminal_and_says_when_it_waits() -> None:
    from databus.dashboard import ledger_table

    rows: list[dict[str, object]] = [
        {
            "unit": "DNA.VPUB",
            "name": "Văn phòng Ủy ban nhân dân tỉnh Đồng Nai",
            "assigned": 2,
            "delivering": 2,
            "live": 0,
            "quality": 0.99,
        }
    ]
    text = _text(ledger_table(rows))
    assert "DNA.VPUB" in text and "delivering" in text and "99%" in text
    assert "waiting" in _text(ledger_table([]))


def test_events_in_is_a_rate_over_the_last_30_seconds() -> None:
    """A live feed of one event every 10 s shows as 0.10/s, not as 0 between events."""
    from databus.dashboard import Figures

    figures = Figures()
    key = "databus_events_produced_total{dataset=d,stage=raw}"
    for second in range(0, 61):
        figures.update({key: float(second // 10)}, now=float(second))
    assert abs(figures.rate_in - 0.1) < 0.02
    figures.update({key: 6.0}, now=120.0)  # nothing for a minute
    assert figures.rate_in == 0.0
