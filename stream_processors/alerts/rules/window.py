"""Bounded, order-independent windowed state shared by the alert rule groups.

Times are epoch milliseconds. Days are *local* calendar days (Asia/Ho_Chi_Minh is UTC+7
all year, no daylight saving), numbered from the epoch, so a day bucket is one integer.

``DeadlineBuckets`` is the state of anything that is either *open with a deadline* or
*done on time / late* (dossiers, citizen reports). Open items are counted per deadline
hour, finished ones per finishing day; deadline hours older than the window fold into
one ``old`` count and finishing days older than the window are dropped, so the state
never grows with the number of entities. Counts are added and taken away exactly (a
count is deleted only at 0, never below), so the same deltas in any order give the
same state; pruning depends only on the watermark, the newest event time seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "LOCAL_OFFSET_MS",
    "day_of",
    "day_start_ms",
    "deadline_apply",
    "deadline_counts",
    "local_date",
    "local_day",
    "new_deadline_state",
]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LOCAL_OFFSET_MS = 7 * HOUR_MS  # Asia/Ho_Chi_Minh
_EPOCH = date(1970, 1, 1)


def local_day(ms: int) -> int:
    """The local calendar day of an instant, as days since 1970-01-01."""
    return (ms + LOCAL_OFFSET_MS) // DAY_MS


def day_start_ms(day: int) -> int:
    """Local midnight starting ``day``."""
    return day * DAY_MS - LOCAL_OFFSET_MS


def local_date(ms: int) -> date:
    return _EPOCH + timedelta(days=local_day(ms))


def day_of(day: date) -> int:
    """A local calendar date as days since 1970-01-01."""
    return (day - _EPOCH).days


def _bump(counts: dict[str, int], key: str, by: int) -> None:
    value = counts.get(key, 0) + by
    if value == 0:
        counts.pop(key, None)
    else:
        counts[key] = value


def new_deadline_state() -> dict[str, Any]:
    return {"done": {}, "open": {}, "old": 0, "wm": 0}


def deadline_apply(
    state: Mapping[str, Any] | None, deltas: Iterable[Mapping[str, Any]], window_days: int
) -> dict[str, Any]:
    """Fold ``{"sign", "payload", "event_ms"}`` deltas into a new state dict.

    Payloads: ``{"k": "open", "due_h": deadline hour}`` or ``{"k": "on_time" | "late",
    "day": local finishing day}``; anything else is ignored.
    """
    base = state or new_deadline_state()
    done: dict[str, list[int]] = {k: list(v) for k, v in base["done"].items()}
    open_: dict[str, int] = dict(base["open"])
    old = int(base["old"])
    wm = int(base["wm"])
    items = list(deltas)
    for delta in items:
        wm = max(wm, int(delta.get("event_ms") or 0))
    oldest_day = local_day(wm) - window_days + 1
    oldest_hour = day_start_ms(oldest_day) // HOUR_MS
    for delta in items:
        sign = int(delta["sign"])
        payload = delta["payload"]
        kind = payload.get("k")
        if kind == "open":
            hour = int(payload["due_h"])
            if hour < oldest_hour:
                old += sign
            else:
                _bump(open_, str(hour), sign)
        elif kind in ("on_time", "late"):
            day = int(payload["day"])
            if day < oldest_day:
                continue  # outside every window from now on
            pair = done.setdefault(str(day), [0, 0])
            pair[0 if kind == "on_time" else 1] += sign
            if pair == [0, 0]:
                del done[str(day)]
    for past in [h for h in open_ if int(h) < oldest_hour]:
        old += open_.pop(past)
    done = {d: v for d, v in done.items() if int(d) >= oldest_day}
    return {"done": done, "open": open_, "old": old, "wm": wm}


def deadline_counts(
    state: Mapping[str, Any], now_ms: int, window_days: int
) -> tuple[int, int, int, int]:
    """(finished on time, finished late, open past deadline, open not yet due) at
    ``now_ms``; finished ones over the ``window_days`` local days ending today. An open
    item is past its deadline once the whole deadline hour has passed."""
    today = local_day(now_ms)
    first = today - window_days + 1
    on_time = late = 0
    for day, (ok, lt) in state["done"].items():
        if first <= int(day) <= today:
            on_time += ok
            late += lt
    overdue = int(state["old"])
    pending = 0
    for hour, n in state["open"].items():
        if (int(hour) + 1) * HOUR_MS <= now_ms:
            overdue += n
        else:
            pending += n
    return on_time, late, max(overdue, 0), max(pending, 0)
