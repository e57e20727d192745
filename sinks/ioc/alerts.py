"""Alerts in the IOC store: a capped stream, the open set, and a pub/sub channel.

Keys (all in the ``{alerts}`` slot)::

    ioc:{alerts}:stream           STREAM  alerts as they arrived, XADD MAXLEN ~ cap
    ioc:{alerts}:open             HASH    alert_id -> JSON of its latest RAISED/UPDATED
    ioc:{alerts}:seen:ALERT_ID    HASH    "STATE:ts_ms" of alerts already appended,
                                          _last = ordering key of the newest; expires
                                          after the dedup window
    channel ioc:alerts            PUBLISH JSON of every newly appended alert

An alert is appended (and published) once per (alert_id, state, ts_ms); the open
hash follows only the newest transition of each alert, so a late, older UPDATED
cannot reopen a RESOLVED alert. The cap is approximate (``~``): Redis trims whole
stream nodes, so the stream holds at least the cap and at most about one node
(100 entries) more; that keeps XADD O(1).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from redis.commands.core import Script

from sinks.ioc.codec import LUA_BYTES_LT, ScriptCall, epoch_ms, field_text, sortable

__all__ = [
    "ALERT_CHANNEL",
    "ALERT_LUA",
    "ALERT_STREAM_KEY",
    "OPEN_ALERTS_KEY",
    "alert_seen_key",
    "is_alert",
    "plan_alert",
]

ALERT_CHANNEL = "ioc:alerts"
ALERT_STREAM_KEY = "ioc:{alerts}:stream"
OPEN_ALERTS_KEY = "ioc:{alerts}:open"

_ALERT_FIELDS = (
    "alert_id",
    "rule",
    "state",
    "severity",
    "dataset",
    "unit_code",
    "value",
    "threshold",
    "window_days",
    "window_start",
    "window_end",
    "evidence",
    "message",
    "ts_ms",
)
# Equal timestamps: a resolution outranks an update, an update a raise.
_STATE_RANK = {"RAISED": "0", "UPDATED": "1", "RESOLVED": "2"}

# KEYS: stream, open alerts, seen.  ARGV: seen field, order key, alert_id, json,
# maxlen, seen ttl ms, channel, state, then stream field/value pairs.
ALERT_LUA = (
    LUA_BYTES_LT
    + """
if redis.call('HSETNX', KEYS[3], ARGV[1], '1') == 0 then return 0 end
local last = redis.call('HGET', KEYS[3], '_last')
if (not last) or bytes_lt(last, ARGV[2]) then
  redis.call('HSET', KEYS[3], '_last', ARGV[2])
  if ARGV[8] == 'RESOLVED' then
    redis.call('HDEL', KEYS[2], ARGV[3])
  else
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  end
end
redis.call('PEXPIRE', KEYS[3], ARGV[6])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 9))
redis.call('PUBLISH', ARGV[7], ARGV[4])
return 1
"""
)


def alert_seen_key(alert_id: str) -> str:
    return f"ioc:{{alerts}}:seen:{alert_id}"


def is_alert(value: Mapping[str, Any]) -> bool:
    return "alert_id" in value and "rule" in value


def plan_alert(
    script: Script, alert: Mapping[str, Any], *, maxlen: str, dedup_ttl_ms: str, channel: str
) -> ScriptCall:
    """The script call that appends one alert transition (idempotent)."""
    state: str = alert["state"]
    ts_ms = epoch_ms(alert["ts_ms"])
    public = {name: alert[name] for name in _ALERT_FIELDS}
    as_json = field_text(
        {k: epoch_ms(v) if isinstance(v, datetime) else v for k, v in public.items()}
    )
    stream_fields = [item for name in _ALERT_FIELDS for item in (name, field_text(public[name]))]
    alert_id = str(alert["alert_id"])
    return ScriptCall(
        script,
        (ALERT_STREAM_KEY, OPEN_ALERTS_KEY, alert_seen_key(alert_id)),
        (
            f"{state}:{ts_ms}",
            sortable(ts_ms) + _STATE_RANK[state],
            alert_id,
            as_json,
            maxlen,
            dedup_ttl_ms,
            channel,
            state,
            *stream_fields,
        ),
    )
