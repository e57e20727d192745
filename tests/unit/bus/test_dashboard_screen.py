"""The live summary of `databus up` on a 100 × 40 terminal, its plain line for a pipe,
and "catching up" while the processor lags."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from databus.dashboard import (
    CATCHING_UP_LAG,
    Figures,
    Snapshot,
    dataset_states,
    render_compact,
    render_full,
    summary_line,
)
from schemas.catalog import DATASETS
from sinks.ioc.dossier_kpis import UnitKpis


def _totals(lag: int) -> dict[str, float]:
    totals: dict[str, float] = {"databus_consumer_lag": lag}
    for i, ds in enumerate(sorted(DATASETS)):
        totals[f"databus_events_produced_total{{dataset={ds},stage=raw}}"] = 1000 + i
        totals[f"databus_events_produced_total{{dataset={ds},stage=std}}"] = 900 + i
        totals[
            f"databus_events_dead_lettered_total{{dataset={ds},reason=bad_date_{i},stage=std}}"
        ] = i
    totals["databus_events_dead_lettered_total"] = sum(range(len(DATASETS)))
    for sink in ("ioc_store", "shared_repo", "health_axis"):
        totals[f"databus_sink_records_written_total{{sink={sink}}}"] = 500
        totals[f"databus_sink_circuit_state{{sink={sink}}}"] = 0
    totals["databus_alerts_total{rule=r,state=RAISED}"] = 3
    return totals


def _ledger(units: int) -> list[dict[str, Any]]:
    rows = []
    ids = sorted(DATASETS)
    for u in range(units):
        mine = ids[u::units] if u < len(ids) else []
        rows.append(
            {
                "unit": f"DNA.U{u:02d}",
                "name": f"Sở thứ {u} tỉnh Đồng Nai",
                "assigned": len(mine),
                "delivering": len(mine),
                "live": (len(mine) + 1) // 2,
                "quality": 0.9,
                "datasets": [
                    {"dataset": d, "delivering": True, "live": j % 2 == 0}
                    for j, d in enumerate(mine)
                ],
            }
        )
    return rows


def _snapshot(lag: int = 0) -> Snapshot:
    kpis = [UnitKpis(f"DNA.K{i:02d}", 100, 50, 40, 10, 5, i / 100, 0.8) for i in range(40)]
    processes = [(f"proc-{i}", 1000 + i, "running", 0, "") for i in range(7)]
    processes.append(("sink-sql", 2000, "running", 1, "exited with code -9"))
    return Snapshot(
        totals=_totals(lag),
        elapsed=61.0,
        processes=processes,
        kpis=kpis,
        ledger=_ledger(12),
        broker_mb=120.0,
    )


def _screen(renderable: object) -> list[str]:
    console = Console(width=100, height=40, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


def test_the_live_summary_fits_a_100_by_40_terminal() -> None:
    lines = _screen(render_compact(Figures(), _snapshot(), width=100, height=40))
    assert len(lines) <= 40, "\n".join(lines)
    assert max(len(line) for line in lines) <= 100
    text = "\n".join(lines)
    # the most important figures come first
    assert lines[0].startswith("databus — 61 s"), lines[0]
    assert "published 17,136" in lines[0] or "published" in lines[0]
    # the ledger's count, the same definition as the per-dataset states
    live = sum(state == "live" for state in dataset_states(_ledger(12)).values())
    assert f"live {live} of 17 datasets" in text
    # long tables trimmed with how many were left out
    assert "more units" in text and "… " in text
    # the restarted process is shown, with why
    assert "sink-sql" in text and "exited with code -9" in text


def test_a_smaller_terminal_still_fits() -> None:
    console = Console(width=100, height=30, record=True, file=io.StringIO())
    console.print(render_compact(Figures(), _snapshot(), width=100, height=30))
    assert len(console.export_text().splitlines()) <= 30


def test_figures_are_marked_catching_up_while_the_processor_lags() -> None:
    snap = _snapshot(lag=CATCHING_UP_LAG + 1)
    assert snap.catching_up
    text = "\n".join(_screen(render_compact(Figures(), snap)))
    assert "catching up" in text and "not final" in text
    assert "(catching up)" in summary_line(Figures(), snap)
    assert not _snapshot(lag=CATCHING_UP_LAG).catching_up
    full = "\n".join(_screen(render_full(Figures(), snap)))
    assert "catching up (lag 1,001), not final" in " ".join(full.split())


def test_published_events_before_the_processor_reports_lag_are_catching_up() -> None:
    snap = _snapshot()
    del snap.totals["databus_consumer_lag"]
    assert snap.catching_up


def test_the_plain_summary_is_one_line() -> None:
    line = summary_line(Figures(), _snapshot())
    assert "\n" not in line
    assert line.startswith("databus: t=61s ")
    for part in ("published=", "standardized=", "dead_lettered=", "lag=0", "live="):
        assert part in line, line
    assert "restarts=1" in line


def test_dataset_states_come_from_the_ledger() -> None:
    states = dataset_states(_ledger(12))
    assert set(states) == set(DATASETS)
    assert set(states.values()) <= {"live", "late", "silent"}
    assert sum(s == "live" for s in states.values()) == sum(r["live"] for r in _ledger(12))
