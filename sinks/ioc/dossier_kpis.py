"""The dossier KPIs, as docs/domain.md defines them once for everyone.

A dossier's latest state *contributes* to its receiving unit's figures:

- received: every dossier that exists counts once, whatever its status;
- completed: status ``COMPLETED``; on time when ``completed_at <= due_at``,
  late when ``completed_at > due_at``;
- open: status received, in progress or supplement requested (not completed,
  returned or cancelled). Whether an open dossier is *overdue* depends on the
  reading time, not on when it was written: a dossier becomes overdue while no
  one writes anything, so a contribution keeps the due time and
  :func:`is_open_overdue` answers against a ``now``;
- returned and cancelled dossiers are received but neither open nor completed.

A deleted dossier (op ``d``) contributes nothing.

Rates: overdue = (late + open overdue) / (on time + late + open overdue);
on time = 1 − overdue. No denominator gives no rate (``None``), never 0.

Per day (Asia/Ho_Chi_Minh calendar days), the same figures are anchored on the
day each one happened, so the days of a unit add up to its totals:

- received on the day of ``received_at``;
- completed, on time and late on the day of ``completed_at`` (a ``COMPLETED``
  dossier without ``completed_at`` has no such day: it counts in the totals only);
- open overdue on the day of ``due_at``: the open dossiers whose due time fell
  that day and has passed at the reading time.

The IOC store keeps running sums of these contributions;
:func:`compute_unit_kpis` and :func:`compute_unit_day_kpis` recompute them from
scratch, so the two can be checked against each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sinks.ioc.codec import local_day

__all__ = [
    "COMPLETED_STATUS",
    "MEASURES",
    "NO_CONTRIBUTION",
    "OPEN_STATUSES",
    "Contribution",
    "UnitDayKpis",
    "UnitKpis",
    "compute_unit_day_kpis",
    "compute_unit_kpis",
    "contribution",
    "daily_contribution",
    "is_open_overdue",
    "kpis_from_counts",
    "rates",
    "unit_day_kpis",
]

OPEN_STATUSES = frozenset({"RECEIVED", "IN_PROGRESS", "SUPPLEMENT_REQUESTED"})
COMPLETED_STATUS = "COMPLETED"
# the stored per-day measures, in the order of ``kpis_from_counts``'s counts
MEASURES = ("received", "completed", "completed_on_time", "completed_late")


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one dossier state adds to its unit's KPIs (each count 0 or 1)."""

    received: int
    completed: int
    completed_on_time: int
    completed_late: int
    # set only while the dossier is open
    open_due_at: datetime | None


NO_CONTRIBUTION = Contribution(0, 0, 0, 0, None)


@dataclass(frozen=True, slots=True)
class UnitKpis:
    unit_code: str
    received: int
    completed: int
    completed_on_time: int
    completed_late: int
    open_overdue: int
    overdue_rate: float | None
    on_time_rate: float | None


def contribution(dossier: Mapping[str, Any] | None) -> Contribution:
    """The contribution of a dossier's latest state; ``None`` (deleted) adds nothing.

    A ``COMPLETED`` dossier without ``completed_at`` counts as completed but
    neither on time nor late: there is nothing to judge it by, and guessing
    either way would bias the rates.
    """
    if dossier is None:
        return NO_CONTRIBUTION
    status = dossier["status"]
    if status == COMPLETED_STATUS:
        completed_at: datetime | None = dossier.get("completed_at")
        if completed_at is None:
            return Contribution(1, 1, 0, 0, None)
        on_time = completed_at <= dossier["due_at"]
        return Contribution(1, 1, int(on_time), int(not on_time), None)
    if status in OPEN_STATUSES:
        return Contribution(1, 0, 0, 0, dossier["due_at"])
    # returned, cancelled
    return Contribution(1, 0, 0, 0, None)


def is_open_overdue(c: Contribution, now: datetime) -> bool:
    """Open and its due time has passed (strictly) at ``now``."""
    return c.open_due_at is not None and c.open_due_at < now


def rates(
    completed_on_time: int, completed_late: int, open_overdue: int
) -> tuple[float | None, float | None]:
    """(overdue rate, on-time rate); both ``None`` when there is no denominator."""
    denominator = completed_on_time + completed_late + open_overdue
    if denominator == 0:
        return None, None
    overdue_rate = (completed_late + open_overdue) / denominator
    return overdue_rate, 1.0 - overdue_rate


def compute_unit_kpis(dossiers: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, UnitKpis]:
    """Reference computation from the latest state of each (non-deleted) dossier.

    Units appear only when they have at least one dossier.
    """
    sums: dict[str, list[int]] = {}
    for dossier in dossiers:
        c = contribution(dossier)
        acc = sums.setdefault(dossier["receiving_unit_code"], [0, 0, 0, 0, 0])
        acc[0] += c.received
        acc[1] += c.completed
        acc[2] += c.completed_on_time
        acc[3] += c.completed_late
        acc[4] += int(is_open_overdue(c, now))
    return {unit: kpis_from_counts(unit, acc) for unit, acc in sorted(sums.items())}


def kpis_from_counts(unit_code: str, counts: Sequence[int]) -> UnitKpis:
    """A unit's KPIs from [received, completed, on time, late, open overdue]; the one
    place rates are derived."""
    received, completed, on_time, late, overdue = counts
    overdue_rate, on_time_rate = rates(on_time, late, overdue)
    return UnitKpis(
        unit_code=unit_code,
        received=received,
        completed=completed,
        completed_on_time=on_time,
        completed_late=late,
        open_overdue=overdue,
        overdue_rate=overdue_rate,
        on_time_rate=on_time_rate,
    )


def daily_contribution(dossier: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The per-day counters a dossier state adds 1 to, as ``"YYYY-MM-DD|measure"``.

    Measures: ``received`` (day of ``received_at``), ``completed``,
    ``completed_on_time``, ``completed_late`` (day of ``completed_at``). Open
    overdue is not a counter: it depends on the reading time (see
    :func:`compute_unit_day_kpis`).
    """
    c = contribution(dossier)
    if dossier is None or c.received == 0:
        return ()
    out = [f"{local_day(dossier['received_at'])}|received"]
    completed_at: datetime | None = dossier.get("completed_at")
    if c.completed and completed_at is not None:
        day = local_day(completed_at)
        out.append(f"{day}|completed")
        if c.completed_on_time:
            out.append(f"{day}|completed_on_time")
        if c.completed_late:
            out.append(f"{day}|completed_late")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class UnitDayKpis:
    """A unit's KPIs on one local day; ``kpis.unit_code`` is the unit."""

    day: str
    sector: str
    kpis: UnitKpis


def compute_unit_day_kpis(
    dossiers: Iterable[Mapping[str, Any]], now: datetime, sectors: Mapping[str, str]
) -> list[UnitDayKpis]:
    """Reference computation of the daily KPIs, sorted by (unit, day).

    Open overdue on day D: open dossiers whose ``due_at`` falls on D and is
    before ``now``. ``sectors`` maps unit codes to sectors (``"unknown"`` when
    absent). Days with no figure at all are left out.
    """
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * 5))
    for dossier in dossiers:
        days = counts[dossier["receiving_unit_code"]]
        for item in daily_contribution(dossier):
            day, measure = item.split("|")
            days[day][MEASURES.index(measure)] += 1
        c = contribution(dossier)
        if is_open_overdue(c, now):
            assert c.open_due_at is not None
            days[local_day(c.open_due_at)][4] += 1
    return [
        row
        for unit, days in sorted(counts.items())
        for row in unit_day_kpis(unit, sectors.get(unit, "unknown"), days)
    ]


def unit_day_kpis(unit: str, sector: str, days: Mapping[str, Sequence[int]]) -> list[UnitDayKpis]:
    """A unit's rows, sorted by day, from day -> [received, completed, on time, late,
    open overdue]."""
    return [
        UnitDayKpis(day=day, sector=sector, kpis=kpis_from_counts(unit, a))
        for day, a in sorted(days.items())
    ]
