"""How the IOC store turns event values into Redis strings, and what every script shares.

- versions become fixed-width strings (:func:`sortable`), so Lua compares them
  bytewise instead of as doubles (exact only to 2**53);
- datetimes become epoch milliseconds, dates ISO days, lists and maps compact JSON;
- a planned script call (:class:`ScriptCall`) names the keys it touches, so the
  Redis Cluster slot rule can be checked before anything is sent;
- Redis errors map to :class:`bus.errors.SinkError` with the right ``retriable``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import redis.exceptions as rex
from redis.commands.core import Script

from bus.errors import SinkError

__all__ = [
    "LOCAL_TZ",
    "LUA_BYTES_LT",
    "RETRIABLE",
    "ScriptCall",
    "ceil_epoch_ms",
    "epoch_ms",
    "field_text",
    "local_day",
    "sink_error",
    "sortable",
    "text",
]

# Vietnam keeps UTC+7 all year (no daylight saving): days are local days.
LOCAL_TZ = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_RETRIABLE: tuple[type[Exception], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.TryAgainError,
    rex.ClusterDownError,
    rex.MasterDownError,
    rex.BusyLoadingError,
    rex.OutOfMemoryError,
)
_NEVER_RETRIABLE: tuple[type[Exception], ...] = (
    rex.AuthenticationError,
    rex.AuthorizationError,
    rex.NoPermissionError,
)

# Lua compares strings with strcoll (locale-dependent); versions and event ids
# must compare bytewise so Python's reference and Redis agree on every host.
LUA_BYTES_LT = """
local function bytes_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
"""


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One EVALSHA: every key it touches is in ``keys`` (one hash slot)."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[str, ...]


def epoch_ms(value: datetime) -> int:
    # naive datetimes raise TypeError here: std events are UTC-aware by contract
    return (value - _EPOCH) // _MS


def ceil_epoch_ms(value: datetime) -> int:
    return -((_EPOCH - value) // _MS)


def local_day(value: datetime) -> str:
    """The Asia/Ho_Chi_Minh calendar day of an aware instant, ``YYYY-MM-DD``."""
    if value.tzinfo is None:
        raise TypeError("naive datetime: std events carry aware times")
    return value.astimezone(LOCAL_TZ).date().isoformat()


def sortable(n: int) -> str:
    """Fixed-width decimal of a signed 64-bit integer; string order = number order."""
    if not -(2**63) <= n < 2**63:
        raise ValueError("version outside the Avro long range")
    return f"{n + 2**63:020d}"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return epoch_ms(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def field_text(value: Any) -> str:
    """A field value as Redis keeps it: datetimes as epoch ms, dates ISO, else text."""
    if isinstance(value, datetime):
        return str(epoch_ms(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(
            _jsonable(value), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )
    return str(value)


RETRIABLE = _RETRIABLE


def sink_error(exc: rex.RedisError, what: str) -> SinkError:
    retriable = isinstance(exc, _RETRIABLE) and not isinstance(exc, _NEVER_RETRIABLE)
    return SinkError(f"ioc_store: {what} failed: {type(exc).__name__}", retriable=retriable)
