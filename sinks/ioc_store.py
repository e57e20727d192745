"""IOC store sink: dossier states, unit KPIs and alerts in Redis.

Key layout (every key starts with ``ioc:``; the ``{...}`` part is a Redis Cluster
hash tag, so all keys one Lua call touches live in one slot)::

    ioc:units                          SET     unit codes that ever received a dossier
                                               (own slot: added beside the scripts, not
                                               in them; SADD is idempotent anyway)
    ioc:{unit:U}:dossier:ID            HASH    latest public fields of dossier ID, plus
                                               _version, _vkey (sortable version),
                                               _event_id, _op, _ts_ms and its KPI
                                               contribution (_c_received, _c_completed,
                                               _c_completed_on_time, _c_completed_late,
                                               _c_due = due ms while open, else "");
                                               after op d only a tombstone remains
                                               (meta fields, zero contribution, _op = d,
                                               or "moved" in a unit it was moved out of)
    ioc:{unit:U}:kpi                   HASH    received, completed, completed_on_time,
                                               completed_late (a field at 0 is removed)
    ioc:{unit:U}:open                  ZSET    open dossier ids scored by due time (ms)
    ioc:{alerts}:stream                STREAM  alerts as they arrived, MAXLEN ~ capped
    ioc:{alerts}:open                  HASH    alert_id -> JSON of its latest RAISED/UPDATED
    ioc:{alerts}:seen:ALERT_ID         HASH    "STATE:ts_ms" of alerts already appended,
                                               _last = ordering key of the newest; expires
                                               after ``alert_dedup_ttl`` (the dedup window)
    channel ioc:alerts                 PUBLISH JSON of every newly appended alert

Personal fields (``applicant_*``) never reach Redis: dossier fields are copied
through an allowlist, so a field added to the schema later stays out until
someone decides it is not personal. Dossier ids and unit codes are not personal.

Idempotence, so at-least-once delivery never duplicates or regresses:

- A dossier event is applied by one Lua script that compares ``source.version``
  with the stored one: older is ignored; equal with the same ``event_id`` is a
  replay and ignored; equal with a different ``event_id`` lets the greater id
  win, so every delivery order converges on the same state. The script moves
  the unit's counters by the *difference* between the stored contribution and
  the new one, so a no-op changes nothing. Deletions leave a versioned tombstone
  so an older event replayed later cannot resurrect the dossier.
- When an event moves a dossier to another receiving unit (``before`` names the
  old one), a tombstone at the same version is written in the old unit too.
- Open overdue is *not* stored: a dossier becomes overdue while no one writes.
  :func:`read_unit_kpis` counts the open set's scores below ``now``.
- An alert is appended once per (alert_id, state, ts_ms); the open-alert hash
  follows only the newest transition of each alert, so a late, older UPDATED
  cannot reopen a RESOLVED alert.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.exceptions as rex
from redis.commands.core import Script

from bus.errors import SinkError
from sinks.base import SinkRecord
from sinks.dossier_kpis import NO_CONTRIBUTION, Contribution, UnitKpis, contribution, unit_kpis

__all__ = [
    "ALERT_CHANNEL",
    "ALERT_STREAM_KEY",
    "ALERT_TOPIC",
    "DOSSIER_TOPIC",
    "OPEN_ALERTS_KEY",
    "UNITS_KEY",
    "IocStoreSink",
    "alert_seen_key",
    "dossier_key",
    "kpi_key",
    "open_dossiers_key",
    "read_unit_kpis",
]

log = logging.getLogger(__name__)

DOSSIER_TOPIC = "publicservice.dossiers.std.v1"
ALERT_TOPIC = "alerts.v1"
ALERT_CHANNEL = "ioc:alerts"
UNITS_KEY = "ioc:units"
ALERT_STREAM_KEY = "ioc:{alerts}:stream"
OPEN_ALERTS_KEY = "ioc:{alerts}:open"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# Allowlist, schema order. Anything else in the dossier (applicant_*) is dropped.
_PUBLIC_DOSSIER_FIELDS = (
    "dossier_id",
    "dossier_code",
    "procedure_code",
    "procedure_name",
    "receiving_unit_code",
    "admin_unit_code",
    "admin_unit_code_source",
    "status",
    "channel",
    "received_at",
    "due_at",
    "completed_at",
    "quality_flags",
)
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

_RETRIABLE: tuple[type[Exception], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.TryAgainError,
    rex.ClusterDownError,
    rex.MasterDownError,
)
_NEVER_RETRIABLE: tuple[type[Exception], ...] = (
    rex.AuthenticationError,
    rex.AuthorizationError,
    rex.NoPermissionError,
)

# Lua compares strings with strcoll (locale-dependent); versions and event ids
# must compare bytewise so Python's reference and Redis agree on every host.
_LUA_BYTES_LT = """
local function bytes_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
"""

# KEYS: dossier, kpi, open.  ARGV: vkey, event_id, dossier_id, received, completed,
# on_time, late, due_ms|"", tombstone_ttl_ms ("0" = keep), then field/value pairs.
_DOSSIER_LUA = (
    _LUA_BYTES_LT
    + """
local cur = redis.call('HMGET', KEYS[1], '_vkey', '_event_id', '_c_received',
  '_c_completed', '_c_completed_on_time', '_c_completed_late', '_c_due')
if cur[1] then
  if bytes_lt(ARGV[1], cur[1]) then return 0 end
  if ARGV[1] == cur[1] and not bytes_lt(cur[2] or '', ARGV[2]) then return 0 end
end
local names = {'received', 'completed', 'completed_on_time', 'completed_late'}
for i = 1, 4 do
  local delta = tonumber(ARGV[3 + i]) - tonumber(cur[2 + i] or '0')
  if delta ~= 0 then
    -- zero fields are removed so every delivery order leaves the same hash
    if redis.call('HINCRBY', KEYS[2], names[i], delta) == 0 then
      redis.call('HDEL', KEYS[2], names[i])
    end
  end
end
if ARGV[8] == '' then
  if cur[7] and cur[7] ~= '' then redis.call('ZREM', KEYS[3], ARGV[3]) end
else
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[3])
end
-- replace, not merge: a field that became null must not linger
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_vkey', ARGV[1], '_event_id', ARGV[2],
  '_c_received', ARGV[4], '_c_completed', ARGV[5], '_c_completed_on_time', ARGV[6],
  '_c_completed_late', ARGV[7], '_c_due', ARGV[8], unpack(ARGV, 10))
if ARGV[9] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[9]) end
return 1
"""
)

# KEYS: stream, open alerts, seen.  ARGV: seen field, order key, alert_id, json,
# maxlen, seen ttl ms, channel, state, then stream field/value pairs.
_ALERT_LUA = (
    _LUA_BYTES_LT
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

# KEYS: kpi, open.  ARGV: exclusive upper bound "(ms" for overdue due times.
_READ_LUA = """
local k = redis.call('HMGET', KEYS[1], 'received', 'completed', 'completed_on_time',
  'completed_late')
local overdue = redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1])
return {tonumber(k[1] or '0'), tonumber(k[2] or '0'), tonumber(k[3] or '0'),
  tonumber(k[4] or '0'), overdue}
"""


def dossier_key(unit_code: str, dossier_id: str) -> str:
    # The tag is everything up to the first "}" after "{", so even a unit code
    # holding braces yields one identical tag for all of that unit's keys.
    return f"ioc:{{unit:{unit_code}}}:dossier:{dossier_id}"


def kpi_key(unit_code: str) -> str:
    return f"ioc:{{unit:{unit_code}}}:kpi"


def open_dossiers_key(unit_code: str) -> str:
    return f"ioc:{{unit:{unit_code}}}:open"


def alert_seen_key(alert_id: str) -> str:
    return f"ioc:{{alerts}}:seen:{alert_id}"


def _epoch_ms(value: datetime) -> int:
    # naive datetimes raise TypeError here: std events are UTC-aware by contract
    return (value - _EPOCH) // _MS


def _ceil_epoch_ms(value: datetime) -> int:
    return -((_EPOCH - value) // _MS)


def _sortable(n: int) -> str:
    """Fixed-width decimal of a signed 64-bit integer; string order = number order.

    Lua numbers are doubles, exact only to 2**53; versions may be LSNs or
    nanosecond clocks, so the script compares these strings instead.
    """
    if not -(2**63) <= n < 2**63:
        raise ValueError("version outside the Avro long range")
    return f"{n + 2**63:020d}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field_text(value: Any) -> str:
    if isinstance(value, datetime):
        return str(_epoch_ms(value))
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return str(value)


def _sink_error(exc: rex.RedisError, what: str) -> SinkError:
    retriable = isinstance(exc, _RETRIABLE) and not isinstance(exc, _NEVER_RETRIABLE)
    return SinkError(f"ioc_store: {what} failed: {type(exc).__name__}", retriable=retriable)


@dataclass(frozen=True, slots=True)
class _Call:
    script: Script
    keys: tuple[str, ...]
    args: tuple[str, ...]


class IocStoreSink:
    """Writes dossier std events and alerts into the IOC store; see the module docstring.

    The caller owns ``redis_client`` (``close`` leaves it open). Works with
    clients built with or without ``decode_responses``.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        dossier_topic: str = DOSSIER_TOPIC,
        alert_topic: str = ALERT_TOPIC,
        alert_stream_maxlen: int = 10_000,
        alert_channel: str = ALERT_CHANNEL,
        alert_dedup_ttl: timedelta = timedelta(days=7),
        tombstone_ttl: timedelta | None = None,
    ) -> None:
        if alert_stream_maxlen < 1:
            raise ValueError("alert_stream_maxlen must be positive")
        self._redis = redis_client
        self._dossier_topic = dossier_topic
        self._alert_topic = alert_topic
        self._maxlen = str(alert_stream_maxlen)
        self._channel = alert_channel
        # a replay older than this TTL appends its alert to the stream again;
        # keep it at least as long as the alerts topic's retention
        self._dedup_ttl_ms = str(max(1, alert_dedup_ttl // _MS))
        self._tombstone_ttl_ms = "0" if tombstone_ttl is None else str(max(1, tombstone_ttl // _MS))
        self._dossier_script = redis_client.register_script(_DOSSIER_LUA)
        self._alert_script = redis_client.register_script(_ALERT_LUA)
        self._closed = False
        self.skipped = 0  # records with nothing to route by (logged, not stored)

    # -- Sink -----------------------------------------------------------------

    def setup(self) -> None:
        try:
            self._redis.ping()
            self._load_scripts()
        except rex.RedisError as exc:
            raise _sink_error(exc, "setup") from exc

    def write(self, batch: Sequence[SinkRecord]) -> None:
        if self._closed:
            raise SinkError("ioc_store: write after close", retriable=False)
        calls: list[_Call] = []
        units: set[str] = set()
        # Plan the whole batch before sending anything: a malformed record
        # stops the batch without half of it written.
        for record in batch:
            try:
                calls.extend(self._plan(record, units))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise SinkError(
                    f"ioc_store: malformed record {record.topic}[{record.partition}]"
                    f"@{record.offset}: {type(exc).__name__}",
                    retriable=False,
                ) from exc
        if not calls:
            return
        try:
            try:
                self._execute(calls, units)
            except rex.NoScriptError:
                # Redis restarted or SCRIPT FLUSH ran: load and resend the batch,
                # which the version guards make safe.
                self._load_scripts()
                self._execute(calls, units)
        except rex.RedisError as exc:
            raise _sink_error(exc, "write") from exc

    def flush(self) -> None:
        """Nothing is buffered: ``write`` returns once Redis has applied the batch."""

    def close(self) -> None:
        self._closed = True

    # -- internals --------------------------------------------------------------

    def _load_scripts(self) -> None:
        for script in (self._dossier_script, self._alert_script):
            self._redis.script_load(script.script)

    def _execute(self, calls: Sequence[_Call], units: set[str]) -> None:
        # EVALSHA straight on the pipeline: redis-py's Script-in-pipeline path
        # sends SCRIPT EXISTS first, a second round trip on every batch.
        pipe = self._redis.pipeline(transaction=False)
        if units:
            pipe.sadd(UNITS_KEY, *sorted(units))
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        pipe.execute()

    def _plan(self, record: SinkRecord, units: set[str]) -> list[_Call]:
        value = record.value
        if record.topic == self._dossier_topic:
            return self._plan_dossier(record, units)
        if record.topic == self._alert_topic:
            return self._plan_alert(value)
        if "alert_id" in value and "rule" in value:
            return self._plan_alert(value)
        if "op" in value and "source" in value and ("after" in value or "before" in value):
            return self._plan_dossier(record, units)
        raise SinkError(
            f"ioc_store: record {record.topic}[{record.partition}]@{record.offset} "
            "is neither a dossier event nor an alert",
            retriable=False,
        )

    def _plan_dossier(self, record: SinkRecord, units: set[str]) -> list[_Call]:
        event = record.value
        op: str = event["op"]
        before: Mapping[str, Any] | None = event.get("before")
        after: Mapping[str, Any] | None = event.get("after")
        state = (before or after) if op == "d" else after
        if state is None:
            self.skipped += 1
            log.warning(
                "ioc_store: dossier event without a state to route by at %s[%d]@%d, skipped",
                record.topic,
                record.partition,
                record.offset,
            )
            return []
        vkey = _sortable(int(event["source"]["version"]))
        meta = (
            "_version",
            str(event["source"]["version"]),
            "_op",
            op,
            "_ts_ms",
            _field_text(event["ts_ms"]),
        )
        calls: list[_Call] = []
        dossier_id: str = state["dossier_id"]
        unit: str = state["receiving_unit_code"]
        if op == "d":
            calls.append(
                self._dossier_call(
                    unit, dossier_id, vkey, event, NO_CONTRIBUTION, meta, removal=True
                )
            )
        else:
            if (
                before is not None
                and before["dossier_id"] == dossier_id
                and before["receiving_unit_code"] != unit
            ):
                old = before["receiving_unit_code"]
                moved = ("_version", meta[1], "_op", "moved", "_ts_ms", meta[5])
                calls.append(
                    self._dossier_call(
                        old, dossier_id, vkey, event, NO_CONTRIBUTION, moved, removal=True
                    )
                )
            fields = [
                item
                for name in _PUBLIC_DOSSIER_FIELDS
                if state.get(name) is not None
                for item in (name, _field_text(state[name]))
            ]
            calls.append(
                self._dossier_call(
                    unit, dossier_id, vkey, event, contribution(state), (*meta, *fields)
                )
            )
        units.add(unit)
        return calls

    def _dossier_call(
        self,
        unit: str,
        dossier_id: str,
        vkey: str,
        event: Mapping[str, Any],
        c: Contribution,
        fields: tuple[str, ...],
        *,
        removal: bool = False,
    ) -> _Call:
        return _Call(
            self._dossier_script,
            (dossier_key(unit, dossier_id), kpi_key(unit), open_dossiers_key(unit)),
            (
                vkey,
                str(event["event_id"]),
                dossier_id,
                str(c.received),
                str(c.completed),
                str(c.completed_on_time),
                str(c.completed_late),
                "" if c.open_due_at is None else str(_epoch_ms(c.open_due_at)),
                self._tombstone_ttl_ms if removal else "0",
                *fields,
            ),
        )

    def _plan_alert(self, alert: Mapping[str, Any]) -> list[_Call]:
        state: str = alert["state"]
        ts_ms = _epoch_ms(alert["ts_ms"])
        public = {name: alert[name] for name in _ALERT_FIELDS}
        as_json = _field_text(
            {k: _epoch_ms(v) if isinstance(v, datetime) else v for k, v in public.items()}
        )
        stream_fields = [
            item for name in _ALERT_FIELDS for item in (name, _field_text(public[name]))
        ]
        alert_id = str(alert["alert_id"])
        return [
            _Call(
                self._alert_script,
                (ALERT_STREAM_KEY, OPEN_ALERTS_KEY, alert_seen_key(alert_id)),
                (
                    f"{state}:{ts_ms}",
                    _sortable(ts_ms) + _STATE_RANK[state],
                    alert_id,
                    as_json,
                    self._maxlen,
                    self._dedup_ttl_ms,
                    self._channel,
                    state,
                    *stream_fields,
                ),
            ),
        ]


def read_unit_kpis(redis_client: redis.Redis, now: datetime) -> list[UnitKpis]:
    """Every unit's KPIs as of ``now`` (aware), sorted by unit code.

    Units whose dossiers were all deleted are left out, as
    :func:`sinks.dossier_kpis.compute_unit_kpis` leaves them out.
    """
    # due_ms < now  <=>  due_ms < ceil(now in ms), for integer due_ms
    bound = f"({_ceil_epoch_ms(now)}"
    try:
        units = sorted(_text(u) for u in redis_client.smembers(UNITS_KEY))
        # one atomic script per unit, so counters and open set are read together
        pipe = redis_client.pipeline(transaction=False)
        for unit in units:
            pipe.eval(_READ_LUA, 2, kpi_key(unit), open_dossiers_key(unit), bound)
        rows: list[list[int]] = pipe.execute()
    except rex.RedisError as exc:
        raise _sink_error(exc, "read_unit_kpis") from exc
    result = []
    for unit, (received, completed, on_time, late, overdue) in zip(units, rows, strict=True):
        if received == 0:
            continue
        result.append(
            unit_kpis(
                unit,
                received=received,
                completed=completed,
                completed_on_time=on_time,
                completed_late=late,
                open_overdue=overdue,
            )
        )
    return result
