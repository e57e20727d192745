"""Working days in Vietnam: Monday to Friday, except public holidays (Tết included).

Deadlines of dossiers and citizen reports count working days (docs/domain.md). The holiday
calendar is the ``holidays`` package's ``VN`` one, which carries the lunar holidays
(Tết, Hùng Kings' day) and the fixed ones (30/4, 1/5, 2/9) with their observed days.
Dates here are local calendar dates (Asia/Ho_Chi_Minh); converting an instant to its
local date is the caller's job.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache

import holidays

__all__ = ["add_working_days", "is_working_day", "warm_up", "working_days_between"]


@cache
def _calendar() -> holidays.HolidayBase:
    # Built once per process; the package fills in years lazily as they are asked for.
    return holidays.country_holidays("VN")


def warm_up(around: date) -> None:
    """Build the calendar and the years around ``around`` now. The package imports its
    country module and computes a year on first use; in the processor that first use is
    an alert evaluation, which would hold the GIL (from the batch loop) while it lasts."""
    calendar = _calendar()
    for year in range(around.year - 1, around.year + 2):
        _ = date(year, 1, 1) in calendar  # populates the year


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _calendar()


def add_working_days(start: date, n: int) -> date:
    """The ``n``-th working day after ``start`` (``n`` = 0: ``start`` itself; negative: before).

    ``add_working_days(friday, 1)`` is the next Monday (if it is no holiday).
    """
    day = start
    step = 1 if n >= 0 else -1
    remaining = abs(n)
    while remaining > 0:
        day += timedelta(days=step)
        if is_working_day(day):
            remaining -= 1
    return day


def working_days_between(start: date, end: date) -> int:
    """Working days in ``(start, end]``; negative (the count in ``(end, start]``) when
    ``end`` is before ``start``. ``working_days_between(d, add_working_days(d, n)) == n``."""
    if end < start:
        return -working_days_between(end, start)
    count = 0
    day = start
    while day < end:
        day += timedelta(days=1)
        if is_working_day(day):
            count += 1
    return count
