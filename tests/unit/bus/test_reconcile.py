"""Pure reconciliation: declared vs received vs dead-lettered, per dataset, unit and day."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bus.errors import ValidationError
from bus.settings import load_settings
from producers.declarations import declare
from schemas.domain.delivery import Key, ReconRow, latest_declarations, local_day, reconcile

DS = "health.encounters"
D1 = date(2026, 11, 20)
D2 = date(2026, 11, 21)


def k(unit: str, day: date = D1, dataset: str = DS) -> Key:
    return (dataset, unit, day)


def test_each_status() -> None:
    declared = {k("A"): 5, k("B"): 5, k("C"): 5}
    received = {k("A"): 5, k("B"): 3, k("C"): 7, k("D"): 2}
    dead = {k("A"): 1, k("D"): 2}
    rows = {r.unit: r for r in reconcile(declared, received, dead)}
    assert rows["A"] == ReconRow(DS, "A", D1, 5, 5, 1, 0, "ok")
    assert rows["B"] == ReconRow(DS, "B", D1, 5, 3, 0, 2, "missing")
    assert rows["C"] == ReconRow(DS, "C", D1, 5, 7, 0, -2, "extra")
    assert rows["D"] == ReconRow(DS, "D", D1, None, 2, 2, None, "undeclared")


def test_declared_but_nothing_arrived() -> None:
    [row] = reconcile({k("A"): 4}, {}, {})
    assert (row.declared, row.received, row.dead_lettered, row.missing, row.status) == (
        4,
        0,
        0,
        4,
        "missing",
    )


def test_declared_zero_and_nothing_arrived_is_ok() -> None:
    [row] = reconcile({k("A"): 0}, {}, {})
    assert row.status == "ok" and row.missing == 0


def test_only_dead_lettered_is_undeclared_with_declared_none() -> None:
    [row] = reconcile({}, {}, {k("A"): 3})
    assert row.declared is None and row.missing is None
    assert (row.received, row.dead_lettered, row.status) == (0, 3, "undeclared")


def test_rows_sorted_by_dataset_unit_day() -> None:
    keys = [k("B", D2), k("A", D2), k("B", D1), k("A", D1, "education.schools")]
    rows = reconcile({}, dict.fromkeys(keys, 1), {})
    assert [(r.dataset, r.unit, r.day) for r in rows] == [
        ("education.schools", "A", D1),
        (DS, "A", D2),
        (DS, "B", D1),
        (DS, "B", D2),
    ]


def test_corrected_declaration_replaces_earlier_one() -> None:
    records = [
        {"dataset": DS, "unit": "A", "day": D1, "count": 10},
        {"dataset": DS, "unit": "B", "day": D1, "count": 4},
        {"dataset": DS, "unit": "A", "day": D1, "count": 7},  # the correction
    ]
    declared = latest_declarations(records)
    assert declared == {k("A"): 7, k("B"): 4}
    [a, b] = reconcile(declared, {k("A"): 7, k("B"): 4}, {})
    assert a.status == b.status == "ok"


def test_local_day_is_ho_chi_minh() -> None:
    # 17:30 UTC is 00:30 the next day in UTC+7.
    assert local_day(datetime(2026, 11, 20, 17, 30, tzinfo=UTC)) == D2
    assert local_day(datetime(2026, 11, 20, 16, 59, tzinfo=UTC)) == D1


@pytest.mark.parametrize(
    ("dataset", "unit", "count", "message"),
    [
        ("no.such.dataset", "A", 1, "unknown dataset"),
        (DS, "", 1, "sending unit"),
        (DS, "A|B", 1, "must not contain"),
        (DS, "A", -1, ">= 0"),
    ],
)
def test_declare_refuses_before_sending(dataset: str, unit: str, count: int, message: str) -> None:
    # Validation happens before any connection: no servers are configured here.
    settings = load_settings(kafka={"bootstrap_servers": None}, schema_registry={"url": None})
    with pytest.raises(ValidationError, match=message):
        declare(settings, dataset, unit, D1, count, source_system="test")
