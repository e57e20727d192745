"""Dossiers in the IOC store: latest state per receiving unit and the unit KPIs.

Keys (the ``{unit:U}`` hash tag puts all of one unit in one Redis Cluster slot)::

    ioc:units                   SET   unit codes that ever received a dossier (own slot:
                                      added beside the scripts, SADD is idempotent)
    ioc:{unit:U}:dossier:ID     HASH  public fields + _version, _vkey, _event_id, _op,
                                      _ts_ms and its contribution (_c_received,
                                      _c_completed, _c_completed_on_time,
                                      _c_completed_late, _c_due, _c_days); after op d a
                                      tombstone (meta only, _op = d, or "moved")
    ioc:{unit:U}:kpi            HASH  received, completed, completed_on_time,
                                      completed_late (a field at 0 is removed)
    ioc:{unit:U}:kpi:daily      HASH  "YYYY-MM-DD|measure" -> count (local days; see
                                      :mod:`sinks.ioc.dossier_kpis`)
    ioc:{unit:U}:open           ZSET  open dossier ids scored by due time (ms)

Personal fields (``applicant_*``) never reach Redis: fields are copied through an
allowlist. Open overdue is not stored (a dossier becomes overdue while no one
writes); readers count the open set below ``now``. Sectors are not stored either:
a unit's sector comes from the reference data at reading time, so the per-sector
figures are sums of unit figures and no script crosses a slot.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.exceptions as rex
from redis.commands.core import Script

from sinks.base import SinkRecord
from sinks.ioc.codec import (
    LUA_BYTES_LT,
    ScriptCall,
    ceil_epoch_ms,
    epoch_ms,
    field_text,
    local_day,
    sink_error,
    sortable,
    text,
)
from sinks.ioc.dossier_kpis import (
    NO_CONTRIBUTION,
    Contribution,
    UnitDayKpis,
    UnitKpis,
    contribution,
    daily_contribution,
    kpis_from_counts,
    unit_kpis,
)

__all__ = [
    "DOSSIER_LUA",
    "UNITS_KEY",
    "daily_kpi_key",
    "dossier_key",
    "kpi_key",
    "open_dossiers_key",
    "plan_dossier",
    "read_sector_kpis",
    "read_unit_day_kpis",
    "read_unit_kpis",
    "unit_sectors",
]

log = logging.getLogger(__name__)

UNITS_KEY = "ioc:units"

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

# KEYS: dossier, kpi, open, daily.  ARGV: vkey, event_id, dossier_id, received,
# completed, on_time, late, due_ms|"", tombstone_ttl_ms ("0" = keep), daily counters
# (tab-separated), then field/value pairs.
DOSSIER_LUA = (
    LUA_BYTES_LT
    + """
local cur = redis.call('HMGET', KEYS[1], '_vkey', '_event_id', '_c_received',
  '_c_completed', '_c_completed_on_time', '_c_completed_late', '_c_due', '_c_days')
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
local function days(s, delta)
  for f in string.gmatch(s or '', '[^\\t]+') do
    if redis.call('HINCRBY', KEYS[4], f, delta) == 0 then redis.call('HDEL', KEYS[4], f) end
  end
end
days(cur[8], -1)
days(ARGV[10], 1)
if ARGV[8] == '' then
  if cur[7] and cur[7] ~= '' then redis.call('ZREM', KEYS[3], ARGV[3]) end
else
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[3])
end
-- replace, not merge: a field that became null must not linger
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_vkey', ARGV[1], '_event_id', ARGV[2],
  '_c_received', ARGV[4], '_c_completed', ARGV[5], '_c_completed_on_time', ARGV[6],
  '_c_completed_late', ARGV[7], '_c_due', ARGV[8], '_c_days', ARGV[10], unpack(ARGV, 11))
if ARGV[9] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[9]) end
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

# KEYS: daily, open.  ARGV: exclusive upper bound "(ms".  Both read in one call.
_READ_DAILY_LUA = """
return {redis.call('HGETALL', KEYS[1]),
  redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES')}
"""


def dossier_key(unit_code: str, dossier_id: str) -> str:
    # The tag is everything up to the first "}" after "{", so even a unit code
    # holding braces yields one identical tag for all of that unit's keys.
    return f"ioc:{{unit:{unit_code}}}:dossier:{dossier_id}"


def kpi_key(unit_code: str) -> str:
    return f"ioc:{{unit:{unit_code}}}:kpi"


def daily_kpi_key(unit_code: str) -> str:
    return f"ioc:{{unit:{unit_code}}}:kpi:daily"


def open_dossiers_key(unit_code: str) -> str:
    return f"ioc:{{unit:{unit_code}}}:open"


def _dossier_call(
    script: Script,
    unit: str,
    dossier_id: str,
    vkey: str,
    event_id: str,
    c: Contribution,
    days: tuple[str, ...],
    fields: tuple[str, ...],
    ttl_ms: str,
) -> ScriptCall:
    return ScriptCall(
        script,
        (
            dossier_key(unit, dossier_id),
            kpi_key(unit),
            open_dossiers_key(unit),
            daily_kpi_key(unit),
        ),
        (
            vkey,
            event_id,
            dossier_id,
            str(c.received),
            str(c.completed),
            str(c.completed_on_time),
            str(c.completed_late),
            "" if c.open_due_at is None else str(epoch_ms(c.open_due_at)),
            ttl_ms,
            "\t".join(days),
            *fields,
        ),
    )


def plan_dossier(
    script: Script, record: SinkRecord, units: set[str], tombstone_ttl_ms: str
) -> list[ScriptCall]:
    """The script calls that apply one dossier std event; adds its unit to ``units``.

    Raises ``KeyError``/``TypeError``/``ValueError`` on a malformed event.
    """
    event = record.value
    op: str = event["op"]
    before: Mapping[str, Any] | None = event.get("before")
    after: Mapping[str, Any] | None = event.get("after")
    state = (before or after) if op == "d" else after
    if state is None:
        raise ValueError(f"dossier event op={op!r} without a state to route by")
    version = int(event["source"]["version"])
    vkey = sortable(version)
    event_id = str(event["event_id"])
    meta = ("_version", str(version), "_op", op, "_ts_ms", field_text(event["ts_ms"]))
    dossier_id = str(state["dossier_id"])
    unit = str(state["receiving_unit_code"])
    calls: list[ScriptCall] = []
    if op == "d":
        calls.append(
            _dossier_call(
                script, unit, dossier_id, vkey, event_id, NO_CONTRIBUTION, (), meta,
                tombstone_ttl_ms,
            )
        )  # fmt: skip
    else:
        if (
            before is not None
            and before["dossier_id"] == dossier_id
            and before["receiving_unit_code"] != unit
        ):
            # moved to another unit: a tombstone at the same version in the old one
            old = str(before["receiving_unit_code"])
            moved = ("_version", meta[1], "_op", "moved", "_ts_ms", meta[5])
            calls.append(
                _dossier_call(
                    script, old, dossier_id, vkey, event_id, NO_CONTRIBUTION, (), moved,
                    tombstone_ttl_ms,
                )
            )  # fmt: skip
        fields = tuple(
            item
            for name in _PUBLIC_DOSSIER_FIELDS
            if state.get(name) is not None
            for item in (name, field_text(state[name]))
        )
        c = contribution(state)
        days = daily_contribution(state)
        calls.append(
            _dossier_call(script, unit, dossier_id, vkey, event_id, c, days, (*meta, *fields), "0")
        )
    units.add(unit)
    return calls


def unit_sectors() -> dict[str, str]:
    """Unit code -> sector, from the reference data (``receiving_units.csv``)."""
    from schemas.domain.reference import load_reference

    return {code: u.sector for code, u in load_reference().receiving_units.items()}


def _units(redis_client: redis.Redis) -> list[str]:
    return sorted(text(u) for u in redis_client.smembers(UNITS_KEY))


def read_unit_kpis(redis_client: redis.Redis, now: datetime) -> list[UnitKpis]:
    """Every unit's KPIs as of ``now`` (aware), sorted by unit code.

    Units whose dossiers were all deleted are left out, as
    :func:`sinks.ioc.dossier_kpis.compute_unit_kpis` leaves them out.
    """
    # due_ms < now  <=>  due_ms < ceil(now in ms), for integer due_ms
    bound = f"({ceil_epoch_ms(now)}"
    try:
        units = _units(redis_client)
        # one atomic script per unit, so counters and open set are read together
        pipe = redis_client.pipeline(transaction=False)
        for unit in units:
            pipe.eval(_READ_LUA, 2, kpi_key(unit), open_dossiers_key(unit), bound)
        rows: list[list[int]] = pipe.execute()
    except rex.RedisError as exc:
        raise sink_error(exc, "read_unit_kpis") from exc
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


def read_sector_kpis(
    redis_client: redis.Redis, now: datetime, sectors: Mapping[str, str] | None = None
) -> list[UnitKpis]:
    """Per sector (``unit_code`` holds the sector), summed from the unit KPIs."""
    by_unit = read_unit_kpis(redis_client, now)
    sector_of = unit_sectors() if sectors is None else sectors
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for k in by_unit:
        acc = sums[sector_of.get(k.unit_code, "unknown")]
        for i, n in enumerate(
            (k.received, k.completed, k.completed_on_time, k.completed_late, k.open_overdue)
        ):
            acc[i] += n
    return [kpis_from_counts(sector, a) for sector, a in sorted(sums.items())]


_MEASURES = ("received", "completed", "completed_on_time", "completed_late")


def read_unit_day_kpis(
    redis_client: redis.Redis,
    now: datetime,
    sectors: Mapping[str, str] | None = None,
    units: Sequence[str] | None = None,
) -> list[UnitDayKpis]:
    """Per unit, sector and local day, sorted by (unit, day); equals
    :func:`sinks.ioc.dossier_kpis.compute_unit_day_kpis` over the stored latest states."""
    bound = f"({ceil_epoch_ms(now)}"
    sector_of = unit_sectors() if sectors is None else sectors
    try:
        wanted = _units(redis_client) if units is None else sorted(units)
        pipe = redis_client.pipeline(transaction=False)
        for unit in wanted:
            pipe.eval(_READ_DAILY_LUA, 2, daily_kpi_key(unit), open_dossiers_key(unit), bound)
        rows: list[list[list[bytes | str]]] = pipe.execute()
    except rex.RedisError as exc:
        raise sink_error(exc, "read_unit_day_kpis") from exc
    result: list[UnitDayKpis] = []
    for unit, (flat, overdue) in zip(wanted, rows, strict=True):
        days: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for i in range(0, len(flat), 2):
            day, measure = text(flat[i]).split("|")
            days[day][_MEASURES.index(measure)] = int(flat[i + 1])
        for i in range(1, len(overdue), 2):
            ms = int(float(text(overdue[i])))
            due = datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)
            days[local_day(due)][4] += 1
        result.extend(
            UnitDayKpis(
                day=day,
                sector=sector_of.get(unit, "unknown"),
                kpis=kpis_from_counts(unit, a),
            )
            for day, a in sorted(days.items())
        )
    return result
