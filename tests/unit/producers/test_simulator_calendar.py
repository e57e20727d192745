"""The live feed's calendar: weekends and holidays get fewer dossiers, never none."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from producers.simulators import (
    HOLIDAY_SHARE,
    WEEKEND_SHARE,
    DossierSpec,
    day_share,
    dossiers_per_unit_on,
    generate_dossiers,
)
from schemas.domain.reference import load_reference

SUNDAY = date(2026, 12, 6)
TET = date(2026, 2, 17)  # Lunar New Year, a Tuesday
WEDNESDAY = date(2026, 12, 9)


@pytest.mark.parametrize(
    ("day", "share"),
    [
        (WEDNESDAY, 1.0),
        (SUNDAY, WEEKEND_SHARE),
        (date(2026, 12, 5), WEEKEND_SHARE),  # a Saturday
        (TET, HOLIDAY_SHARE),
        (date(2026, 9, 2), HOLIDAY_SHARE),  # National Day, a Wednesday
    ],
)
def test_the_share_of_a_working_day_by_calendar(day: date, share: float) -> None:
    assert day_share(day) == share


def test_weekends_and_holidays_have_fewer_dossiers_not_none() -> None:
    working = dossiers_per_unit_on(WEDNESDAY, 3.0)
    assert working == 3.0
    for day in (SUNDAY, TET):
        rate = dossiers_per_unit_on(day, 3.0)
        assert 0 < rate < working, day
    assert dossiers_per_unit_on(TET, 3.0) < dossiers_per_unit_on(SUNDAY, 3.0)


@pytest.mark.parametrize("day", [SUNDAY, TET])
def test_a_sunday_or_tet_generates_dossiers(day: date) -> None:
    """`generate_dossiers` for that one day (as the live feed calls it) is not empty, and smaller
    than a working day's."""
    ref = load_reference()

    def one_day(d: date) -> int:
        end = datetime(d.year, d.month, d.day, 10, 0, tzinfo=UTC)  # 17:00 local
        return len(
            generate_dossiers(DossierSpec(days=0, dossiers_per_unit_per_day=3.0, end=end), ref)
        )

    assert 0 < one_day(day) < one_day(WEDNESDAY)
