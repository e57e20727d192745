"""Dates and times as Vietnamese source systems send them, to aware UTC.

Accepted, in order of precedence:
- ISO 8601 (``2025-02-13T10:15:00+07:00``, ``...Z``, space separator, date only);
- ``dd/mm/yyyy`` and ``dd/mm/yyyy HH:MM[:SS]`` — day first, always: Vietnamese forms never
  write month first, so ``02/03/2025`` is 2 March and ``02/13/2025`` is an error, not a
  guess; ``-`` and ``.`` separators are accepted too;
- a plain number: epoch milliseconds from 1e11 (1973-03-03 in ms; the same number in
  seconds would be the year 5138), epoch seconds from 1e9 (2001-09-09) below that, and an
  Excel serial day number (1900 date system) below 1e6. Numbers in between are ambiguous
  and rejected rather than guessed.

Anything without an offset is local time in Asia/Ho_Chi_Minh and is flagged
``naive_time_assumed_local``. A value more than one day after ``now`` is rejected as
``far_future_timestamp``: clocks on source servers drift by minutes, not days, so such a
value is a typing or format error (often mm/dd read as dd/mm upstream). Deadlines are
legitimately in the future: callers pass ``future_tolerance=None`` for them.

Functions are pure: the caller passes ``now``, so replays give the same answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = [
    "FAR_FUTURE_TOLERANCE",
    "LOCAL_TZ",
    "ParsedDate",
    "ParsedTime",
    "TimeRejection",
    "parse_date",
    "parse_timestamp",
    "parse_timestamp_text",
    "to_ms",
]

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
FAR_FUTURE_TOLERANCE = timedelta(days=1)

_DAY_FIRST = re.compile(
    r"(?P<d>\d{1,2})(?P<sep>[/.-])(?P<m>\d{1,2})(?P=sep)(?P<y>\d{4})"
    r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?)?"
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ].+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

_EPOCH_MS_FROM = 10**11
_EPOCH_S_FROM = 10**9
_EXCEL_BELOW = 10**6
# Excel's day 0 is 1899-12-30 once its fictitious 1900-02-29 is accounted for; serials
# before 61 (January and February 1900) are not dossier dates anyway.
_EXCEL_EPOCH = datetime(1899, 12, 30)
_EXCEL_FIRST_VALID = 61
_END_OF_DAY = time(23, 59, 59, 999000)


@dataclass(frozen=True, slots=True)
class ParsedTime:
    value: datetime  # aware, UTC
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedDate:
    value: date
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TimeRejection:
    reason: str  # invalid_timestamp | far_future_timestamp | invalid_date
    detail: str


def _local(naive: datetime) -> datetime:
    return naive.replace(tzinfo=LOCAL_TZ).astimezone(UTC)


def _from_day_first(match: re.Match[str], end_of_day: bool) -> ParsedTime:
    day = date(int(match["y"]), int(match["m"]), int(match["d"]))  # ValueError if impossible
    flags = ["naive_time_assumed_local"]
    if match["H"] is None:
        moment = datetime.combine(day, _END_OF_DAY if end_of_day else time())
        flags.append("date_only_end_of_day" if end_of_day else "date_only_start_of_day")
    else:
        moment = datetime.combine(day, time(int(match["H"]), int(match["M"]), int(match["S"] or 0)))
    return ParsedTime(_local(moment), tuple(flags))


def _from_iso(text: str, end_of_day: bool) -> ParsedTime:
    if _ISO_DATE.fullmatch(text):
        day = date.fromisoformat(text)
        moment = datetime.combine(day, _END_OF_DAY if end_of_day else time())
        flag = "date_only_end_of_day" if end_of_day else "date_only_start_of_day"
        return ParsedTime(_local(moment), ("naive_time_assumed_local", flag))
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return ParsedTime(_local(parsed), ("naive_time_assumed_local",))
    return ParsedTime(parsed.astimezone(UTC))


def _from_number(text: str) -> ParsedTime | TimeRejection:
    number = float(text)
    if "." not in text and number >= _EPOCH_MS_FROM:
        if number >= 10**14:  # past the year 5138 even in milliseconds
            return TimeRejection("invalid_timestamp", "number too large for epoch milliseconds")
        return ParsedTime(datetime.fromtimestamp(int(text) / 1000, UTC), ("epoch_millis",))
    if "." not in text and number >= _EPOCH_S_FROM:
        return ParsedTime(datetime.fromtimestamp(int(text), UTC), ("epoch_seconds",))
    if _EXCEL_FIRST_VALID <= number < _EXCEL_BELOW:
        # Excel stores local wall-clock time; rounding to the millisecond drops float noise
        # (0.1 of a day is not exact in binary).
        moment = _EXCEL_EPOCH + timedelta(milliseconds=round(number * 86_400_000))
        return ParsedTime(_local(moment), ("excel_serial_date", "naive_time_assumed_local"))
    return TimeRejection(
        "invalid_timestamp", "number is neither epoch seconds/ms nor an Excel date"
    )


# The same strings come back on every version of a record (a received_at, a deadline) and
# across records (a date-only due date): the pure parse is cached, and only the check
# against ``now`` runs per call. Values stay in this process's memory only.
_CACHE_SIZE = 1 << 14


@lru_cache(maxsize=_CACHE_SIZE)
def parse_timestamp_text(value: str, end_of_day: bool = False) -> ParsedTime | TimeRejection:
    """``parse_timestamp`` of a string without the far-future check (it depends on ``now``).

    For hot paths that compare with ``now`` themselves; cached, so ``value`` must be a str.
    """
    text = value.strip()
    try:
        if match := _DAY_FIRST.fullmatch(text):
            return _from_day_first(match, end_of_day)
        if _ISO_DATE.fullmatch(text) or _ISO_DATETIME.fullmatch(text):
            return _from_iso(text, end_of_day)
        if _NUMBER.fullmatch(text):
            return _from_number(text)
    except (ValueError, OverflowError, OSError) as exc:
        return TimeRejection("invalid_timestamp", f"impossible date/time {text!r}: {exc}")
    return TimeRejection("invalid_timestamp", f"unrecognized date/time format: {text!r}")


def parse_timestamp(
    value: str,
    *,
    now: datetime,
    end_of_day: bool = False,
    future_tolerance: timedelta | None = FAR_FUTURE_TOLERANCE,
) -> ParsedTime | TimeRejection:
    """Read ``value`` as an instant.

    ``end_of_day`` places a date-only value at 23:59:59.999 local (for deadlines: "due
    20/03/2025" means by the end of that day). Values later than ``now + future_tolerance``
    are rejected; ``None`` disables the check (deadlines).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")  # a caller bug, not bad data
    if not isinstance(value, str):
        return TimeRejection("invalid_timestamp", f"expected a string, got {type(value).__name__}")
    result = parse_timestamp_text(value, end_of_day)
    if (
        future_tolerance is not None
        and type(result) is ParsedTime
        and result.value > now + future_tolerance
    ):
        return TimeRejection(
            "far_future_timestamp",
            f"{value.strip()!r} is {result.value.isoformat()}, "
            f"more than {future_tolerance} after {now.isoformat()}",
        )
    return result


def parse_date(value: str) -> ParsedDate | TimeRejection:
    """Read a calendar date (e.g. a birth date): ISO ``yyyy-mm-dd`` or ``dd/mm/yyyy``."""
    if not isinstance(value, str):
        return TimeRejection("invalid_date", f"expected a string, got {type(value).__name__}")
    return _parse_date_text(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _parse_date_text(value: str) -> ParsedDate | TimeRejection:
    text = value.strip()
    try:
        if _ISO_DATE.fullmatch(text):
            return ParsedDate(date.fromisoformat(text))
        match = _DAY_FIRST.fullmatch(text)
        if match and match["H"] is None:
            return ParsedDate(date(int(match["y"]), int(match["m"]), int(match["d"])))
    except ValueError as exc:
        # Birth dates are personal data: details never repeat the value.
        return TimeRejection("invalid_date", f"impossible date: {exc}")
    return TimeRejection(
        "invalid_date", "unrecognized date format (expected yyyy-mm-dd or dd/mm/yyyy)"
    )


_FAR = datetime(9999, 1, 1, tzinfo=UTC)
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?")


def to_ms(value: object) -> int | None:
    """Epoch milliseconds of a time in any of the accepted forms; None if unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=LOCAL_TZ)
        return int(moment.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if match := _COMPACT.fullmatch(text):
        y, mo, d, h, mi, s = (int(g or 0) for g in match.groups())
        try:
            return int(datetime(y, mo, d, h, mi, s, tzinfo=LOCAL_TZ).timestamp() * 1000)
        except ValueError:
            return None
    parsed = parse_timestamp(text, now=_FAR, future_tolerance=None)
    if isinstance(parsed, ParsedTime):
        return int(parsed.value.timestamp() * 1000)
    return None
