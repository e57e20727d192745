"""The dossier KPI definition (docs/domain.md), without any server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sinks.ioc.dossier_kpis import (
    NO_CONTRIBUTION,
    Contribution,
    UnitKpis,
    compute_unit_kpis,
    contribution,
    is_open_overdue,
    rates,
)

T0 = datetime(2025, 8, 1, 8, 0, tzinfo=UTC)
DUE = T0 + timedelta(days=5)


def dossier(
    status: str,
    *,
    unit: str = "U1",
    due_at: datetime = DUE,
    completed_at: datetime | None = None,
    dossier_id: str = "D1",
) -> dict[str, Any]:
    return {
        "dossier_id": dossier_id,
        "receiving_unit_code": unit,
        "status": status,
        "received_at": T0,
        "due_at": due_at,
        "completed_at": completed_at,
    }


def test_completed_exactly_at_due_is_on_time() -> None:
    assert contribution(dossier("COMPLETED", completed_at=DUE)) == Contribution(1, 1, 1, 0, None)


def test_completed_a_millisecond_late_is_late_not_on_time() -> None:
    late = contribution(dossier("COMPLETED", completed_at=DUE + timedelta(milliseconds=1)))
    assert late.completed_on_time == 0
    assert late.completed_late == 1
    assert late.completed == 1


def test_completed_without_completed_at_is_neither_on_time_nor_late() -> None:
    assert contribution(dossier("COMPLETED")) == Contribution(1, 1, 0, 0, None)


@pytest.mark.parametrize("status", ["RETURNED", "CANCELLED"])
def test_returned_and_cancelled_are_received_but_neither_open_nor_completed(status: str) -> None:
    c = contribution(dossier(status, completed_at=DUE - timedelta(days=1)))
    assert c == Contribution(1, 0, 0, 0, None)
    assert not is_open_overdue(c, DUE + timedelta(days=30))


@pytest.mark.parametrize("status", ["RECEIVED", "IN_PROGRESS", "SUPPLEMENT_REQUESTED"])
def test_open_statuses_keep_their_due_time(status: str) -> None:
    assert contribution(dossier(status)) == Contribution(1, 0, 0, 0, DUE)


def test_deleted_contributes_nothing() -> None:
    assert contribution(None) == NO_CONTRIBUTION == Contribution(0, 0, 0, 0, None)


def test_open_overdue_is_decided_at_read_time_and_strictly_after_due() -> None:
    c = contribution(dossier("IN_PROGRESS"))
    assert not is_open_overdue(c, DUE - timedelta(seconds=1))
    assert not is_open_overdue(c, DUE)
    assert is_open_overdue(c, DUE + timedelta(microseconds=1))


def test_rates_without_denominator_are_none_not_zero() -> None:
    assert rates(0, 0, 0) == (None, None)


def test_rates_count_late_and_open_overdue_against_all_judged() -> None:
    overdue, on_time = rates(2, 1, 1)
    assert overdue == pytest.approx(0.5)
    assert on_time == pytest.approx(0.5)
    assert rates(3, 0, 0) == (0.0, 1.0)


def test_compute_unit_kpis_per_unit() -> None:
    now = DUE + timedelta(days=1)
    states = [
        dossier("COMPLETED", completed_at=DUE, dossier_id="a"),
        dossier("COMPLETED", completed_at=DUE + timedelta(hours=1), dossier_id="b"),
        dossier("IN_PROGRESS", dossier_id="c"),  # overdue at now
        dossier("RECEIVED", due_at=now + timedelta(days=1), dossier_id="d"),  # not yet
        dossier("RETURNED", dossier_id="e"),
        dossier("CANCELLED", dossier_id="f", unit="U2"),
    ]
    got = compute_unit_kpis(states, now)
    assert got["U1"] == UnitKpis(
        unit_code="U1",
        received=5,
        completed=2,
        completed_on_time=1,
        completed_late=1,
        open_overdue=1,
        overdue_rate=pytest.approx(2 / 3),  # type: ignore[arg-type]
        on_time_rate=pytest.approx(1 / 3),  # type: ignore[arg-type]
    )
    # only a cancelled dossier: received, but nothing to judge a rate by
    assert got["U2"] == UnitKpis("U2", 1, 0, 0, 0, 0, None, None)
    assert list(got) == ["U1", "U2"]


def test_compute_unit_kpis_open_overdue_moves_with_now() -> None:
    states = [dossier("IN_PROGRESS")]
    assert compute_unit_kpis(states, DUE - timedelta(days=1))["U1"].open_overdue == 0
    later = compute_unit_kpis(states, DUE + timedelta(days=1))["U1"]
    assert later.open_overdue == 1
    assert later.overdue_rate == 1.0
    assert later.on_time_rate == 0.0


def test_compute_unit_kpis_of_nothing_is_empty() -> None:
    assert compute_unit_kpis([], T0) == {}
