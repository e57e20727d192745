"""Vietnamese working days: weekends and public holidays (Tết included) skipped."""

from __future__ import annotations

from datetime import date

import pytest

from schemas.domain.working_days import (
    _calendar,
    add_working_days,
    is_working_day,
    warm_up,
    working_days_between,
)


def test_weekend_and_holidays_are_not_working_days() -> None:
    assert is_working_day(date(2025, 8, 4))  # a Monday
    assert not is_working_day(date(2025, 8, 2))  # Saturday
    assert not is_working_day(date(2025, 8, 3))  # Sunday
    assert not is_working_day(date(2025, 4, 30))  # Reunification Day
    assert not is_working_day(date(2025, 9, 2))  # National Day
    assert not is_working_day(date(2025, 1, 29))  # Tết (lunar new year 2025)


def test_friday_plus_one_is_monday() -> None:
    assert add_working_days(date(2025, 8, 1), 1) == date(2025, 8, 4)


def test_zero_is_the_day_itself_even_on_a_weekend() -> None:
    assert add_working_days(date(2025, 8, 2), 0) == date(2025, 8, 2)


def test_tet_week_is_skipped() -> None:
    # Friday 24/01/2025, then Tết from Monday 27/01 to Saturday 01/02: the next working
    # day is Monday 03/02.
    assert add_working_days(date(2025, 1, 24), 1) == date(2025, 2, 3)


def test_30_4_and_1_5_are_skipped() -> None:
    # 2025: Wed 30/04, Thu 01/05 and the swapped day Fri 02/05 are off.
    assert add_working_days(date(2025, 4, 29), 1) == date(2025, 5, 5)


def test_negative_counts_go_backwards() -> None:
    assert add_working_days(date(2025, 8, 4), -1) == date(2025, 8, 1)


@pytest.mark.parametrize("n", [0, 1, 3, 5, 10, 22])
@pytest.mark.parametrize("start", [date(2025, 1, 20), date(2025, 4, 28), date(2025, 8, 29)])
def test_between_inverts_add(start: date, n: int) -> None:
    assert working_days_between(start, add_working_days(start, n)) == n
    assert working_days_between(add_working_days(start, n), start) == -n


def test_warm_up_fills_the_years_around_a_day() -> None:
    warm_up(date(2031, 6, 1))
    calendar = _calendar()
    assert {2030, 2031, 2032} <= set(calendar.years)
    assert not is_working_day(date(2031, 9, 2)), "National Day, from the warmed year"
