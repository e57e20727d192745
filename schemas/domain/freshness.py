"""Is a dataset "live"? Its last delivery measured against the catalog's obligation.

- ``realtime`` within N minutes: live while the newest event was received at most N
  minutes ago (a realtime source that stays silent longer is no longer live);
- ``daily`` by HH:MM (Asia/Ho_Chi_Minh): a delivery is due every day by HH:MM; the
  dataset is live while something was received in the 24 hours before the most
  recent deadline, or since that deadline.

Pure functions on epoch milliseconds, shared by the quality scores and the
``dataset_silent`` alert rule.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schemas.catalog import UpdateObligation

__all__ = ["is_live", "last_deadline_ms", "silence_allowed_ms"]

_LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
_DAY_MS = 86_400_000


def last_deadline_ms(by_local_time: str, now_ms: int) -> int:
    """The most recent HH:MM local deadline at or before ``now_ms``."""
    hours, minutes = (int(p) for p in by_local_time.split(":"))
    now_local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(_LOCAL)
    deadline = datetime.combine(now_local.date(), time(hours, minutes), tzinfo=_LOCAL)
    if deadline > now_local:
        deadline -= timedelta(days=1)
    return int(deadline.timestamp() * 1000)


def silence_allowed_ms(update: UpdateObligation, now_ms: int) -> int:
    """How long before ``now_ms`` the newest delivery may lie for the dataset to be live."""
    if update.kind == "daily":
        assert update.by_local_time is not None
        # Received within the day that ended at the last deadline, or since it.
        return now_ms - last_deadline_ms(update.by_local_time, now_ms) + _DAY_MS
    assert update.within_minutes is not None
    return update.within_minutes * 60_000


def is_live(update: UpdateObligation, last_seen_ms: int, now_ms: int) -> bool:
    """``last_seen_ms`` 0 means nothing was ever received: not live."""
    if last_seen_ms <= 0:
        return False
    return now_ms - last_seen_ms <= silence_allowed_ms(update, now_ms)
