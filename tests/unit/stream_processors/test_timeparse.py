"""Dates and times as source systems send them, to aware UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from schemas.domain.timeparse import (
    ParsedDate,
    ParsedTime,
    TimeRejection,
    parse_date,
    parse_timestamp,
)

NOW = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)  # 10:00 in Hà Nội


def ok(value: str, **kwargs: object) -> ParsedTime:
    result = parse_timestamp(value, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, ParsedTime), result
    assert result.value.tzinfo is UTC
    return result


def rejected(value: str, **kwargs: object) -> TimeRejection:
    result = parse_timestamp(value, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, TimeRejection), result
    return result


@pytest.mark.parametrize(
    "value",
    [
        "2025-02-13T10:15:00+07:00",
        "2025-02-13T03:15:00Z",
        "2025-02-13T03:15:00+00:00",
        "2025-02-13 10:15:00+07:00",
        "2025-02-13T12:15:00+09:00",
    ],
)
def test_iso_with_offset(value: str) -> None:
    result = ok(value)
    assert result.value == datetime(2025, 2, 13, 3, 15, tzinfo=UTC)
    assert result.flags == ()


@pytest.mark.parametrize("value", ["2025-02-13T10:15:00", "2025-02-13 10:15", " 2025-02-13T10:15 "])
def test_naive_iso_is_hanoi_time(value: str) -> None:
    result = ok(value)
    assert result.value == datetime(2025, 2, 13, 3, 15, tzinfo=UTC)  # 10:15 +07:00
    assert result.flags == ("naive_time_assumed_local",)


def test_naive_iso_keeps_milliseconds() -> None:
    assert ok("2025-02-13T10:15:00.123").value.microsecond == 123_000


def test_day_first_date() -> None:
    result = ok("13/02/2025")
    assert result.value == datetime(2025, 2, 12, 17, 0, tzinfo=UTC)  # midnight +07:00
    assert result.flags == ("naive_time_assumed_local", "date_only_start_of_day")


def test_day_first_date_is_never_month_first() -> None:
    assert ok("03/02/2025").value == datetime(2025, 2, 2, 17, 0, tzinfo=UTC)  # 3 February
    assert rejected("02/13/2025").reason == "invalid_timestamp"  # no month 13


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("13/02/2025 08:30", datetime(2025, 2, 13, 1, 30, tzinfo=UTC)),
        ("13/02/2025 08:30:45", datetime(2025, 2, 13, 1, 30, 45, tzinfo=UTC)),
        ("3/2/2025 8:05", datetime(2025, 2, 3, 1, 5, tzinfo=UTC)),
        ("13-02-2025 08:30", datetime(2025, 2, 13, 1, 30, tzinfo=UTC)),
        ("13.02.2025", datetime(2025, 2, 12, 17, 0, tzinfo=UTC)),
    ],
)
def test_day_first_variants(value: str, expected: datetime) -> None:
    result = ok(value)
    assert result.value == expected
    assert "naive_time_assumed_local" in result.flags


@pytest.mark.parametrize(
    "value",
    [
        "31/02/2025",
        "29/02/2025",
        "32/01/2025",
        "13/02/2025 24:00",
        "13/02/2025 10:61",
        "2025-02-30",
    ],
)
def test_impossible_dates_are_rejected(value: str) -> None:
    assert rejected(value).reason == "invalid_timestamp"


def test_leap_day_is_accepted() -> None:
    assert ok("29/02/2024").value == datetime(2024, 2, 28, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", ["", "abc", "13/02/25", "2025/02/13", "13/02/2025 8h30", "-5"])
def test_unrecognized_formats_are_rejected(value: str) -> None:
    assert rejected(value).reason == "invalid_timestamp"


def test_date_only_deadline_means_end_of_day() -> None:
    result = ok("20/02/2025", end_of_day=True)
    assert result.value == datetime(2025, 2, 20, 16, 59, 59, 999_000, tzinfo=UTC)
    assert "date_only_end_of_day" in result.flags
    assert ok("2025-02-20", end_of_day=True).value == result.value


def test_epoch_seconds_and_millis_by_magnitude() -> None:
    seconds = ok("1739416500")
    millis = ok("1739416500000")
    assert seconds.value == millis.value == datetime(2025, 2, 13, 3, 15, tzinfo=UTC)
    assert seconds.flags == ("epoch_seconds",)
    assert millis.flags == ("epoch_millis",)
    assert ok("1739416500123").value.microsecond == 123_000


@pytest.mark.parametrize("value", ["5000000", "123456789", "100000000000000"])
def test_ambiguous_or_huge_numbers_are_rejected(value: str) -> None:
    assert rejected(value).reason == "invalid_timestamp"


def test_excel_serial_is_local_wall_clock() -> None:
    result = ok("45701.5")  # 2025-02-13 12:00 in the workbook
    assert result.value == datetime(2025, 2, 13, 5, 0, tzinfo=UTC)
    assert result.flags == ("excel_serial_date", "naive_time_assumed_local")
    assert ok("45701").value == datetime(2025, 2, 12, 17, 0, tzinfo=UTC)


def test_far_future_is_rejected() -> None:
    too_late = (NOW + timedelta(days=1, minutes=1)).isoformat()
    assert rejected(too_late).reason == "far_future_timestamp"
    assert rejected("03/03/2025 11:00").reason == "far_future_timestamp"


def test_slightly_future_is_accepted() -> None:
    assert ok((NOW + timedelta(hours=23)).isoformat()).value == NOW + timedelta(hours=23)


def test_future_check_can_be_disabled_for_deadlines() -> None:
    assert ok("31/12/2025", end_of_day=True, future_tolerance=None).value.year == 2025


def test_naive_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_timestamp("2025-02-13", now=datetime(2025, 3, 1))


def test_non_string_is_rejected_not_raised() -> None:
    result = parse_timestamp(1739416500, now=NOW)  # type: ignore[arg-type]
    assert isinstance(result, TimeRejection)


@pytest.mark.parametrize("value", ["1990-06-15", "15/06/1990", "15-06-1990", " 15/6/1990 "])
def test_parse_date(value: str) -> None:
    assert parse_date(value) == ParsedDate(date(1990, 6, 15))


@pytest.mark.parametrize(
    "value", ["31/02/1990", "06/31/1990", "1990-02-30", "15/06/1990 08:00", "sometime"]
)
def test_parse_date_rejects(value: str) -> None:
    result = parse_date(value)
    assert isinstance(result, TimeRejection)
    assert result.reason == "invalid_date"
    assert value.strip() not in result.detail  # birth dates are personal data
